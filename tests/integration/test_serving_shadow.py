"""Shadow scoring on a real service: a use case with `deployment.strategy: shadow` scores every
micro-batch with `@shadow` too, in a worker process of its own, logs it with role `shadow`, and a
shadow that raises, is slow or hangs changes no champion answer; /metrics counts all of it; a hung
worker is killed and started again, and the worker dies with the service.

One service (breast_cancer only) on the session MLflow server; the tests move `@shadow` between
a good second model, one whose predict_proba raises, one that sleeps past the time-out and one
that hangs once. The last test SIGKILLs the service.
"""

from __future__ import annotations

import os
import signal
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
from test_serving import Service, bc_record, breast_cancer_frame, classifier, register, start_service, write_configs

from mlops.predictionlog.predictions import read_predictions

pytestmark = pytest.mark.integration

TIMEOUT_MS = 200
HANG_MS = 1500
"""shadow_hang_ms: the slow shadow (0.6 s a batch, 0.4 s past its deadline) is not hung; one that sleeps for good is."""


@dataclass
class Setup:
    service: Service
    model_name: str
    champion: str
    shadow: str
    features: pd.DataFrame
    champion_pipeline: Any
    shadow_pipeline: Any


@pytest.fixture(scope="module")
def setup(mlflow_server: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("shadow")
    configs = root / "configs"
    names = write_configs(configs, uuid.uuid4().hex[:8])
    path = configs / "breast_cancer.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["deployment"] = {"strategy": "shadow", "shadow_timeout_ms": TIMEOUT_MS, "shadow_hang_ms": HANG_MS}
    path.write_text(yaml.safe_dump(raw))
    features, _ = breast_cancer_frame()
    champion_pipeline, shadow_pipeline = classifier(1.0), classifier(0.001)
    champion = register(names["breast_cancer"], champion_pipeline, features)
    shadow = register(names["breast_cancer"], shadow_pipeline, features, alias="shadow")
    service = start_service(
        root, configs, root / "log", "--use-case", "breast_cancer", "--log-flush-seconds", "0.2",
        "--batch-window-ms", "2",
    )  # fmt: skip
    try:
        wait_for_shadow(service, shadow)
        yield Setup(service, names["breast_cancer"], champion, shadow, features, champion_pipeline, shadow_pipeline)
    finally:
        service.stop()


def shadow_health(service: Service) -> dict[str, Any]:
    block: dict[str, Any] = httpx.get(f"{service.url}/health").json()["shadows"]["breast_cancer"]
    return block


def wait_for_shadow(service: Service, version: str | None) -> None:
    """Until the service follows @shadow = `version` and its shadow worker process has loaded it too."""

    def shadowing() -> bool:
        block = shadow_health(service)
        return bool(block["version"] == version and block["worker"]["version"] == version)

    wait_until(shadowing, timeout=120, what=f"@shadow {version} loaded by the service and its shadow worker")


def set_shadow(setup: Setup, pipeline: Any, *, pickled: bool = False) -> str:
    """Register `pipeline` and point @shadow at it; a pickled one may hold classes skops refuses."""
    if not pickled:
        return register(setup.model_name, pipeline, setup.features, alias="shadow")
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(setup.features.head(5), pipeline.predict(setup.features.head(5))),
            input_example=setup.features.head(2),
            registered_model_name=setup.model_name,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "pandas", "numpy", "cloudpickle"],
        )
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(setup.model_name, "shadow", version)
    return version


def misbehaving(kind: str, flag: str = "") -> Any:
    """The champion's kind of pipeline whose final step raises, or sleeps 0.6 s, in predict_proba; or
    (`hang`) sleeps for good on the first batch after the file `flag` appears, removing it (a hang that
    a restart clears, like a deadlock).

    Defined inside a function so that cloudpickle stores the class by value: the service
    process can load it without this test module.
    """
    from sklearn.linear_model import LogisticRegression

    class Misbehaving(LogisticRegression):
        def predict_proba(self, X: Any) -> Any:
            if kind == "raise":
                raise RuntimeError("a shadow that fails on every batch")
            if kind == "hang":
                if os.path.exists(flag):
                    os.remove(flag)
                    time.sleep(3600)
            else:
                time.sleep(0.6)
            return super().predict_proba(X)

    pipeline = classifier(0.5)
    fitted = pipeline.steps[-1][1]
    model = Misbehaving(C=0.5, max_iter=1000)
    model.coef_, model.intercept_, model.classes_ = fitted.coef_, fitted.intercept_, fitted.classes_
    model.n_features_in_ = fitted.n_features_in_
    pipeline.steps[-1] = ("model", model)
    return pipeline


