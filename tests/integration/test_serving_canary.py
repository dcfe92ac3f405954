"""Canary serving on a real service: a use case with `deployment.strategy: canary` answers its step's share
of requests with `@canary`, sticky by key, says which version answered, logs those rows with role `canary`,
and takes a canary that fails or is slow off at once without failing a single client request; the step and
any breach live in the registry, so a restarted service resumes where the rollout was.

One service (breast_cancer only) on the session MLflow server; the tests move `@canary` between a good
second model, one whose predict_proba raises and one that sleeps past the time-out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from polling import wait_until
from test_serving import Service, bc_record, breast_cancer_frame, classifier, register, start_service, write_configs
from test_serving_shadow import metrics, misbehaving, value

from mlops.naming import TAG_CANARY_BREACH, TAG_CANARY_STEP
from mlops.predictionlog.predictions import read_predictions

pytestmark = pytest.mark.integration

STEPS = [0.25, 1.0]
RULES = {
    "strategy": "canary",
    "canary_steps": STEPS,
    "canary_guard_min_requests": 20,
    "canary_max_error_rate": 0.05,
    "canary_timeout_ms": 300,
    # Generous: the good canary here must never trip on a shared machine's pauses; the latency check's
    # arithmetic is proven in tests/unit/test_serving_canary.py.
    "canary_latency_slack_ms": 500,
}


@dataclass
class Setup:
    root: Path
    configs: Path
    service: Service
    model_name: str
    champion: str
    features: pd.DataFrame


def _start(root: Path, configs: Path) -> Service:
    return start_service(
        root, configs, root / "log", "--use-case", "breast_cancer", "--log-flush-seconds", "0.2",
        "--batch-window-ms", "2",
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(mlflow_server: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("canary")
    configs = root / "configs"
    names = write_configs(configs, uuid.uuid4().hex[:8])
    path = configs / "breast_cancer.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["deployment"] = RULES
    path.write_text(yaml.safe_dump(raw))
    features, _ = breast_cancer_frame()
    champion = register(names["breast_cancer"], classifier(1.0), features)
    state = Setup(root, configs, _start(root, configs), names["breast_cancer"], champion, features)
    try:
        yield state
    finally:
        state.service.stop()


def set_canary(setup: Setup, pipeline: Any, step: int = 0, *, pickled: bool = False) -> str:
    """Register `pipeline` and make it `@canary` at `step`, tags first, as the promotion step does."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    if pickled:  # a pickled one may hold classes skops refuses (the misbehaving test models)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                pipeline, name="model",
                signature=infer_signature(setup.features.head(5), pipeline.predict(setup.features.head(5))),
                input_example=setup.features.head(2), registered_model_name=setup.model_name,
                serialization_format="cloudpickle", pip_requirements=["scikit-learn", "pandas", "numpy", "cloudpickle"],
            )  # fmt: skip
        version = str(info.registered_model_version)
    else:
        version = register(setup.model_name, pipeline, setup.features, alias=None)
    client = MlflowClient()
    client.set_model_version_tag(setup.model_name, version, TAG_CANARY_STEP, str(step))
    client.set_registered_model_alias(setup.model_name, "canary", version)
    wait_for_canary(setup.service, version)
    return version


def canary_health(service: Service) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{service.url}/health").json()["canaries"]["breast_cancer"]
    return found


def wait_for_canary(service: Service, version: str | None, fraction: float | None = None) -> None:
    def serving() -> bool:
        health = canary_health(service)
        return health["version"] == version and (fraction is None or health["fraction"] == fraction)

    wait_until(serving, timeout=60, what=f"@canary {version} at {fraction}")


def post_all(setup: Setup, ids: list[str], *, key: str | None = None) -> list[httpx.Response]:
    """One request per id, eight at a time; `key`: the same X-Routing-Key on every request."""
    headers = {"X-Routing-Key": key} if key else {}
    with httpx.Client(base_url=setup.service.url, timeout=30) as client:

        def one(i: int) -> httpx.Response:
            body = {"record": bc_record(setup.features, i % 100), "id": ids[i], "event_time": "2011-08-01T09:00:00"}
            return client.post("/predict/breast_cancer", json=body, headers=headers)

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(len(ids))))


def answered_by(responses: list[httpx.Response]) -> list[tuple[str, str]]:
    failed = [r.text for r in responses if r.status_code != 200]
    assert not failed, failed
    return [(r.json()["role"], r.json()["model_version"]) for r in responses]


