"""The prediction API's contract, on a real service over a real MLflow server.

- `/openapi.json` has one exact operation per served use case, built from the loaded model.
- schemathesis, driven by that document, finds no 5xx, no undocumented status, no answer off
  its schema, and no schema-valid request refused, for every bundled use case (and /labels).
- `POST /invocations` answers MLflow's four JSON formats as `mlflow models serve` does: the
  same payloads to both, answers compared; MLflow's own ScoringServerClient works unchanged.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from polling import wait_until
from test_serving import (
    PROJECT_ROOT,
    Service,
    bike_record,
    breast_cancer_frame,
    classifier,
    register,
    regressor,
    start_service,
)

from mlops.predictionlog.predictions import read_predictions
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http

pytestmark = pytest.mark.integration
USE_CASES = sorted(p.stem for p in (PROJECT_ROOT / "configs").glob("*.yaml"))
MAX_EXAMPLES = 30
"""Per operation; with the deadline below the whole fuzz run stays well under 90 s."""
DEADLINE_MS = 2000
FUZZ_SECONDS = 90


def flight_classifier(use_case_file: Path) -> tuple[Any, pd.DataFrame]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from mlops.config import load_use_case

    use_case = load_use_case(use_case_file)
    frame = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "flight_delays.csv", nrows=3000)
    features = frame[use_case.features.all]
    prep = ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), use_case.features.numeric),
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
    pipeline = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=1000))])
    return pipeline.fit(features, frame[use_case.target]), features


def imputing_regressor(use_case_file: Path) -> tuple[Any, pd.DataFrame]:
    """test_serving's Ridge with a numeric imputer, as the platform's pipelines have (serving.missing: impute)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from test_serving import bike_frame

    pipeline, features = regressor(use_case_file)
    pipeline.set_params(prep__num=Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]))
    return pipeline.fit(features, bike_frame()["cnt"]), features


@dataclass
class Contract:
    service: Service
    names: dict[str, str]
    versions: dict[str, str]
    features: dict[str, pd.DataFrame]
    root: Path


@pytest.fixture(scope="module")
def contract(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contract]:
    from mlops.features import store

    root = tmp_path_factory.mktemp("contract")
    configs = root / "configs"
    configs.mkdir()
    suffix = uuid.uuid4().hex[:8]
    names = {}
    for name in USE_CASES:
        raw = yaml.safe_load((PROJECT_ROOT / "configs" / f"{name}.yaml").read_text())
        raw["model_name"] = f"{raw['model_name']}_{suffix}"
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        names[name] = raw["model_name"]
    built: dict[str, tuple[Any, pd.DataFrame]] = {
        "breast_cancer": (classifier(1.0), breast_cancer_frame()[0]),
        "bike_sharing": imputing_regressor(configs / "bike_sharing.yaml"),
        # Its weather comes from the online store, registered below but never loaded: every hour is an
        # unknown entity, whose nulls the pipeline imputes (serving.missing: impute), so any hour is answered.
        "bike_sharing_store": imputing_regressor(configs / "bike_sharing_store.yaml"),
        "flight_delays": flight_classifier(configs / "flight_delays.yaml"),
    }
    assert set(built) == set(USE_CASES), f"a bundled config has no model in this test: {set(USE_CASES) - set(built)}"
    versions = {n: register(names[n], pipeline, features) for n, (pipeline, features) in built.items()}
    store.apply_definitions(store.FeatureRepo.default())  # the service's MLOPS_HOME is this session's
    service = start_service(root, configs, root / "log", "--log-flush-seconds", "0.2", "--max-body-bytes", "200000")
    try:
        yield Contract(service, names, versions, {n: f for n, (_, f) in built.items()}, root)
    finally:
        service.stop()


# --------------------------------------------------------------------------- the document


