"""The prediction service as a real process: validation, hot swap, logging, health, shutdown.

Models are built here (a LogisticRegression on breast_cancer, a Ridge on a bike
slice) and registered on the session MLflow server under names unique to this
module, so other tests touching the real model names cannot interfere.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from polling import wait_until

from mlops.config import load_use_case
from mlops.predictionlog.predictions import read_predictions
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http

pytestmark = pytest.mark.integration
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers shared with test_scoring


def write_configs(target: Path, suffix: str) -> dict[str, str]:
    """Copies of the bundled use cases whose registered model names are unique to this run."""
    target.mkdir(parents=True, exist_ok=True)
    names = {}
    for name in ("breast_cancer", "bike_sharing"):
        raw = yaml.safe_load((PROJECT_ROOT / "configs" / f"{name}.yaml").read_text())
        raw["model_name"] = f"{raw['model_name']}_{suffix}"
        (target / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        names[name] = raw["model_name"]
    return names


def breast_cancer_frame() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    features = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    return features, data.target


def bike_frame(start: str = "2011-01-01", end: str = "2011-03-01") -> pd.DataFrame:
    frame = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
    return frame[(frame["dteday"] >= start) & (frame["dteday"] < end)].reset_index(drop=True)


def register(model_name: str, pipeline: Any, features: pd.DataFrame, alias: str | None = "champion") -> str:
    """Log `pipeline` like the training code does, register it, optionally set an alias; returns the version."""
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    mlflow.set_experiment(f"tests-{model_name}")
    signature = infer_signature(features.head(50), pipeline.predict(features.head(50)))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=features.head(2),
            registered_model_name=model_name,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
            # Without explicit requirements MLflow exports the whole uv.lock into each model.
            pip_requirements=["scikit-learn", "pandas", "numpy", "skops"],
        )
    version = str(info.registered_model_version)
    if alias:
        MlflowClient().set_registered_model_alias(model_name, alias, version)
    return version


def classifier(c: float) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features, target = breast_cancer_frame()
    prep = ColumnTransformer(
        [("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), list(features.columns))]
    )
    return Pipeline([("prep", prep), ("model", LogisticRegression(C=c, max_iter=1000))]).fit(features, target)


def regressor(use_case_file: Path) -> tuple[Any, pd.DataFrame]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    use_case = load_use_case(use_case_file)
    frame = bike_frame()
    features = frame[use_case.features.all]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), use_case.features.numeric),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                use_case.features.categorical,
            ),
        ]
    )
    return Pipeline([("prep", prep), ("model", Ridge(alpha=1.0))]).fit(features, frame["cnt"]), features


@dataclass
class Service:
    url: str
    pid: int
    log_dir: Path
    process: Any
    log_file: Path

    def stop(self) -> None:
        stop_process_group(self.pid)
        self.process.wait(timeout=30)


def start_service(
    home: Path, configs_dir: Path, log_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> Service:
    port = free_port()
    log_file = home / f"serving-{port}.log"
    cmd = [sys.executable, "-m", "mlops.serving", "--host", "127.0.0.1", "--port", str(port),
           "--configs-dir", str(configs_dir), "--log-uri", str(log_dir), "--poll-seconds", "0.3", *extra]  # fmt: skip
    import os

    process = start_process_group(cmd, log_file, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ready", 120, process, log_file)
    except Exception:
        stop_process_group(process.pid)
        raise
    return Service(url, process.pid, log_dir, process, log_file)


class RegistryProxy:
    """A TCP proxy in front of the MLflow server that can stop answering, like a registry that hangs.

    While `hanging` is set, every byte either side sends is swallowed, on new and already
    open connections alike: a client waits for its (long) request timeout, whether its
    request or only the answer was caught. `swallowed` counts the chunks that went nowhere.
    """

    def __init__(self, target: str) -> None:
        import socket

        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.hanging = threading.Event()
        self.swallowed = 0
        self._closed = threading.Event()
        self._sockets: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: Any, sink: Any) -> None:
        import socket

        try:
            while data := source.recv(65536):
                if self.hanging.is_set():
                    self.swallowed += 1
                    continue
                sink.sendall(data)
        except OSError:
            pass
        if self.hanging.is_set():
            return  # a hanging registry does not close connections either
        # One side closed (e.g. the server's keep-alive timeout): close the other too, or the
        # client would send its next request into a dead connection and wait for ever.
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        for sock in [self.server, *self._sockets]:
            sock.close()


# --------------------------------------------------------------------------- fixtures


@dataclass
class Setup:
    service: Service
    names: dict[str, str]
    bc_v1: str
    bike_v1: str
    bc_features: pd.DataFrame
    bike_features: pd.DataFrame
    bc_pipeline: Any
    bike_pipeline: Any


@pytest.fixture(scope="module")
def setup(mlflow_server: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("serving")
    configs = root / "configs"
    names = write_configs(configs, uuid.uuid4().hex[:8])
    bc_features, _ = breast_cancer_frame()
    bc_pipeline = classifier(1.0)
    bc_v1 = register(names["breast_cancer"], bc_pipeline, bc_features)
    bike_pipeline, bike_features = regressor(configs / "bike_sharing.yaml")
    bike_v1 = register(names["bike_sharing"], bike_pipeline, bike_features)
    service = start_service(root, configs, root / "log", "--log-flush-seconds", "0.2", "--max-body-bytes", "200000")
    try:
        yield Setup(service, names, bc_v1, bike_v1, bc_features, bike_features, bc_pipeline, bike_pipeline)
    finally:
        service.stop()


def bc_record(features: pd.DataFrame, i: int = 0) -> dict[str, float]:
    return {k: float(v) for k, v in features.iloc[i].items()}


def bike_record(features: pd.DataFrame, i: int = 0) -> dict[str, Any]:
    return {k: (None if pd.isna(v) else v) for k, v in features.iloc[i].items()}


# --------------------------------------------------------------------------- tests


def test_predictions_match_the_registered_model_and_are_logged(setup: Setup) -> None:
    url = setup.service.url
    rows = [bc_record(setup.bc_features, i) for i in range(5)]
    tag = uuid.uuid4().hex[:6]
    ids = [f"bc-{tag}-{i}" for i in range(5)]
    times = [f"2011-05-0{i + 1}T10:00:00" for i in range(5)]
    response = httpx.post(f"{url}/predict/breast_cancer", json={"records": rows, "ids": ids, "event_times": times})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == setup.bc_v1 and body["ids"] == ids
    assert body["predictions"] == setup.bc_pipeline.predict(setup.bc_features.head(5)).tolist()
    # A classifier answers its classes and, per record, the probabilities in their order.
    assert body["classes"] == [0, 1]
    expected_proba = setup.bc_pipeline.predict_proba(setup.bc_features.head(5))
    assert np.allclose(body["probabilities"], expected_proba, rtol=1e-9, atol=1e-12)
    assert all(sum(row) == pytest.approx(1.0) for row in body["probabilities"])

    one = httpx.post(f"{url}/predict/bike_sharing", json={"record": bike_record(setup.bike_features, 3)})
    assert one.status_code == 200, one.text
    expected = setup.bike_pipeline.predict(setup.bike_features.iloc[[3]])[0]
    assert one.json()["predictions"][0] == pytest.approx(expected)
    assert "probabilities" not in one.json() and "classes" not in one.json()  # a regressor's answer is unchanged

    def logged() -> bool:
        frame = read_predictions("breast_cancer", "2011-05-01", "2011-05-06", uri=str(setup.service.log_dir))
        return set(ids) <= set(frame["request_id"])

    wait_until(logged, what="the batch in the prediction log")
    frame = read_predictions("breast_cancer", "2011-05-01", "2011-05-06", uri=str(setup.service.log_dir))
    frame = frame[frame["request_id"].isin(ids)].sort_values("request_id")
    assert set(frame["source"]) == {"online"} and set(frame["model_version"]) == {setup.bc_v1}
    assert [t.isoformat() for t in frame["event_time"]] == times
    assert frame["prediction"].tolist() == body["predictions"] and str(frame["prediction"].dtype) == "int64"
    assert frame["mean_radius"].tolist() == [r["mean_radius"] for r in rows]
    assert np.allclose(frame[["proba__0", "proba__1"]].to_numpy(), body["probabilities"], rtol=1e-12, atol=0)
    assert set(frame["role"]) == {"champion"}


def test_a_null_is_answered_and_logged_as_null_under_the_default_impute(setup: Setup) -> None:
    """The issue's lost rows: a feature complete in training but missing in production. The pipeline imputes."""
    record = {**bc_record(setup.bc_features, 7), "worst_area": None}
    request_id = f"null-{uuid.uuid4().hex[:6]}"
    response = httpx.post(
        f"{setup.service.url}/predict/breast_cancer",
        json={"record": record, "id": request_id, "event_time": "2011-06-01T10:00:00"},
    )
    assert response.status_code == 200, response.text
    frame = setup.bc_features.iloc[[7]].copy()
    frame["worst_area"] = float("nan")
    assert response.json()["probabilities"][0] == pytest.approx(setup.bc_pipeline.predict_proba(frame)[0].tolist())

    def logged() -> pd.DataFrame:
        window = read_predictions("breast_cancer", "2011-06-01", "2011-06-02", uri=str(setup.service.log_dir))
        return window[window["request_id"] == request_id]

    wait_until(lambda: len(logged()) == 1, what="the imputed request in the log")
    row = logged().iloc[0]
    assert pd.isna(row["worst_area"]) and row["mean_radius"] == record["mean_radius"]


