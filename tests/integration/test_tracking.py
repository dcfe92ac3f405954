"""Train -> evaluate -> register -> promote against a real MLflow server, on a small bike slice.

One DAG run ("run-1") trains two tiny candidates and promotes the first model;
later tests re-run it, try a worse model and a changed schema against that champion.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from mlops.config import UseCase, find_use_case
from mlops.evaluation import champion as evaluation
from mlops.evaluation.gate import GateDecision
from mlops.mlflow import registry
from mlops.promotion import decisions
from mlops.promotion.decisions import PromotionResult
from mlops.training import runs as training_runs
from mlops.training.candidates import expand_candidates
from mlops.training.results import CandidateResult

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "training_it_bike"
MODEL = "it_bike_flow"
TINY = [
    {"name": "ridge", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": [1.0]}},
    {"name": "forest", "estimator": "sklearn.ensemble.RandomForestRegressor",
     "params": {"n_estimators": [5], "max_depth": [4]}},
]  # fmt: skip


def make_use_case(
    model_name: str,
    candidates: list[dict[str, Any]],
    thresholds: dict[str, Any] | None = None,
    drop_features: tuple[str, ...] = (),
) -> UseCase:
    """The bike use case with tiny estimators, its own registered model and test thresholds."""
    raw = find_use_case("bike_sharing", PROJECT_ROOT / "configs").model_dump()
    raw["name"] = "it_bike"
    raw["model_name"] = model_name
    raw["candidates"] = candidates
    raw["features"]["numeric"] = [c for c in raw["features"]["numeric"] if c not in drop_features]
    # The 400-row January slice is hard to predict (r2 ~0.3): test the rmse gate and the 5 % margin.
    raw["gate"] = {"primary_metric": "rmse", "thresholds": thresholds or {"rmse": {"max": 120}}, "max_regression": 0.05}
    return UseCase.model_validate(raw)


def write_snapshot(path: Path, drop: tuple[str, ...] = ()) -> str:
    # Source columns unchanged: strings with gaps for categoricals, floats, int target.
    df = pd.read_csv(PROJECT_ROOT / "data/raw/bike_sharing_hourly.csv", nrows=400).drop(columns=list(drop))
    df.to_parquet(path, index=False)
    return str(path)


@dataclass
class Flow:
    use_case: UseCase
    snapshot: str
    parent_run_id: str
    results: list[CandidateResult]
    best: CandidateResult
    holdout: pd.DataFrame
    decision: GateDecision
    version: str
    promotion: PromotionResult
    failed_run_id: str


def lineage(snapshot: str) -> dict[str, str]:
    return {"snapshot_path": snapshot, "dvc_md5": "0123456789abcdef0123456789abcdef", "reason": "integration test"}


def run_key(run_id: str) -> str:
    return f"{DAG_ID}/{run_id}"


def train_all(uc: UseCase, snapshot: str, parent: str, run_id: str) -> list[CandidateResult]:
    # As the DAG does it: specs and results cross XCom as dicts.
    task_lineage = {"dvc_md5": lineage(snapshot)["dvc_md5"], "dag_id": DAG_ID, "run_id": run_id}
    return [
        CandidateResult.from_dict(
            training_runs.train_and_log_candidate(uc, spec.to_dict(), snapshot, parent, task_lineage).to_dict()
        )
        for spec in expand_candidates(uc)
    ]


@pytest.fixture(scope="module")
def mlflow_client(mlflow_server: str) -> MlflowClient:
    return MlflowClient(mlflow_server)


@pytest.fixture(scope="module")
def flow(mlflow_client: MlflowClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    uc = make_use_case(MODEL, TINY)
    snapshot = write_snapshot(tmp_path_factory.mktemp("snapshots") / "bike.parquet")
    parent = training_runs.start_parent_run(uc, DAG_ID, "run-1", lineage(snapshot))

    # A killed earlier attempt left a half-written child for the first candidate.
    first_key = expand_candidates(uc)[0].key
    experiment_id = mlflow_client.get_run(parent).info.experiment_id
    half = mlflow_client.create_run(
        experiment_id, run_name=first_key, tags={"mlflow.parentRunId": parent, "mlops.candidate_key": first_key}
    )
    mlflow_client.set_terminated(half.info.run_id, status="FAILED")

    results = train_all(uc, snapshot, parent, "run-1")
    best = evaluation.select_best(uc, [r.to_dict() for r in results])
    _, holdout = training_runs.load_train_holdout(uc, snapshot)
    decision = evaluation.evaluate_against_champion(uc, best, snapshot, parent)
    version = decisions.register_candidate(uc, best, run_key("run-1"))
    promotion = decisions.apply_decision(uc, version, GateDecision.from_dict(decision.to_dict()), run_key("run-1"))
    yield Flow(uc, snapshot, parent, results, best, holdout, decision, version, promotion, half.info.run_id)


def child_runs(mlflow_client: MlflowClient, parent: str) -> list[Any]:
    experiment_id = mlflow_client.get_run(parent).info.experiment_id
    return list(mlflow_client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'"))


def test_first_model_meeting_thresholds_is_promoted(flow: Flow, mlflow_client: MlflowClient) -> None:
    assert flow.best.key == "forest-max_depth=4,n_estimators=5"  # lower rmse than the ridge on this slice
    assert flow.best.metrics["rmse"] == min(r.metrics["rmse"] for r in flow.results)
    assert flow.decision.passed and flow.decision.champion_version is None
    assert "no champion yet: judged on the absolute thresholds only" in flow.decision.reasons
    # The gate rescored the candidate on the same holdout: identical metrics.
    assert flow.decision.candidate_metrics == pytest.approx(flow.best.metrics)
    assert flow.promotion.action == "promoted" and flow.promotion.champion == flow.version
    assert flow.promotion.previous is None

    champion = registry.champion(MODEL)
    assert champion is not None and champion.version == flow.version
    assert champion.run_id == flow.best.run_id
    assert champion.metrics == pytest.approx(flow.best.metrics)
    assert champion.aliases == ["champion"]
    assert champion.tags["mlops.run_key"] == run_key("run-1") and champion.tags["mlops.gate.passed"] == "true"
    assert champion.lineage["snapshot_path"] == flow.snapshot  # what monitoring reads as its reference

    parent = mlflow_client.get_run(flow.parent_run_id)
    assert parent.data.tags["mlops.gate.passed"] == "true"
    assert parent.data.tags["mlops.gate.candidate_key"] == flow.best.key
    assert parent.data.tags["reason"] == "integration test"
    assert parent.data.metrics["gate_candidate_rmse"] == pytest.approx(flow.best.metrics["rmse"])
    # mlflow.models.evaluate's own record of the candidate's holdout predictions.
    assert parent.data.metrics["gate_candidate_root_mean_squared_error"] == pytest.approx(flow.best.metrics["rmse"])
    assert "gate/decision.json" in [a.path for a in mlflow_client.list_artifacts(flow.parent_run_id, "gate")]
    assert parent.info.status == "FINISHED"


def test_candidate_runs_carry_lineage_dataset_plots_and_model(flow: Flow, mlflow_client: MlflowClient) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout
    lock = hashlib.sha256((PROJECT_ROOT / "uv.lock").read_bytes()).hexdigest()
    for result in flow.results:
        run = mlflow_client.get_run(result.run_id)
        tags = run.data.tags
        assert run.info.status == "FINISHED" and tags["mlflow.parentRunId"] == flow.parent_run_id
        assert tags["snapshot_path"] == flow.snapshot
        assert tags["dvc_md5"] == "0123456789abcdef0123456789abcdef"
        # Others commit meanwhile: the recorded commit must be one of this repository's, not HEAD now.
        recorded = tags["git_commit"]
        assert recorded == tags["mlflow.source.git.commit"]
        if commit.strip():
            ancestry = ["git", "merge-base", "--is-ancestor", recorded, "HEAD"]
            assert subprocess.run(ancestry, cwd=PROJECT_ROOT, capture_output=True).returncode == 0, recorded
        else:
            assert recorded == "unknown"
        assert tags["uv_lock_sha256"] == lock
        assert tags["airflow_dag_id"] == DAG_ID and tags["airflow_run_id"] == "run-1"
        assert tags["reason"] == "integration test"  # inherited from the parent run
        assert tags["mlops.model_uri"] == result.model_uri
        assert run.data.metrics["rmse"] == pytest.approx(result.metrics["rmse"])
        assert set(run.data.params) >= {"estimator", "n_train", "n_holdout", "seed"}

        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs if i.tags}
        assert set(inputs) == {"training", "holdout"}
        assert inputs["training"].digest == tags["dataset_digest"] and len(inputs["training"].digest) >= 8
        assert flow.snapshot in inputs["holdout"].source

        plots = {Path(a.path).name for a in mlflow_client.list_artifacts(result.run_id, "plots")}
        assert plots == {"predicted_vs_actual.png", "feature_importance.png", "feature_importance.json"}

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(flow.best.model_uri)
    assert model.metadata.signature is not None
    assert {c.name for c in model.metadata.signature.inputs.inputs} == set(flow.use_case.features.all)
    assert len(model.predict(flow.holdout.drop(columns=["cnt"]))) == len(flow.holdout)


def test_half_written_child_run_is_replaced(flow: Flow, mlflow_client: MlflowClient) -> None:
    assert mlflow_client.get_run(flow.failed_run_id).info.lifecycle_stage == "deleted"
    children = child_runs(mlflow_client, flow.parent_run_id)
    keys = sorted(r.data.tags["mlops.candidate_key"] for r in children)
    assert keys == sorted(r.key for r in flow.results)  # one live run per candidate


def test_rerun_of_the_same_dag_run_creates_nothing_and_moves_no_alias(flow: Flow, mlflow_client: MlflowClient) -> None:
    assert training_runs.start_parent_run(flow.use_case, DAG_ID, "run-1", lineage(flow.snapshot)) == flow.parent_run_id
    again = train_all(flow.use_case, flow.snapshot, flow.parent_run_id, "run-1")
    assert [r.run_id for r in again] == [r.run_id for r in flow.results]
    assert [r.model_uri for r in again] == [r.model_uri for r in flow.results]
    assert len(child_runs(mlflow_client, flow.parent_run_id)) == len(flow.results)
    experiment_id = mlflow_client.get_run(flow.parent_run_id).info.experiment_id
    parents = mlflow_client.search_runs(
        [experiment_id], "tags.airflow_run_id = 'run-1' and tags.`mlops.run_type` = 'parent'"
    )
    assert len(parents) == 1

    # Re-evaluating compares the champion with itself: it still passes.
    decision = evaluation.evaluate_against_champion(flow.use_case, again[1], flow.snapshot, flow.parent_run_id)
    assert decision.passed and decision.champion_version == flow.version
    assert any("equals champion" in r for r in decision.reasons)

    assert decisions.register_candidate(flow.use_case, again[1], run_key("run-1")) == flow.version
    assert len(mlflow_client.search_model_versions(f"name = '{MODEL}'")) == 1
    promotion = decisions.apply_decision(flow.use_case, flow.version, decision, run_key("run-1"))
    assert promotion.action == "unchanged"
    assert f"v{flow.version} was already promoted to @champion by {run_key('run-1')}" in promotion.reasons[-1]
    assert promotion.champion == flow.version and promotion.previous is None
    assert mlflow_client.get_registered_model(MODEL).aliases == {"champion": flow.version}


def test_a_rerun_on_changed_data_does_not_reuse_the_old_models(flow: Flow, mlflow_client: MlflowClient) -> None:
    """The source changed between two attempts of one DAG run: its models belong to the old snapshot."""
    changed = {**lineage(flow.snapshot), "dvc_md5": "fedcba9876543210fedcba9876543210"}
    with pytest.raises(
        training_runs.SnapshotChangedError, match="md5 0123456789abcdef0123456789abcdef, but this attempt"
    ):
        training_runs.start_parent_run(flow.use_case, DAG_ID, "run-1", changed)
    # The parent's lineage still describes the models under it.
    assert mlflow_client.get_run(flow.parent_run_id).data.tags["dvc_md5"] == lineage(flow.snapshot)["dvc_md5"]

    spec = expand_candidates(flow.use_case)[0]
    task_lineage = {"dvc_md5": changed["dvc_md5"], "dag_id": DAG_ID, "run_id": "run-1"}
    with pytest.raises(
        training_runs.SnapshotChangedError, match=f"already trained {spec.key} .* trigger a new DAG run"
    ):
        training_runs.train_and_log_candidate(
            flow.use_case, spec.to_dict(), flow.snapshot, flow.parent_run_id, task_lineage
        )
    assert len(child_runs(mlflow_client, flow.parent_run_id)) == len(flow.results)


def test_a_parent_with_nothing_trained_yet_takes_the_new_snapshot(flow: Flow, mlflow_client: MlflowClient) -> None:
    # An attempt that died before any candidate finished has no models to protect.
    first = training_runs.start_parent_run(flow.use_case, DAG_ID, "run-early-crash", lineage(flow.snapshot))
    changed = {**lineage(flow.snapshot), "dvc_md5": "fedcba9876543210fedcba9876543210"}
    assert training_runs.start_parent_run(flow.use_case, DAG_ID, "run-early-crash", changed) == first
    assert mlflow_client.get_run(first).data.tags["dvc_md5"] == changed["dvc_md5"]
    training_runs.end_parent_run(first)


def test_worse_model_becomes_challenger_with_the_reason(flow: Flow, mlflow_client: MlflowClient) -> None:
    uc = make_use_case(MODEL, [{"name": "mean", "estimator": "sklearn.dummy.DummyRegressor"}])
    parent = training_runs.start_parent_run(uc, DAG_ID, "run-2", lineage(flow.snapshot))
    (result,) = train_all(uc, flow.snapshot, parent, "run-2")
    decision = evaluation.evaluate_against_champion(uc, result, flow.snapshot, parent)
    champion_rmse = flow.best.metrics["rmse"]
    assert not decision.passed
    assert decision.champion_version == flow.version
    assert decision.champion_metrics is not None
    assert decision.champion_metrics["rmse"] == pytest.approx(champion_rmse)
    (reason,) = decision.reasons
    assert f"worse than champion v{flow.version} ({champion_rmse:.4g}); allowed 5.0%" in reason

    version = decisions.register_candidate(uc, result, run_key("run-2"))
    assert version != flow.version
    promotion = decisions.apply_decision(uc, version, decision, run_key("run-2"))
    assert promotion.action == "challenger" and promotion.champion == flow.version
    tags = mlflow_client.get_model_version(MODEL, version).tags
    assert tags["mlops.rejection_reason"] == reason and tags["mlops.gate.passed"] == "false"
    assert mlflow_client.get_run(parent).data.tags["mlops.gate.passed"] == "false"
    aliases = mlflow_client.get_registered_model(MODEL).aliases
    assert aliases == {"champion": flow.version, "challenger": version}
    # Re-applying the same decision moves nothing.
    assert decisions.apply_decision(uc, version, decision, run_key("run-2")).action == "unchanged"


def test_champion_that_cannot_score_the_new_schema_blocks_promotion(
    flow: Flow, mlflow_client: MlflowClient, tmp_path: Path
) -> None:
    # The source lost a column the champion needs; the new candidate does without it.
    uc = make_use_case(MODEL, [TINY[0]], drop_features=("hum",))
    snapshot = write_snapshot(tmp_path / "no-hum.parquet", drop=("hum",))
    parent = training_runs.start_parent_run(uc, DAG_ID, "run-3", lineage(snapshot))
    (result,) = train_all(uc, snapshot, parent, "run-3")
    decision = evaluation.evaluate_against_champion(uc, result, snapshot, parent)
    assert not decision.passed
    assert decision.champion_version == flow.version and decision.champion_metrics is None
    assert decision.champion_error is not None
    assert decision.champion_error.startswith("MlflowException: Model is missing inputs ['hum']")
    assert f"champion v{flow.version} could not be scored on this holdout" in decision.reasons[0]
    assert mlflow_client.get_run(parent).data.tags["mlops.gate.champion_error"] == decision.champion_error


def test_select_best_follows_the_metric_direction_and_rejects_no_metric(flow: Flow) -> None:
    a = CandidateResult("a", "r1", "models:/m-1", {"rmse": 10.0})
    b = CandidateResult("b", "r2", "models:/m-2", {"rmse": 9.0})
    assert evaluation.select_best(flow.use_case, [a, b]).key == "b"
    assert evaluation.select_best(flow.use_case, [b, CandidateResult("a", "r", "u", {"rmse": 9.0})]).key == "a"
    with pytest.raises(ValueError, match="no candidate has the primary metric 'rmse'"):
        evaluation.select_best(flow.use_case, [CandidateResult("c", "r", "u", {"mae": 1.0})])


def test_parent_runs_are_per_dag_run(flow: Flow) -> None:
    other = training_runs.start_parent_run(flow.use_case, DAG_ID, "run-other", lineage(flow.snapshot))
    assert other != flow.parent_run_id
    assert training_runs.find_parent_run(flow.use_case, DAG_ID, "run-other") == other
    training_runs.end_parent_run(other)
    assert MlflowClient().get_run(other).info.status == RunStatus.to_string(RunStatus.FINISHED)
    with pytest.raises(ValueError, match="single quote"):
        training_runs.start_parent_run(flow.use_case, DAG_ID, "it's", {})


def test_training_does_not_depend_on_the_experiment_this_process_set_last(
    flow: Flow, mlflow_client: MlflowClient
) -> None:
    """A process that runs many tasks (a Celery prefork worker, dag.test) carries MLflow's active experiment
    over from the last one; resuming a run of another experiment must not trip over it."""
    import mlflow

    mlflow.set_experiment("some-other-task-was-here")
    try:
        uc = make_use_case(MODEL, [{"name": "mean", "estimator": "sklearn.dummy.DummyRegressor"}])
        parent = training_runs.start_parent_run(uc, DAG_ID, "run-other-experiment", lineage(flow.snapshot))
        (result,) = train_all(uc, flow.snapshot, parent, "run-other-experiment")
        mlflow.set_experiment("some-other-task-was-here")
        decision = evaluation.evaluate_against_champion(uc, result, flow.snapshot, parent)
        experiment_id = mlflow_client.get_run(parent).info.experiment_id
        assert mlflow_client.get_run(result.run_id).info.experiment_id == experiment_id
        assert decision.champion_version == flow.version
        training_runs.end_parent_run(parent)
    finally:
        mlflow.set_experiment(experiment_id="0")