def test_openapi_has_an_exact_operation_per_use_case(contract: Contract) -> None:
    document = httpx.get(f"{contract.service.url}/openapi.json").json()
    schemas = document["components"]["schemas"]
    for name in USE_CASES:
        operation = document["paths"][f"/predict/{name}"]["post"]
        assert {"200", "400", "404", "413", "415", "422", "503"} <= set(operation["responses"]), name
        assert contract.versions[name] in operation["summary"]
    bike = schemas["BikeSharingRecord"]
    # Nullable under the default serving.missing: impute; categorical domains from the suite.
    assert bike["properties"]["temp"]["type"] == ["number", "null"]
    assert bike["properties"]["season"]["enum"] == ["fall", "spring", "summer", "winter", None]
    assert bike["additionalProperties"] is False and set(bike["properties"]) == set(contract.features["bike_sharing"])
    assert {"temp", "season"} <= set(bike["required"])
    flight = schemas["FlightDelaysRecord"]["properties"]
    assert flight["dep_hour"]["type"] == ["integer", "null"]  # long in the signature
    bc = schemas["BreastCancerResponse"]
    assert bc["properties"]["predictions"]["items"] == {"enum": [0, 1]}
    assert {"classes", "probabilities"} <= set(bc["required"])
    assert "probabilities" not in schemas["BikeSharingResponse"]["properties"]
    ready = document["paths"]["/ready"]["get"]["responses"]
    assert set(ready) == {"200", "503"}
    field_errors = schemas["FieldErrors"]["properties"]["detail"]["items"]["$ref"]
    assert schemas[field_errors.rsplit("/", 1)[-1]]["required"] == ["loc", "msg", "type"]
    # The example validates.
    example = document["paths"]["/predict/bike_sharing"]["post"]["requestBody"]["content"]["application/json"]
    response = httpx.post(f"{contract.service.url}/predict/bike_sharing", json=example["example"])
    assert response.status_code == 200, response.text


def test_the_document_follows_champion_to_a_version_with_another_signature(contract: Contract) -> None:
    """A new bike_sharing champion without `windspeed`: the operation drops the field, and gets it back on rollback."""
    from mlflow import MlflowClient
    from sklearn.base import clone
    from test_serving import bike_frame

    url = contract.service.url
    pipeline, features = imputing_regressor(contract.root / "configs" / "bike_sharing.yaml")
    narrow = features.drop(columns=["windspeed"])
    numeric, categorical = pipeline.named_steps["prep"].transformers[:2]
    narrow_pipeline = clone(pipeline).set_params(
        prep__transformers=[(numeric[0], numeric[1], ["temp", "atemp", "hum"]), categorical]
    )
    narrow_pipeline.fit(narrow, bike_frame()["cnt"])
    name = contract.names["bike_sharing"]
    new = register(name, narrow_pipeline, narrow, alias=None)

    def bike_operation() -> tuple[str, dict[str, Any]]:
        document = httpx.get(f"{url}/openapi.json").json()
        summary = document["paths"]["/predict/bike_sharing"]["post"]["summary"]
        return summary, document["components"]["schemas"]["BikeSharingRecord"]["properties"]

    client = MlflowClient()
    try:
        client.set_registered_model_alias(name, "champion", new)
        wait_until(lambda: "windspeed" not in bike_operation()[1], what="the schema of the new champion")
        assert f"version {new} " in bike_operation()[0]
    finally:
        client.set_registered_model_alias(name, "champion", contract.versions["bike_sharing"])
    wait_until(lambda: "windspeed" in bike_operation()[1], what="the schema of the old champion back")
    assert f"version {contract.versions['bike_sharing']} " in bike_operation()[0]


# --------------------------------------------------------------------------- bad input