def _bad_requests(setup: Setup) -> list[tuple[str, bytes, int, str]]:
    good = bc_record(setup.bc_features)

    def body(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    missing = dict(good)
    del missing["mean_texture"]
    deep = b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    nested_field = json.dumps({"record": {**good, "mean_area": {"a": [[[[1]]]]}}}).encode()
    # Just under the 200 000-byte limit: nesting as deep as the body may be.
    deep_to_limit = b"[" * 99_000 + b"]" * 99_000
    # Under orjson's depth limit, so it parses: the type check must refuse it and say where.
    deep_field = body({"record": {**good, "mean_area": "DEEP"}}).replace(b'"DEEP"', b"[" * 500 + b"]" * 500)
    big = json.dumps({"records": [good] * 300}).encode()
    assert len(big) > 200_000

    return [
        ("missing field", body({"record": missing}), 422, "mean_texture"),
        ("extra field", body({"record": {**good, "colour": "red"}}), 422, "colour"),
        ("wrong type", body({"records": [good, {**good, "mean_area": "large"}]}), 422, "mean_area"),
        # A null is answered under serving.missing: impute (the default): see test_a_null_is_answered_...
        ("NaN", body({"record": {**good, "mean_radius": float("nan")}}), 422, "mean_radius"),
        ("Infinity", body({"record": {**good, "worst_radius": float("inf")}}), 422, "worst_radius"),
        (
            "overflowing number",
            body({"record": {**good, "mean_smoothness": "BIG"}}).replace(b'"BIG"', b"1e999"),
            422,
            "mean_smoothness",
        ),
        (
            "400-digit integer",
            body({"record": {**good, "mean_perimeter": "BIG"}}).replace(b'"BIG"', b"1" + b"0" * 400),
            422,
            "mean_perimeter",
        ),
        ("boolean for number", body({"record": {**good, "mean_symmetry": True}}), 422, "mean_symmetry"),
        ("object in a field", nested_field, 422, "mean_area"),
        ("records not a list", body({"records": good}), 422, "records"),
        ("record not an object", body({"records": [good, 3]}), 422, "records"),
        ("ids length mismatch", body({"records": [good], "ids": ["a", "b"]}), 422, "ids"),
        ("bad event time", body({"record": good, "event_time": "yesterday"}), 422, "event_time"),
        # A valid ISO date, but not a time the log (pandas datetime64[ns]) can hold.
        ("event time the log cannot hold", body({"record": good, "event_time": "3000-01-01"}), 422, "event_time"),
        (
            "event time with no UTC equivalent",
            body({"records": [good], "event_times": ["0001-01-01T00:00:00+01:00"]}),
            422,
            "event_times",
        ),
        ("huge integer id", body({"record": good, "id": "BIG"}).replace(b'"BIG"', b"9" * 400), 422, "id"),
        ("unknown top-level key", body({"record": good, "model": "x"}), 422, "model"),
        ("bad source", body({"record": good, "source": "batch"}), 422, "source"),
        ("malformed JSON", b'{"record": {"mean_radius": 1.0,', 400, "body"),
        ("empty body", b"", 400, "body"),
        ("deeply nested JSON", deep, 400, "body"),
        ("nesting to the size limit", deep_to_limit, 400, "body"),
        ("deeply nested field value", deep_field, 422, "mean_area"),
        ("body over the size limit", big, 413, "body"),
        ("not an object", b"[1, 2, 3]", 422, "body"),
    ]


def test_every_kind_of_bad_input_is_a_4xx_naming_the_field(setup: Setup) -> None:
    url = setup.service.url
    good = {"record": bc_record(setup.bc_features)}
    with httpx.Client(base_url=url, timeout=30) as client:
        for label, content, status, field in _bad_requests(setup):
            response = client.post(
                "/predict/breast_cancer", content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == status, f"{label}: {response.status_code} {response.text}"
            detail = response.json()["detail"]
            locations = [item["loc"] for item in detail]
            assert any(field in loc for loc in locations), f"{label}: {field!r} not named in {detail}"
            # The service keeps serving after every refusal.
            assert client.post("/predict/breast_cancer", json=good).status_code == 200, label
        unknown = client.post("/predict/no_such_use_case", json=good)
        assert unknown.status_code == 404 and "breast_cancer" in unknown.text
        assert client.get("/health").json()["status"] == "ok"


def test_predict_without_a_path_takes_the_use_case_from_the_body(setup: Setup) -> None:
    url = setup.service.url
    tag = uuid.uuid4().hex[:6]
    rows = [bike_record(setup.bike_features, i) for i in range(3)]
    ids = [f"body-{tag}-{i}" for i in range(3)]
    body = {"use_case": "bike_sharing", "records": rows, "ids": ids, "event_times": ["2011-06-01T08:00:00"] * 3}
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["use_case"] == "bike_sharing" and answer["model_version"] == setup.bike_v1
        assert answer["ids"] == ids
        assert answer["predictions"] == pytest.approx(setup.bike_pipeline.predict(setup.bike_features.head(3)).tolist())
        # The same request on the path form answers the same; `use_case` may repeat the path's.
        same = client.post("/predict/bike_sharing", json={**body, "ids": [f"{i}-again" for i in ids]})
        assert same.status_code == 200 and same.json()["predictions"] == answer["predictions"]

        # This service serves two use cases: without `use_case` the request is ambiguous.
        refusals = [
            ("/predict", {"records": rows}, "the served use cases"),
            ("/predict", {"use_case": "no_such_use_case", "records": rows}, "unknown"),
            ("/predict", {"use_case": 7, "records": rows}, "must be one of"),
            ("/predict/bike_sharing", {"use_case": "breast_cancer", "records": rows}, "the path names"),
        ]
        for path, refused, why in refusals:
            response = client.post(path, json=refused)
            assert response.status_code == 422, f"{path} {refused.get('use_case')}: {response.text}"
            (problem,) = response.json()["detail"]
            assert problem["loc"] == ["body", "use_case"], problem
            if why == "the served use cases":
                assert "bike_sharing" in problem["msg"] and "breast_cancer" in problem["msg"]
            else:
                assert why in problem["msg"], problem
        # Body validation is the same as on the path form.
        bad = client.post("/predict", json={"use_case": "bike_sharing", "record": {**rows[0], "temp": "warm"}})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "record", "temp"]
        json_header = {"content-type": "application/json"}
        assert client.post("/predict", content=b"[1]", headers=json_header).status_code == 422
        assert client.post("/predict", content=b"[1]").status_code == 415  # no Content-Type (issue 23)

    def logged() -> bool:
        frame = read_predictions("bike_sharing", "2011-06-01", "2011-06-02", uri=str(setup.service.log_dir))
        return set(ids) <= set(frame["request_id"])

    wait_until(logged, what="the /predict rows in the prediction log")
    assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_chunked_body_over_the_limit_and_too_many_records_are_a_413(setup: Setup) -> None:
    url = setup.service.url
    good = bc_record(setup.bc_features)
    payload = json.dumps({"records": [good] * 3}).encode()

    def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
        # A generator body: httpx sends it chunked, without a Content-Length to check up front.
        for begin in range(0, len(data), size):
            yield data[begin : begin + size]

    json_type = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=30) as client:
        small = client.post("/predict/breast_cancer", content=chunks(payload), headers=json_type)
        assert (
            small.request.headers.get("transfer-encoding") == "chunked"
            and "content-length" not in small.request.headers
        )
        assert small.status_code == 200 and len(small.json()["predictions"]) == 3

        big = json.dumps({"records": [good] * 300}).encode()
        assert len(big) > 200_000  # the fixture's --max-body-bytes
        refused = client.post("/predict/breast_cancer", content=chunks(big), headers=json_type)
        assert refused.status_code == 413, refused.text
        (problem,) = refused.json()["detail"]
        assert problem["loc"] == ["body"] and "200000 bytes" in problem["msg"]

        # More records than --max-records (default 10 000) in a body well under the size limit.
        many = b'{"records": [' + b",".join([b"{}"] * 10_001) + b"]}"
        assert len(many) < 200_000
        too_many = client.post("/predict/breast_cancer", content=many, headers=json_type)
        assert too_many.status_code == 413, too_many.text
        (problem,) = too_many.json()["detail"]
        assert problem["loc"] == ["body", "records"] and "10001 records exceed the limit of 10000" in problem["msg"]
        assert client.post("/predict/breast_cancer", json={"record": good}).status_code == 200


