"""The shadow and canary rollouts under `dag.test()`, against a real MLflow server and the real prediction log.

A champion is trained on Jan–Feb 2011 bike hours; under `deployment.strategy: shadow`
the first one is promoted directly (there is no live traffic to compare on without a
champion), and the next candidates that pass the gate become `@shadow`. Each test logs
the same requests for both roles through `mlops.predictionlog` (champion and shadow rows,
then the labels), runs `rollout_<use case>` and reads the registry:
- a better shadow is promoted: `@champion` moves, `@previous` keeps the old one, `@shadow`
  is gone, the evidence is on the version; while it was in progress a second passing
  candidate was kept as `@challenger` with the reason;
- a worse shadow is rejected: `@challenger` with the evidence, `@champion` unchanged;
- with no `@shadow` the run skips;
- a canary (its own model name): a worse one is rolled back on labels (unpaired: each request
  answered by one side), alerted, and a second rollout refused meanwhile; one moves a step on
  after enough requests, then a better one is promoted at the last step; a breach the service
  recorded becomes the rollback on record.
The log's prediction values are built here, so the test decides which side is better; the
service that scores the shadow is tested with the service.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow_xcom import task_xcom
from alert_sink import AlertSink, alert_sink

from mlops.config import Deployment, FileSource, UseCase, find_use_case

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ge_dir")]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RAW = PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv"
REQUESTS = 300


@pytest.fixture(scope="module")
def bike(mlflow_server: str, airflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """bike_sharing under the shadow strategy with a champion; yields it and its candidate.

    `dag.test()` runs a DAG the DAG folder also defines, so the DAG files read a configs
    folder where bike_sharing rolls out in shadow, and the use case keeps its name; a model
    name and a prediction log of its own keep the session's other bike_sharing tests apart.
    """
    import pandas as pd
    import yaml

    from mlops.data import ingestion
    from mlops.evaluation import champion
    from mlops.promotion import decisions
    from mlops.training import candidates as training_candidates
    from mlops.training import runs as training_runs

    root = tmp_path_factory.mktemp("rollout")
    configs = root / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", configs)
    raw = yaml.safe_load((configs / "bike_sharing.yaml").read_text())
    raw["deployment"] = {"strategy": "shadow", "min_labeled_rows": 200, "deadline_hours": 72}
    (configs / "bike_sharing.yaml").write_text(yaml.safe_dump(raw))
    source = root / "bike_sharing_hourly.csv"
    pd.read_csv(RAW).to_csv(source, index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_CONFIGS_DIR", str(configs))
        mp.setenv("MLOPS_PREDICTION_LOG_URI", str(root / "log"))
        base = find_use_case("bike_sharing")
        use_case = base.model_copy(
            update={
                "model_name": "bike_sharing_rollout_test",
                "source": FileSource(path=str(source)),
                "candidates": [base.candidates[0].model_copy(update={"params": {"alpha": [1.0]}})],
            }
        )
        assert use_case.deployment == Deployment(strategy="shadow", min_labeled_rows=200, deadline_hours=72)
        snapshot = ingestion.ingest_snapshot(use_case, run_id="rollout_fixture", as_of="2011-03-01")
        lineage = {"snapshot_path": snapshot.path, "dvc_md5": snapshot.md5, "reason": "fixture"}
        parent = training_runs.start_parent_run(use_case, "fixture", "rollout_fixture", lineage)
        spec = training_candidates.expand_candidates(use_case)[0]
        result = training_runs.train_and_log_candidate(use_case, spec.to_dict(), snapshot.path, parent, lineage)
        decision = champion.evaluate_against_champion(use_case, result, snapshot.path, parent)
        version = decisions.register_candidate(use_case, result, "fixture/rollout-champion")
        promotion = decisions.apply_decision(use_case, version, decision, "fixture/rollout-champion")
        assert promotion.action == "promoted", promotion  # no champion yet: nothing to shadow
        yield {"use_case": use_case, "candidate": result}


def _passing_candidate(bike: dict[str, Any], key: str) -> Any:
    """A new version that passed the gate, its decision applied as the training DAG's promote step does."""
    from mlops.evaluation.gate import GateDecision
    from mlops.mlflow import registry
    from mlops.promotion import decisions

    use_case = bike["use_case"]
    version = decisions.register_candidate(use_case, bike["candidate"], key)
    champion = registry.alias_version(use_case.model_name, "champion")
    gate = GateDecision(True, ["rmse equals the champion"], {"rmse": 50.0}, champion, {"rmse": 50.0}, "rmse")
    return decisions.apply_decision(use_case, version, gate, key)