def test_content_type_bodies_and_wide_records_are_clear_4xx(contract: Contract) -> None:
    url = contract.service.url
    record = bike_record(contract.features["bike_sharing"])
    body = json.dumps({"record": record}).encode()
    with httpx.Client(base_url=url, timeout=30) as client:
        for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
            for path in ("/predict/bike_sharing", "/invocations/bike_sharing", "/labels/bike_sharing"):
                response = client.post(path, content=body, headers=headers)
                assert response.status_code == 415, f"{path} {headers}: {response.status_code} {response.text}"
                assert "application/json" in response.text
        ok = client.post("/predict/bike_sharing", content=body, headers={"content-type": "application/json"})
        assert ok.status_code == 200, ok.text
        charset = {"content-type": "application/json; charset=utf-8"}
        assert client.post("/predict/bike_sharing", content=body, headers=charset).status_code == 200
        for not_an_object in (b"[1, 2]", b'"text"', b"3", b"null"):
            response = client.post("/predict/bike_sharing", content=not_an_object, headers=charset)
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == ["body"]
        # Unicode categories: answered (unknown to the encoder) and logged as sent.
        request_id = f"uni-{uuid.uuid4().hex[:6]}"
        unicode = {**record, "season": "été ☀ 春"}
        answer = client.post(
            "/predict/bike_sharing",
            json={"record": unicode, "id": request_id, "event_time": "2011-07-01T08:00:00"},
        )
        assert answer.status_code == 200, answer.text
        # Thousands of extra columns: a 422 that lists ten and counts the rest; past the size limit a 413.
        wide = client.post("/predict/bike_sharing", json={"record": {**record, **{f"c{i}": 1 for i in range(10_000)}}})
        assert wide.status_code == 422 and len(wide.content) < 5_000, wide.text[:300]
        assert len(wide.json()["detail"]) == 11 and "10000 extra fields" in wide.json()["detail"][-1]["msg"]
        wider = client.post("/predict/bike_sharing", json={"record": {**record, **{f"c{i}": 1 for i in range(30_000)}}})
        assert wider.status_code == 413, wider.text[:300]

    def logged() -> pd.DataFrame:
        frame = read_predictions("bike_sharing", "2011-07-01", "2011-07-02", uri=str(contract.service.log_dir))
        return frame[frame["request_id"] == request_id]

    wait_until(lambda: len(logged()) == 1, what="the Unicode request in the log")
    assert logged().iloc[0]["season"] == "été ☀ 春"


# --------------------------------------------------------------------------- schemathesis


def _lengths_match(case: Any) -> bool:
    """JSON Schema cannot say `ids` and `event_times` have one entry per record; the service refuses others."""
    body = case.body
    if not isinstance(body, dict) or "records" not in body:
        return True
    n = len(body["records"]) if isinstance(body["records"], list) else -1
    return all(len(body[k]) == n for k in ("ids", "event_times") if isinstance(body.get(k), list))


def _fuzz(url: str, operations: list[str], checks: list[Any], seed: int, budget: float) -> list[str]:
    """Run every operation's generated cases; the failures, one line each."""
    import hypothesis
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    seen: set[str] = set()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if label not in operations:
            continue
        seen.add(label)

        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=DEADLINE_MS,
            database=None,
            derandomize=False,
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.seed(seed)
        @hypothesis.given(case=operation.as_strategy().filter(_lengths_match))
        def run(case: Any) -> None:
            case.call_and_validate(checks=checks)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # one entry per operation; the seed replays it
            failures.append(f"{label}: {str(exc).strip()[:1500]}")
        assert time.monotonic() - started < budget, f"fuzzing took over {budget} s; seed {seed}"
    assert seen == set(operations), f"not in /openapi.json: {set(operations) - seen}"
    return failures