def test_a_canary_answers_its_share_sticky_by_key_and_says_which_version_answered(setup: Setup) -> None:
    canary = set_canary(setup, classifier(0.001), step=0)
    ids = [f"cn-share-{i}" for i in range(800)]  # fixed ids: the hash, and so the share, is the same every run
    sides = answered_by(post_all(setup, ids))
    assert set(sides) == {("champion", setup.champion), ("canary", canary)}
    share = sides.count(("canary", canary)) / len(ids)
    # 25 % of keys by construction; 800 keys give a binomial sd of 1.5 points.
    assert share == pytest.approx(STEPS[0], abs=0.05), share
    assert canary_health(setup.service)["fraction"] == STEPS[0]

    # One key, one side, on every request.
    sticky = answered_by(post_all(setup, [f"cn-sticky-{i}" for i in range(40)], key="customer-42"))
    assert len(set(sticky)) == 1

    def logged() -> pd.DataFrame:
        frame = read_predictions("breast_cancer", "2011-08-01", "2011-08-02", uri=str(setup.service.log_dir))
        return frame[frame["request_id"].isin(ids)]

    wait_until(lambda: len(logged()) == len(ids), what="every answered row in the log")
    frame = logged().set_index("request_id").loc[ids]
    # Each row logged once, under the role and version that answered it: monitoring reads these.
    assert list(zip(frame["role"], frame["model_version"].astype(str), strict=True)) == sides
    samples = metrics(setup.service)
    uc = {"use_case": "breast_cancer"}
    answered = value(samples, "mlops_serving_requests_total", **uc, model_version=canary, role="canary", status="200")
    assert answered >= sides.count(("canary", canary))
    assert value(samples, "mlops_serving_canary_fraction", **uc, model_version=canary) == STEPS[0]
    assert value(samples, "mlops_serving_canary_fallbacks_total", **uc, model_version=canary) == 0


@pytest.mark.parametrize("kind", ["raise", "sleep"])
def test_a_canary_that_fails_or_is_slow_fails_no_request_and_is_taken_off_on_record(setup: Setup, kind: str) -> None:
    from mlflow import MlflowClient

    bad = set_canary(setup, misbehaving(kind), step=0, pickled=True)
    ids = [f"cn-{kind}-{uuid.uuid4().hex[:6]}-{i}" for i in range(240)]
    sides = answered_by(post_all(setup, ids))  # every request a 200
    if kind == "raise":
        # The requests routed to the failing canary were answered by the champion.
        assert set(sides) == {("champion", setup.champion)}
    else:
        # A slow canary answers late (or, past its time-out, the champion does); each late one counts as an error.
        assert set(sides) <= {("champion", setup.champion), ("canary", bad)}

    tags = lambda: MlflowClient().get_model_version(setup.model_name, bad).tags  # noqa: E731
    wait_until(lambda: TAG_CANARY_BREACH in tags(), timeout=30, what="the breach on the version")
    breach = json.loads(tags()[TAG_CANARY_BREACH])
    assert breach["check"] == "error_rate" and "failed or took over 300 ms" in breach["reason"]
    assert breach["by"].startswith("serving ")
    health = canary_health(setup.service)
    assert health["fraction"] == 0.0 and health["breached"] is True
    samples = metrics(setup.service)
    uc = {"use_case": "breast_cancer"}
    if kind == "raise":
        assert value(samples, "mlops_serving_canary_fallbacks_total", **uc, model_version=bad) >= 20
    assert value(samples, "mlops_serving_model_events_total", **uc, role="canary", event="rollback") >= 1
    # After the breach nothing more goes to it.
    after = answered_by(post_all(setup, [f"cn-{kind}-after-{i}" for i in range(40)]))
    assert set(after) == {("champion", setup.champion)}


def test_a_restarted_service_resumes_the_canary_at_its_recorded_step_and_breach(setup: Setup) -> None:
    from mlflow import MlflowClient

    canary = set_canary(setup, classifier(0.01), step=1)
    wait_for_canary(setup.service, canary, fraction=1.0)
    setup.service.stop()
    setup.service = _start(setup.root, setup.configs)
    # The fraction comes from the version's step tag, not from the old process's memory.
    wait_for_canary(setup.service, canary, fraction=1.0)
    sides = answered_by(post_all(setup, [f"cn-restart-{i}" for i in range(30)]))
    assert set(sides) == {("canary", canary)}

    # A breach another replica recorded takes it off here too, and stays across the next restart.
    breach = {"check": "latency", "reason": "recorded by another replica", "at": "2026-12-03T12:00:00+00:00",
              "by": "serving replica-2:1"}  # fmt: skip
    MlflowClient().set_model_version_tag(setup.model_name, canary, TAG_CANARY_BREACH, json.dumps(breach))
    wait_for_canary(setup.service, canary, fraction=0.0)
    setup.service.stop()
    setup.service = _start(setup.root, setup.configs)
    wait_for_canary(setup.service, canary, fraction=0.0)
    assert set(answered_by(post_all(setup, [f"cn-breached-{i}" for i in range(20)]))) == {("champion", setup.champion)}