def test_models_endpoint_lists_version_alias_signature_and_run(setup: Setup) -> None:
    from mlflow import MlflowClient

    models = {m["use_case"]: m for m in httpx.get(f"{setup.service.url}/models").json()["models"]}
    assert set(models) == {"breast_cancer", "bike_sharing"}
    bike = models["bike_sharing"]
    assert bike["name"] == setup.names["bike_sharing"] and bike["version"] == setup.bike_v1
    assert bike["alias"] == "champion" and "champion" in bike["aliases"]
    assert bike["run_id"] == MlflowClient().get_model_version(bike["name"], setup.bike_v1).run_id
    # breast_cancer passed the load-time check and predicts on arrays (serving/fastpath.py); this
    # bike pipeline one-hot encodes to a sparse matrix, which the array path refuses, so it keeps
    # Pipeline.predict, and test_predictions_match_the_registered_model_and_are_logged covers both.
    assert models["breast_cancer"]["predict_path"] == "arrays"
    assert bike["predict_path"] == "pipeline"
    inputs = {c["name"]: c["type"] for c in json.loads(bike["signature"]["inputs"])}
    assert inputs["temp"] == "double" and inputs["season"] == "string"
    assert httpx.get(f"{setup.service.url}/openapi.json").json()["paths"]["/predict/{use_case}"]["post"]
    assert httpx.get(f"{setup.service.url}/docs").status_code == 200