def test_schemathesis_finds_no_contract_violation(contract: Contract) -> None:
    """No 5xx, only documented statuses, answers on their schemas; exact operations accept valid data."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        positive_data_acceptance,
        response_schema_conformance,
        status_code_conformance,
    )

    seed = int(os.environ.get("CONTRACT_SEED", random.randrange(2**32)))
    print(f"schemathesis seed {seed}: replay with CONTRACT_SEED={seed}", file=sys.stderr)
    base = [not_a_server_error, status_code_conformance, response_schema_conformance]
    started = time.monotonic()
    exact = [f"POST /predict/{name}" for name in USE_CASES]
    failures = _fuzz(contract.service.url, exact, [*base, positive_data_acceptance], seed, FUZZ_SECONDS)
    # Generic routes: any body the schema allows for one use case may not fit another, so no acceptance check.
    generic = ["POST /predict", "POST /predict/{use_case}", "POST /labels", "POST /labels/{use_case}"]
    generic += ["POST /invocations/{use_case}", "GET /ready", "GET /health", "GET /models", "GET /ping"]
    left = FUZZ_SECONDS - (time.monotonic() - started)
    failures += _fuzz(contract.service.url, generic, base, seed, left)
    assert not failures, f"seed {seed} (CONTRACT_SEED={seed} replays):\n" + "\n\n".join(failures)


# --------------------------------------------------------------------------- MLflow's scoring protocol


def _payloads(features: pd.DataFrame) -> dict[str, dict[str, Any]]:
    frame = features.head(4)
    records = json.loads(frame.to_json(orient="records"))
    split = json.loads(frame.to_json(orient="split"))
    return {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: [r[c] for r in records] for c in frame.columns}},
    }


@pytest.fixture(scope="module")
def mlflow_serve(contract: Contract, mlflow_server: str) -> Iterator[str]:
    """`mlflow models serve --env-manager local` on the registered bike_sharing champion (as the benchmark runs it)."""
    port = free_port()
    log = contract.root / "mlflow-serve.log"
    model = f"models:/{contract.names['bike_sharing']}/{contract.versions['bike_sharing']}"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # it execs `uvicorn`
    process = start_process_group(cmd, log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", 180, process, log)
        yield url
    finally:
        stop_process_group(process.pid)
        process.wait(timeout=30)


def test_invocations_answers_every_mlflow_format_as_mlflow_models_serve(contract: Contract, mlflow_serve: str) -> None:
    ours = contract.service.url
    before = time.time()
    for name, payload in _payloads(contract.features["bike_sharing"]).items():
        theirs = httpx.post(f"{mlflow_serve}/invocations", json=payload, timeout=60)
        answer = httpx.post(f"{ours}/invocations/bike_sharing", json=payload, timeout=60)
        assert theirs.status_code == 200, f"{name}: mlflow {theirs.text}"
        assert answer.status_code == 200, f"{name}: {answer.text}"
        assert set(answer.json()) == set(theirs.json()) == {"predictions"}, name
        assert answer.json()["predictions"] == pytest.approx(theirs.json()["predictions"], rel=1e-9), name
    # Both refuse a body with no format key, with MLflow's error shape.
    theirs = httpx.post(f"{mlflow_serve}/invocations", json={"rows": []})
    answer = httpx.post(f"{ours}/invocations/bike_sharing", json={"rows": []})
    assert theirs.status_code == answer.status_code == 400
    assert {"error_code", "message"} <= set(answer.json()) and answer.json()["error_code"] == "BAD_REQUEST"
    # A field error names the field, under the format's key.
    bad = _payloads(contract.features["bike_sharing"])["dataframe_records"]
    bad["dataframe_records"][1]["temp"] = "warm"
    refused = httpx.post(f"{ours}/invocations/bike_sharing", json=bad)
    assert refused.status_code == 400 and refused.json()["detail"][0]["loc"] == ["body", "dataframe_records", 1, "temp"]

    # Every answered row is in the prediction log, source online (16 rows: 4 formats x 4 records).
    def logged() -> int:
        today = pd.Timestamp.now("UTC").tz_localize(None)
        frame = read_predictions(
            "bike_sharing",
            today.normalize(),
            today.normalize() + pd.Timedelta(days=1),
            uri=str(contract.service.log_dir),
        )
        recent = frame[frame["logged_at"] >= pd.Timestamp(before, unit="s") - pd.Timedelta(seconds=1)]
        return int((recent["source"] == "online").sum())

    wait_until(lambda: logged() >= 16, what="the invocations in the prediction log")


def test_mlflow_scoring_client_works_unchanged(contract: Contract) -> None:
    """MLflow's own ScoringServerClient (/ping, then /invocations with dump_input_data), one use case served."""
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    # /invocations without a use case needs one served; the service of every bundled use case names them.
    refused = httpx.post(f"{contract.service.url}/invocations", json={"dataframe_records": []})
    assert refused.status_code == 400 and all(n in refused.json()["message"] for n in USE_CASES), refused.text
    configs = contract.root / "configs"
    single = start_service(contract.root, configs, contract.root / "log-single", "--use-case", "bike_sharing")
    try:
        host, port = single.url.removeprefix("http://").split(":")
        client = ScoringServerClient(host, int(port))
        client.wait_server_ready(timeout=10)
        features = contract.features["bike_sharing"].head(3)
        predictions = client.invoke(features).get_predictions(predictions_format="ndarray").tolist()
        direct = httpx.post(
            f"{single.url}/predict/bike_sharing", json={"records": [bike_record(features, i) for i in range(3)]}
        )
        assert list(predictions) == pytest.approx(direct.json()["predictions"], rel=1e-12)
    finally:
        single.stop()