def metrics(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{service.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def post_all(setup: Setup, ids: list[str], rows: list[int], event_time: str) -> list[httpx.Response]:
    """One request per row, eight at a time (so micro-batches hold several requests)."""
    from concurrent.futures import ThreadPoolExecutor

    with httpx.Client(base_url=setup.service.url, timeout=30) as client:

        def one(i: int) -> httpx.Response:
            record = bc_record(setup.features, rows[i])
            body = {"record": record, "id": ids[i], "event_time": event_time}
            return client.post("/predict/breast_cancer", json=body)

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(len(ids))))


def logged(setup: Setup, day: str, ids: list[str]) -> pd.DataFrame:
    end = (pd.Timestamp(day) + pd.Timedelta(days=1)).date().isoformat()
    frame = read_predictions("breast_cancer", day, end, uri=str(setup.service.log_dir), with_labels=False)
    return frame[frame["request_id"].isin(ids)]


def assert_champion_answers(setup: Setup, responses: list[httpx.Response], rows: list[int]) -> None:
    assert [r.status_code for r in responses] == [200] * len(rows), [r.text for r in responses if r.status_code != 200]
    bodies = [r.json() for r in responses]
    assert {(b["model_version"], b["role"]) for b in bodies} == {(setup.champion, "champion")}
    expected = setup.champion_pipeline.predict_proba(setup.features.iloc[rows])
    assert np.allclose([b["probabilities"][0] for b in bodies], expected, rtol=1e-9, atol=1e-12)


def test_the_shadow_scores_the_same_requests_and_is_logged_beside_the_champion(setup: Setup) -> None:
    tag = uuid.uuid4().hex[:6]
    rows = list(range(24))
    ids = [f"sh-{tag}-{i}" for i in rows]
    responses = post_all(setup, ids, rows, "2011-07-01T09:00:00")
    assert_champion_answers(setup, responses, rows)

    wait_until(lambda: len(logged(setup, "2011-07-01", ids)) == 2 * len(ids), what="both roles in the log")
    frame = logged(setup, "2011-07-01", ids)
    champion = frame[frame["role"] == "champion"].set_index("request_id").loc[ids]
    shadow = frame[frame["role"] == "shadow"].set_index("request_id").loc[ids]
    assert set(champion["model_version"]) == {setup.champion} and set(shadow["model_version"]) == {setup.shadow}
    assert (shadow["event_time"] == champion["event_time"]).all()
    assert (shadow["mean_radius"] == champion["mean_radius"]).all() and set(shadow["source"]) == {"online"}
    shadow_proba = setup.shadow_pipeline.predict_proba(setup.features.iloc[rows])
    assert np.allclose(shadow[["proba__0", "proba__1"]].to_numpy(), shadow_proba, rtol=1e-9, atol=1e-12)
    # A different model: its answers differ from the champion's, which the client got.
    assert not np.allclose(shadow_proba, champion[["proba__0", "proba__1"]].to_numpy())

    samples = metrics(setup.service)
    requests = "mlops_serving_requests_total"
    uc = {"use_case": "breast_cancer"}
    assert value(samples, requests, **uc, model_version=setup.champion, role="champion", status="200") >= len(ids)
    assert value(samples, requests, **uc, model_version=setup.shadow, role="shadow", status="ok") >= len(ids)
    latency = "mlops_serving_request_duration_seconds_count"
    assert value(samples, latency, **uc, model_version=setup.champion, role="champion") >= len(ids)
    assert value(samples, "mlops_serving_predict_duration_seconds_count", **uc, model_version=setup.shadow,
                 role="shadow") >= 1  # fmt: skip
    # The shadow's rows are counted by its worker's log writer, which reports within a second of writing them.
    wait_until(lambda: value(metrics(setup.service), "mlops_serving_log_written_rows_total") >= 2 * len(ids),
               timeout=10, what="both roles' rows counted in /metrics")  # fmt: skip
    assert value(samples, "mlops_serving_model_events_total", **uc, role="shadow", event="load") >= 1
    info = {"role": "shadow", "model_name": setup.model_name, "model_version": setup.shadow}
    assert value(samples, "mlops_serving_model_info", **uc, **info) == 1
    assert value(samples, "mlops_serving_shadow_failures_total", **uc, model_version=setup.shadow) == 0


def test_a_shadow_that_raises_changes_no_answer_and_is_counted(setup: Setup) -> None:
    broken = set_shadow(setup, misbehaving("raise"), pickled=True)
    wait_for_shadow(setup.service, broken)
    tag = uuid.uuid4().hex[:6]
    rows = list(range(30, 50))
    ids = [f"sh-broken-{tag}-{i}" for i in rows]
    assert_champion_answers(setup, post_all(setup, ids, rows, "2011-07-03T09:00:00"), rows)

    failures = "mlops_serving_shadow_failures_total"
    wait_until(lambda: value(metrics(setup.service), failures, use_case="breast_cancer", model_version=broken) >= 1,
               what="the shadow's failures in /metrics")  # fmt: skip
    wait_until(lambda: len(logged(setup, "2011-07-03", ids)) == len(ids), what="the champion's rows")
    time.sleep(0.5)  # a flush interval and more: no shadow rows arrive late
    assert set(logged(setup, "2011-07-03", ids)["role"]) == {"champion"}