def _log_traffic(use_case: UseCase, champion: str, shadow: str, champion_noise: float, shadow_noise: float) -> None:
    """REQUESTS requests answered by the champion and scored by the shadow after @shadow was set, then labelled."""
    import numpy as np

    from mlops.mlflow import registry
    from mlops.naming import TAG_SHADOW_AT
    from mlops.predictionlog.frames import PredictionBatch
    from mlops.predictionlog.labels import write_labels
    from mlops.predictionlog.predictions import append_predictions

    since = datetime.fromisoformat(registry.version_tags(use_case.model_name, shadow)[TAG_SHADOW_AT])
    since = since.replace(tzinfo=None)
    rng = np.random.default_rng(int(shadow))
    truth = rng.gamma(2.0, 90.0, REQUESTS).round()
    ids = [f"v{shadow}-{i}" for i in range(REQUESTS)]
    times = [since + timedelta(seconds=10 + i) for i in range(REQUESTS)]
    hours = [t.hour for t in times]
    batches = [
        PredictionBatch(use_case.name, use_case.model_name, version, "online", ids, times,
                        list(truth + rng.normal(0, noise, REQUESTS)), {"hr": hours}, role=role)
        for role, version, noise in (("champion", champion, champion_noise), ("shadow", shadow, shadow_noise))
    ]  # fmt: skip
    assert append_predictions(use_case, batches) == 2 * REQUESTS
    assert write_labels(use_case, ids, truth.tolist()).written == REQUESTS


def _aliases(use_case: UseCase) -> dict[str, str | None]:
    from mlops.mlflow import registry

    return {a: registry.alias_version(use_case.model_name, a) for a in ("champion", "previous", "shadow", "challenger")}


def test_a_better_shadow_is_promoted_with_its_evidence(bike: dict[str, Any]) -> None:
    from mlops.mlflow import registry
    from mlops.naming import TAG_REJECTION_REASON
    from mlops.orchestration.rollout import build_rollout_dag

    use_case = bike["use_case"]
    old = _aliases(use_case)["champion"]
    started = _passing_candidate(bike, "fixture/better-shadow")
    assert started.action == "shadow" and _aliases(use_case)["shadow"] == started.version
    # One rollout at a time: the next passing candidate waits as @challenger, and says why.
    refused = _passing_candidate(bike, "fixture/second-candidate")
    assert refused.action == "challenger" and _aliases(use_case)["shadow"] == started.version
    reason = registry.version_tags(use_case.model_name, refused.version)[TAG_REJECTION_REASON]
    assert f"a rollout of v{started.version} (@shadow) is in progress; two rollouts for one use case cannot" in reason

    _log_traffic(use_case, old, started.version, champion_noise=60, shadow_noise=25)
    dag = build_rollout_dag(use_case)
    dag_run = dag.test()
    assert str(dag_run.state) == "success"
    result = task_xcom(dag.dag_id, "apply_rollout", dag_run.run_id)
    assert result["action"] == "promoted", result["reasons"]
    aliases = _aliases(use_case)
    assert aliases["champion"] == started.version and aliases["previous"] == old and aliases["shadow"] is None
    tags = registry.version_tags(use_case.model_name, started.version)
    assert tags["mlops.rollout.decision"] == "promote" and tags["mlops.rollout.rows"] == str(REQUESTS)
    assert float(tags["mlops.rollout.candidate_metric"]) < float(tags["mlops.rollout.champion_metric"])
    assert tags["mlops.rollout.interval"].endswith("at 95%") and tags["mlops.rollout.champion_version"] == old
    assert tags["mlops.promoted_by"] == f"{dag.dag_id}/{dag_run.run_id}" and tags["mlops.replaced"] == old
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["publish_champion"] == "success"  # the champion Asset event, as after a promotion