def test_hot_swap_and_rollback_during_a_burst_fail_no_request(setup: Setup) -> None:
    from mlflow import MlflowClient

    name = setup.names["breast_cancer"]
    v2 = register(name, classifier(0.001), setup.bc_features, alias=None)
    record = {"record": bc_record(setup.bc_features, 0)}
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    tag = uuid.uuid4().hex[:6]

    def send(worker: int) -> None:
        with httpx.Client(base_url=setup.service.url, timeout=30) as client:
            i = 0
            while not stop.is_set() and i < 3000:
                try:
                    response = client.post("/predict/breast_cancer", json={**record, "id": f"swap-{tag}-{worker}-{i}"})
                    if response.status_code == 200:
                        seen.append(response.json()["model_version"])
                    else:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                i += 1

    threads = [threading.Thread(target=send, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(seen) >= 50, what="requests on v1")
        MlflowClient().set_registered_model_alias(name, "champion", v2)
        wait_until(lambda: v2 in seen[-20:] and len(seen) >= 300, timeout=60, what="the service to serve v2")
        # Rollback is the same mechanism: point the alias back.
        MlflowClient().set_registered_model_alias(name, "champion", setup.bc_v1)
        wait_until(lambda: seen[-1] == setup.bc_v1 and seen.count(setup.bc_v1) > 60, timeout=60, what="rollback")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert {setup.bc_v1, v2} <= set(seen) and len(seen) >= 300

    def both_logged() -> bool:
        frame = read_predictions("breast_cancer", None, None, uri=str(setup.service.log_dir))
        mine = frame[frame["request_id"].str.startswith(f"swap-{tag}-")]
        return len(mine) == len(seen)

    wait_until(both_logged, what="every burst request in the log")
    frame = read_predictions("breast_cancer", None, None, uri=str(setup.service.log_dir))
    mine = frame[frame["request_id"].str.startswith(f"swap-{tag}-")]
    assert set(mine["model_version"]) == {setup.bc_v1, v2}
    assert httpx.get(f"{setup.service.url}/models").json()["models"][0]["version"] in (setup.bc_v1, v2)


def test_unwritable_log_store_degrades_health_and_recovers(setup: Setup) -> None:
    url = setup.service.url
    target = setup.service.log_dir / "bike_sharing"
    aside = setup.service.log_dir / "bike_sharing.aside"
    if target.exists():
        target.rename(aside)
    target.parent.mkdir(parents=True, exist_ok=True)  # nothing logged yet when run on its own
    # A file where the use case's folder belongs: every write fails (root ignores chmod).
    target.write_text("blocked")
    tag = uuid.uuid4().hex[:6]
    ids = [f"outage-{tag}-{i}" for i in range(5)]
    try:
        for i in ids:
            response = httpx.post(
                f"{url}/predict/bike_sharing", json={"record": bike_record(setup.bike_features, 1), "id": i}
            )
            assert response.status_code == 200, response.text

        def degraded_with_all_rows_held() -> bool:
            log = httpx.get(f"{url}/health").json()
            return log["status"] == "degraded" and log["log"]["pending_rows"] >= len(ids)

        wait_until(degraded_with_all_rows_held, what="degraded health holding every row")
        health = httpx.get(f"{url}/health").json()
        assert health["log"]["failing"] and "bike_sharing" in health["log"]["last_error"]
        # Still answering while degraded.
        assert (
            httpx.post(f"{url}/predict/breast_cancer", json={"record": bc_record(setup.bc_features)}).status_code == 200
        )
    finally:
        target.unlink()
        if aside.exists():
            aside.rename(target)
    wait_until(lambda: httpx.get(f"{url}/health").json()["status"] == "ok", what="recovered health")
    health = httpx.get(f"{url}/health").json()
    assert health["log"]["pending_rows"] == 0 and health["log"]["dropped_rows"] == 0
    frame = read_predictions("bike_sharing", None, None, uri=str(setup.service.log_dir))
    assert set(ids) <= set(frame["request_id"])


def test_sigterm_flushes_buffered_predictions(setup: Setup, tmp_path: Path) -> None:
    # Flush interval of an hour: only the shutdown drain can write these rows.
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(setup.service.log_dir.parent / "configs" / "breast_cancer.yaml", configs)
    service = start_service(tmp_path, configs, tmp_path / "log", "--log-flush-seconds", "3600")
    ids = [f"term-{i}" for i in range(25)]
    try:
        # This service serves one use case, so POST /predict needs no `use_case`.
        for path, chunk in (("/predict/breast_cancer", ids[:5]), ("/predict", ids[5:])):
            rows = [bc_record(setup.bc_features, i) for i in range(len(chunk))]
            response = httpx.post(f"{service.url}{path}", json={"records": rows, "ids": chunk})
            assert response.status_code == 200, f"{path}: {response.text}"
            assert response.json()["use_case"] == "breast_cancer" and response.json()["ids"] == chunk
        assert read_predictions("breast_cancer", None, None, uri=str(service.log_dir)).empty
    finally:
        service.stop()
    assert service.process.returncode is not None
    frame = read_predictions("breast_cancer", None, None, uri=str(service.log_dir))
    assert sorted(frame["request_id"]) == sorted(ids)


def test_sigterm_flushes_the_log_while_the_registry_hangs(setup: Setup, mlflow_server: str, tmp_path: Path) -> None:
    # The alias poller is stuck inside an MLflow call that will not return for minutes (the
    # client's request timeout) when SIGTERM arrives. The log must be flushed first: waiting
    # for the poller outlasted stop_process_group's 15 s grace and the SIGKILL lost the rows.
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(setup.service.log_dir.parent / "configs" / "breast_cancer.yaml", configs)
    proxy = RegistryProxy(mlflow_server)
    service = start_service(
        tmp_path, configs, tmp_path / "log", "--log-flush-seconds", "3600", env={"MLFLOW_TRACKING_URI": proxy.url}
    )
    ids = [f"hang-{i}" for i in range(7)]
    try:
        rows = [bc_record(setup.bc_features, i) for i in range(len(ids))]
        response = httpx.post(f"{service.url}/predict/breast_cancer", json={"records": rows, "ids": ids})
        assert response.status_code == 200, response.text
        proxy.hanging.set()
        try:
            wait_until(lambda: proxy.swallowed > 0, what="the poller to wait on a registry that never answers")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; service log:\n{service.log_file.read_text()[-3000:]}") from None
        last_poll = httpx.get(f"{service.url}/health").json()["registry"]["last_poll"]
        time.sleep(1.0)  # a dozen poll intervals
        assert httpx.get(f"{service.url}/health").json()["registry"]["last_poll"] == last_poll, "poller not stuck"
        assert read_predictions("breast_cancer", None, None, uri=str(service.log_dir)).empty
    finally:
        service.stop()
        proxy.close()
    assert "log writer flushed" in service.log_file.read_text()
    frame = read_predictions("breast_cancer", None, None, uri=str(service.log_dir))
    assert sorted(frame["request_id"]) == sorted(ids)