def test_a_slow_shadow_delays_no_answer_and_its_time_outs_are_counted(setup: Setup) -> None:
    slow = set_shadow(setup, misbehaving("sleep"), pickled=True)
    wait_for_shadow(setup.service, slow)
    tag = uuid.uuid4().hex[:6]
    rows = list(range(60, 100))
    ids = [f"sh-slow-{tag}-{i}" for i in rows]
    started = time.monotonic()
    responses = post_all(setup, ids, rows, "2011-07-05T09:00:00")
    # 40 requests behind a shadow that sleeps 0.6 s per batch: a shadow on the path would take 3 s and more.
    assert time.monotonic() - started < 2.0
    assert_champion_answers(setup, responses, rows)

    def counted() -> bool:
        samples = metrics(setup.service)
        late = value(samples, "mlops_serving_shadow_timeouts_total", use_case="breast_cancer", model_version=slow)
        dropped = value(samples, "mlops_serving_shadow_dropped_batches_total", use_case="breast_cancer")
        return late >= 1 and late + dropped >= 2

    wait_until(counted, what="the slow shadow's time-outs in /metrics")
    time.sleep(1.0)  # the batch in progress returns; an abandoned result is not logged
    assert set(logged(setup, "2011-07-05", ids)["role"]) == {"champion"}


def test_removing_the_shadow_alias_stops_shadowing(setup: Setup) -> None:
    from mlflow import MlflowClient

    MlflowClient().delete_registered_model_alias(setup.model_name, "shadow")
    wait_for_shadow(setup.service, None)
    samples = metrics(setup.service)
    assert value(samples, "mlops_serving_model_events_total", use_case="breast_cancer", role="shadow",
                 event="drop") >= 1  # fmt: skip
    models = httpx.get(f"{setup.service.url}/models").json()["models"]
    assert [(m["strategy"], m["shadow"]) for m in models] == [("shadow", None)]
    ids = [f"sh-gone-{uuid.uuid4().hex[:6]}"]
    assert_champion_answers(setup, post_all(setup, ids, [5], "2011-07-07T09:00:00"), [5])


def test_a_hung_shadow_worker_is_killed_and_the_next_one_shadows_again(setup: Setup, tmp_path: Path) -> None:
    flag = tmp_path / "hang"
    hanging = set_shadow(setup, misbehaving("hang", str(flag)), pickled=True)
    wait_for_shadow(setup.service, hanging)
    hung_pid = shadow_health(setup.service)["worker"]["pid"]
    restarts = value(metrics(setup.service), "mlops_serving_shadow_restarts_total", use_case="breast_cancer",
                     reason="hung")  # fmt: skip
    flag.touch()  # the worker's next batch hangs for good
    tag = uuid.uuid4().hex[:6]
    rows = list(range(100, 116))
    ids = [f"sh-hung-{tag}-{i}" for i in rows]
    assert_champion_answers(setup, post_all(setup, ids, rows, "2011-07-09T09:00:00"), rows)
    wait_until(lambda: not flag.exists(), what="the shadow hanging")

    def restarted() -> bool:
        samples = metrics(setup.service)
        return value(samples, "mlops_serving_shadow_restarts_total", use_case="breast_cancer", reason="hung") > restarts

    # Killed HANG_MS after its deadline, a new worker started and loaded the same @shadow, with no service restart.
    wait_until(restarted, timeout=30, what="the hung shadow worker killed")
    wait_for_shadow(setup.service, hanging)
    assert shadow_health(setup.service)["worker"]["pid"] != hung_pid
    later = [f"sh-after-{tag}-{i}" for i in rows]
    assert_champion_answers(setup, post_all(setup, later, rows, "2011-07-09T10:00:00"), rows)
    wait_until(lambda: len(logged(setup, "2011-07-09", later)) == 2 * len(later), what="shadowed again")
    assert set(logged(setup, "2011-07-09", later)["role"]) == {"champion", "shadow"}
    hung_batches = logged(setup, "2011-07-09", ids)
    assert (hung_batches["role"] == "champion").sum() == len(ids)


def test_the_shadow_worker_dies_with_the_service(setup: Setup) -> None:
    """Last in the module: SIGKILLs the service (no shutdown code runs); its shadow worker must not live on."""
    worker = shadow_health(setup.service)["worker"]["pid"]
    os.kill(worker, 0)
    os.kill(setup.service.pid, signal.SIGKILL)
    setup.service.process.wait(timeout=30)

    def gone() -> bool:
        try:
            state = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z"

    wait_until(gone, timeout=15, what="the shadow worker gone with its service")