def test_a_worse_shadow_is_rejected_and_kept_as_challenger(bike: dict[str, Any]) -> None:
    from mlops.mlflow import registry
    from mlops.orchestration.rollout import build_rollout_dag

    use_case = bike["use_case"]
    champion = _aliases(use_case)["champion"]
    started = _passing_candidate(bike, "fixture/worse-shadow")
    assert started.action == "shadow"
    _log_traffic(use_case, champion, started.version, champion_noise=25, shadow_noise=60)
    dag = build_rollout_dag(use_case)
    dag_run = dag.test()
    assert str(dag_run.state) == "success"
    result = task_xcom(dag.dag_id, "apply_rollout", dag_run.run_id)
    assert result["action"] == "rejected", result["reasons"]
    aliases = _aliases(use_case)
    assert aliases["champion"] == champion and aliases["challenger"] == started.version and aliases["shadow"] is None
    tags = registry.version_tags(use_case.model_name, started.version)
    assert tags["mlops.rollout.decision"] == "reject" and "worse than the champion" in tags["mlops.rollout.reasons"]
    assert tags["mlops.rejection_reason"].startswith("rollout rejected: ")
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["publish_champion"] == "skipped"


def test_no_shadow_no_rollout(bike: dict[str, Any]) -> None:
    from mlops.orchestration.rollout import build_rollout_dag

    dag_run = build_rollout_dag(bike["use_case"]).test()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["find_rollout"] == "skipped" and states["apply_rollout"] == "skipped", states


# --------------------------------------------------------------------------- canary

CANARY_RULES = Deployment(strategy="canary", canary_steps=[0.25, 1.0], canary_min_requests=100,
                          min_labeled_rows=100, deadline_hours=72)  # fmt: skip
CANARY_REQUESTS = 150


@pytest.fixture(scope="module")
def canary_bike(bike: dict[str, Any]) -> dict[str, Any]:
    """The same use case under the canary strategy, with a model name (and so a champion) of its own."""
    use_case = bike["use_case"].model_copy(
        update={"model_name": "bike_sharing_canary_test", "deployment": CANARY_RULES}
    )
    canary = {"use_case": use_case, "candidate": bike["candidate"]}
    first = _passing_candidate(canary, "fixture/canary-champion")
    assert first.action == "promoted", first  # no champion yet: nothing to canary beside
    return canary


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[AlertSink]:
    with alert_sink() as running:
        monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", running.url)
        yield running


def _log_canary_traffic(
    use_case: UseCase, champion: str, canary: str, *, champion_noise: float, canary_noise: float, labelled: bool = True
) -> None:
    """CANARY_REQUESTS requests answered by each side (each request by one side only), then labelled."""
    import numpy as np

    from mlops.predictionlog.frames import PredictionBatch
    from mlops.predictionlog.labels import write_labels
    from mlops.predictionlog.predictions import append_predictions

    rng = np.random.default_rng(int(canary) * 7 + int(labelled))
    now = datetime.now().replace(microsecond=0)
    batches, ids, truths = [], [], []
    for role, version, noise in (("champion", champion, champion_noise), ("canary", canary, canary_noise)):
        truth = rng.gamma(2.0, 90.0, CANARY_REQUESTS).round()
        side = [f"c{canary}-{role}-{labelled}-{rng.integers(1 << 30)}-{i}" for i in range(CANARY_REQUESTS)]
        times = [now + timedelta(seconds=i) for i in range(CANARY_REQUESTS)]
        batches.append(PredictionBatch(use_case.name, use_case.model_name, version, "online", side, times,
                                       list(truth + rng.normal(0, noise, CANARY_REQUESTS)),
                                       {"hr": [t.hour for t in times]}, role=role))  # fmt: skip
        ids += side
        truths += truth.tolist()
    assert append_predictions(use_case, batches) == 2 * CANARY_REQUESTS
    if labelled:
        assert write_labels(use_case, ids, truths).written == 2 * CANARY_REQUESTS


def _canary_aliases(use_case: UseCase) -> dict[str, str | None]:
    from mlops.mlflow import registry

    return {a: registry.alias_version(use_case.model_name, a) for a in ("champion", "previous", "canary", "challenger")}


def _run_rollout(use_case: UseCase) -> tuple[Any, dict[str, Any]]:
    from mlops.orchestration.rollout import build_rollout_dag

    dag = build_rollout_dag(use_case)
    dag_run = dag.test()
    assert str(dag_run.state) == "success"
    return dag_run, task_xcom(dag.dag_id, "apply_rollout", dag_run.run_id)


