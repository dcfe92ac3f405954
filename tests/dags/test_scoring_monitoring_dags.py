"""Batch scoring and monitoring DAGs under `dag.test()`, against a real MLflow server.

A champion is trained on early 2011 (through the package functions, the same
ones the training DAG calls). Then:
- the scoring DAG scores a landed partition, and a re-run replaces it;
- monitoring a summer window finds drift and triggers training with the reason in its conf;
- monitoring again while that training run is queued is held back by the cooldown guard;
- monitoring a window like the training data triggers nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlops.config import UseCase, find_use_case

pytestmark = pytest.mark.integration

RAW = Path(__file__).resolve().parents[2] / "data" / "raw" / "bike_sharing_hourly.csv"


@pytest.fixture(scope="module")
def bike(mlflow_server: str, airflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> UseCase:
    """A champion trained on Jan–Feb 2011, under a model name of this module's own."""
    from mlops import ingestion, registry, tracking, training

    use_case = find_use_case("bike_sharing")
    use_case = use_case.model_copy(
        update={
            "model_name": "bike_sharing_monitoring_test",
            "candidates": [use_case.candidates[0].model_copy(update={"params": {"alpha": [1.0]}})],
        }
    )
    snapshot = ingestion.ingest_snapshot(use_case, run_id="monitoring_fixture", as_of="2011-03-01")
    lineage = {"snapshot_path": snapshot.path, "dvc_md5": snapshot.md5, "reason": "fixture"}
    parent = tracking.start_parent_run(use_case, "fixture", "monitoring_fixture", lineage)
    spec = training.expand_candidates(use_case)[0]
    result = tracking.train_and_log_candidate(use_case, spec.to_dict(), snapshot.path, parent, lineage)
    _, holdout = ingestion.split_holdout(use_case, ingestion.read_snapshot(snapshot.path))
    decision = tracking.evaluate_against_champion(use_case, result, holdout, parent)
    version = registry.register_candidate(use_case, result, "fixture/monitoring")
    assert registry.apply_decision(use_case, version, decision, "fixture/monitoring").action == "promoted"
    return use_case


def _rows(start: str, end: str) -> Any:
    import pandas as pd

    frame = pd.read_csv(RAW)
    return frame[(frame["dteday"] >= start) & (frame["dteday"] < end)].reset_index(drop=True)


def _serve_window(use_case: UseCase, start: str, end: str) -> None:
    """Score a period as production traffic and deliver its labels."""
    from mlops import predictionlog, scoring

    frame = _rows(start, end)
    ids = [f"{start}-{i}" for i in range(len(frame))]
    scoring.score_partition(use_case, f"traffic-{start}", frame, ids=ids, source="replay")
    predictionlog.write_labels(use_case, ids, frame[use_case.target].tolist(), frame[use_case.time_column].tolist())


def _return_value(dag_id: str, run_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, key="return_value")
            .first()
        )
        return None if row is None else XComModel.deserialize_value(row)


def _training_runs(dag_id: str) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id).all()
        session.expunge_all()
        return runs


def test_batch_scoring_replaces_its_partition(bike: UseCase) -> None:
    from mlops import predictionlog, scoring
    from mlops.orchestration.scoring import build_scoring_dag

    scoring.land_partition(bike, "2011-04-02", _rows("2011-04-02", "2011-04-03"))
    dag = build_scoring_dag(bike)
    for _ in range(2):
        dag_run = dag.test(run_conf={"partition": "2011-04-02"})
        assert str(dag_run.state) == "success"
    logged = predictionlog.read_predictions(bike, "2011-04-02", "2011-04-03")
    batch = logged[logged["source"] == "batch"]
    assert len(batch) == 24  # one day of hourly rows, once, after two runs
    assert batch["model_version"].nunique() == 1 and batch["prediction"].notna().all()
    result = _return_value(dag.dag_id, dag_run.run_id, "score_landed_partition")
    assert result["rows"] == 24 and result["replaced_rows"] == 24


def test_nothing_landed_skips(bike: UseCase) -> None:
    from mlops.orchestration.scoring import build_scoring_dag

    dag_run = build_scoring_dag(bike).test(run_conf={"partition": "1999-01-01"})
    (ti,) = dag_run.get_task_instances()
    assert str(ti.state) == "skipped"


def test_drifted_window_triggers_training_with_reason(bike: UseCase) -> None:
    from mlops.orchestration.monitoring import build_monitoring_dag
    from mlops.orchestration.training import training_dag_id

    _serve_window(bike, "2011-07-01", "2011-07-15")
    dag = build_monitoring_dag(bike)
    before = {r.run_id for r in _training_runs(training_dag_id(bike))}
    dag_run = dag.test(run_conf={"as_of": "2011-07-15"})
    assert str(dag_run.state) == "success"
    assessment = _return_value(dag.dag_id, dag_run.run_id, "assess_window")
    assert assessment["decision"]["action"] == "retrain", assessment["decision"]
    assert assessment["decision"]["drift_share"] >= bike.monitoring.drift_share_threshold
    assert Path(assessment["report_html"]).is_file()
    new = [r for r in _training_runs(training_dag_id(bike)) if r.run_id not in before]
    assert len(new) == 1
    conf = new[0].conf
    assert "drift" in conf["reason"] and conf["as_of"] == "2011-07-15" and conf["report"].endswith("drift.html")

    # The triggered run is still queued (nothing executes it here): the cooldown guard holds.
    again = dag.test(run_conf={"as_of": "2011-07-15"})
    decision = _return_value(dag.dag_id, again.run_id, "assess_window")["decision"]
    assert decision["action"] == "cooldown", decision
    assert len([r for r in _training_runs(training_dag_id(bike)) if r.run_id not in before]) == 1


def test_clean_window_triggers_nothing(bike: UseCase) -> None:
    from mlops.orchestration.monitoring import build_monitoring_dag
    from mlops.orchestration.training import training_dag_id

    _serve_window(bike, "2011-02-15", "2011-03-01")
    dag = build_monitoring_dag(bike)
    before = len(_training_runs(training_dag_id(bike)))
    dag_run = dag.test(run_conf={"as_of": "2011-03-01"})
    assert str(dag_run.state) == "success"
    decision = _return_value(dag.dag_id, dag_run.run_id, "assess_window")["decision"]
    assert decision["action"] == "none", decision
    states = {t.task_id: str(t.state) for t in dag_run.get_task_instances()}
    assert states["trigger_retraining"] == "skipped"
    assert len(_training_runs(training_dag_id(bike))) == before