def test_a_worse_canary_is_rolled_back_on_labels_alerted_and_a_second_rollout_refused(
    canary_bike: dict[str, Any], sink: AlertSink
) -> None:
    from mlops.mlflow import registry
    from mlops.naming import TAG_CANARY_STEP, TAG_REJECTION_REASON

    use_case = canary_bike["use_case"]
    champion = _canary_aliases(use_case)["champion"]
    started = _passing_candidate(canary_bike, "fixture/worse-canary")
    assert started.action == "canary" and _canary_aliases(use_case)["canary"] == started.version
    assert registry.version_tags(use_case.model_name, started.version)[TAG_CANARY_STEP] == "0"
    # One rollout at a time, whatever its strategy.
    refused = _passing_candidate(canary_bike, "fixture/second-canary")
    assert refused.action == "challenger"
    reason = registry.version_tags(use_case.model_name, refused.version)[TAG_REJECTION_REASON]
    assert f"a rollout of v{started.version} (@canary) is in progress" in reason

    _log_canary_traffic(use_case, champion, started.version, champion_noise=25, canary_noise=90)
    dag_run, result = _run_rollout(use_case)
    assert result["action"] == "rejected", result["reasons"]
    assert "rolled back at 25%" in result["reasons"][0] and "worse than the champion" in result["reasons"][0]
    aliases = _canary_aliases(use_case)
    assert aliases["champion"] == champion and aliases["canary"] is None and aliases["challenger"] == started.version
    tags = registry.version_tags(use_case.model_name, started.version)
    assert tags["mlops.rollout.decision"] == "reject" and tags["mlops.rollout.rows"] == str(CANARY_REQUESTS)
    progress = json.loads(tags["mlops.rollout.progress"])
    assert progress["strategy"] == "canary" and progress["fraction"] == 0.25 and not progress["evidence"]["paired"]
    alert = sink.wait_for(f"bike_sharing: canary bike_sharing_canary_test v{started.version} rolled back on live "
                          "evidence")  # fmt: skip
    assert alert and "nobody has to act" in alert[0]["body"]
    assert {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}["publish_champion"] == "skipped"


def test_a_canary_moves_a_step_on_then_a_better_one_is_promoted_at_the_last_step(canary_bike: dict[str, Any]) -> None:
    from mlops.mlflow import registry
    from mlops.naming import TAG_CANARY_STEP

    use_case = canary_bike["use_case"]
    champion = _canary_aliases(use_case)["champion"]
    assert champion is not None
    started = _passing_candidate(canary_bike, "fixture/better-canary")
    assert started.action == "canary", started

    _log_canary_traffic(use_case, champion, started.version, champion_noise=60, canary_noise=20, labelled=False)
    _, result = _run_rollout(use_case)
    assert result["action"] == "advanced", result["reasons"]
    assert registry.version_tags(use_case.model_name, started.version)[TAG_CANARY_STEP] == "1"
    # What monitoring shows beside the champion's window: the same judgement, read only.
    from mlops.rollout.apply import live_comparison

    before = registry.version_tags(use_case.model_name, started.version)
    live = live_comparison(use_case, datetime.now())
    assert live is not None and (live["strategy"], live["step"], live["fraction"]) == ("canary", 1, 1.0)
    assert live["evidence"]["candidate_rows"] == CANARY_REQUESTS and live["action"] == "wait"
    assert registry.version_tags(use_case.model_name, started.version) == before

    _log_canary_traffic(use_case, champion, started.version, champion_noise=60, canary_noise=20)
    dag_run, result = _run_rollout(use_case)
    assert result["action"] == "promoted", result["reasons"]
    aliases = _canary_aliases(use_case)
    assert aliases["champion"] == started.version and aliases["previous"] == champion and aliases["canary"] is None
    assert {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}["publish_champion"] == "success"


def test_a_breach_the_service_recorded_becomes_the_rollback_on_record(canary_bike: dict[str, Any]) -> None:
    from mlops.mlflow import registry
    from mlops.naming import TAG_CANARY_BREACH

    use_case = canary_bike["use_case"]
    champion = _canary_aliases(use_case)["champion"]
    started = _passing_candidate(canary_bike, "fixture/breached-canary")
    assert started.action == "canary", started
    breach = {"check": "error_rate", "reason": "12 of its last 50 requests failed", "at": "2026-12-03T12:00:00+00:00",
              "by": "serving host:1"}  # fmt: skip
    registry.set_version_tags(use_case.model_name, started.version, {TAG_CANARY_BREACH: json.dumps(breach)})
    _, result = _run_rollout(use_case)
    assert result["action"] == "rejected"
    assert "breach its guard: 12 of its last 50 requests failed (seen by serving host:1" in result["reasons"][0]
    assert _canary_aliases(use_case) == {**_canary_aliases(use_case), "champion": champion, "canary": None}
