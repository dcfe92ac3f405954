"""Monitoring summaries computed as partitions land, through the DAGs under `dag.test()` and a real MLflow server.

A champion is trained on Jan-Feb 2011 (a reference of more than 1000 rows: the summaries'
path). Its use case is copied with a small `exact_below_rows`, so a week of scored hourly
partitions is a window "at volume". Then:
- the scoring DAG summarises each partition it writes, once; a re-run of a partition replaces
  its day's summary (the rows counted once); the hourly log-summary DAG then finds nothing new;
- the monitoring DAG reuses those summaries (none written, none read from rows) and decides
  as the exact path does on the same window;
- after `@champion` moves to a version trained on another period, the monitoring DAG
  summarises every day afresh against the new reference, and still decides as the exact path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_xcom import task_xcom

from mlops.config import UseCase, find_use_case

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ge_dir")]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RAW = PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv"
DAYS = [f"2011-07-{d:02d}" for d in range(1, 8)]
AS_OF = "2011-07-08"


def _rows(start: str, end: str) -> Any:
    import pandas as pd

    frame = pd.read_csv(RAW)
    return frame[(frame["dteday"] >= start) & (frame["dteday"] < end)].reset_index(drop=True)


def _train(use_case: UseCase, as_of: str, run: str) -> str:
    """Train, register and make `@champion` a version on the 60 days before `as_of`; returns the version."""
    from mlops.data import ingestion
    from mlops.mlflow import registry
    from mlops.promotion import decisions
    from mlops.training import candidates as training_candidates
    from mlops.training import runs as training_runs

    snapshot = ingestion.ingest_snapshot(use_case, run_id=run, as_of=as_of)
    lineage = {"snapshot_path": snapshot.path, "dvc_md5": snapshot.md5, "reason": "fixture"}
    parent = training_runs.start_parent_run(use_case, "fixture", run, lineage)
    spec = training_candidates.expand_candidates(use_case)[0]
    result = training_runs.train_and_log_candidate(use_case, spec.to_dict(), snapshot.path, parent, lineage)
    version = decisions.register_candidate(use_case, result, f"fixture/{run}")
    registry.set_alias(use_case.model_name, "champion", version)  # as a promotion or a rollback moves it
    return version


@pytest.fixture(scope="module")
def bike(mlflow_server: str, airflow_home: Path) -> Iterator[UseCase]:
    use_case = find_use_case("bike_sharing")
    use_case = use_case.model_copy(
        update={
            "model_name": "bike_sharing_landing_test",
            "candidates": [use_case.candidates[0].model_copy(update={"params": {"alpha": [1.0]}})],
            "monitoring": use_case.monitoring.model_copy(
                update={"window_days": 7, "min_rows": 100, "exact_below_rows": 100, "sample_rows": 1000}
            ),
        }
    )
    _train(use_case, "2011-03-01", "landing_v1")
    yield use_case
    # This module's monitoring runs trigger training runs of bike_sharing that dag.test() never
    # ends; left queued, the next module's monitoring run would see "a training run is already
    # queued or running" and decide cooldown instead of retrain.
    _clear_training_triggers(use_case)


def _exact(use_case: UseCase) -> UseCase:
    return use_case.model_copy(
        update={"monitoring": use_case.monitoring.model_copy(update={"exact_below_rows": 10**9})}
    )


def _records(use_case: UseCase) -> dict[Path, tuple[int, dict[str, Any]]]:
    from mlops.monitoring.volume import parquet_roots

    roots = parquet_roots(use_case.name)
    assert roots is not None
    return {
        p: (p.stat().st_mtime_ns, json.loads(p.read_text())) for p in roots[0].glob("date=2011-07-*/_summaries/*.json")
    }


def _clear_training_triggers(use_case: UseCase) -> None:
    """Fail the use case's training runs and forget its last trigger (under dag.test() a triggered run never ends)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    from mlops.naming import last_trigger_variable, training_dag_id

    with create_session() as session:
        for run in session.query(DagRun).filter(DagRun.dag_id == training_dag_id(use_case.name)):
            run.state = DagRunState.FAILED
    Variable.delete(last_trigger_variable(use_case.name))


def _monitor(use_case: UseCase) -> tuple[dict[str, Any], dict[str, Any]]:
    """One monitoring DAG run at AS_OF with no training run or trigger in the way: its decision and summary.json."""
    from mlops.orchestration.monitoring import build_monitoring_dag

    _clear_training_triggers(use_case)
    dag = build_monitoring_dag(use_case)
    dag_run = dag.test(run_conf={"as_of": AS_OF})
    assert str(dag_run.state) == "success"
    assessment = task_xcom(dag.dag_id, "assess_window", dag_run.run_id)
    summary = json.loads((Path(assessment["report_dir"]) / "summary.json").read_text())
    return assessment["decision"], summary


def _same_verdicts(volume: tuple[dict[str, Any], dict[str, Any]], exact: tuple[dict[str, Any], dict[str, Any]]) -> None:
    (decision, summary), (exact_decision, exact_summary) = volume, exact
    assert summary["drift_engine"] == "summaries" and exact_summary["drift_engine"] != "summaries"
    assert summary["rows"] == exact_summary["rows"] == 24 * len(DAYS)
    drifted = {c["column"]: c["drifted"] for c in summary["drift"]["columns"]}
    assert drifted == {c["column"]: c["drifted"] for c in exact_summary["drift"]["columns"]}
    assert summary["prediction_drift"]["drifted"] == exact_summary["prediction_drift"]["drifted"]
    assert decision["action"] == exact_decision["action"], (decision, exact_decision)
    assert decision["drift_share"] == exact_decision["drift_share"]


def test_scoring_summarises_each_partition_once(bike: UseCase) -> None:
    from mlops.orchestration.log_summaries import build_log_summary_dag
    from mlops.orchestration.scoring import build_scoring_dag
    from mlops.predictionlog.labels import write_labels
    from mlops.serving import batch as serving_batch

    dag = build_scoring_dag(bike)
    for day in DAYS:
        frame = _rows(day, f"{day[:-2]}{int(day[-2:]) + 1:02d}")
        serving_batch.land_partition(bike, day, frame)
        dag_run = dag.test(run_conf={"partition": day})
        assert str(dag_run.state) == "success"
        landed = task_xcom(dag.dag_id, "summarize_scored_partition", dag_run.run_id)
        assert landed["skipped"] is None, landed
        assert landed["days"] == [{"folder": f"date={day}", "files": 1, "summarised": 1, "afresh": True}]
        assert landed["built_against"]["model_version"] == "1"
        ids = [f"{day}:{i}" for i in range(len(frame))]  # the scoring's own row ids
        write_labels(bike, ids, frame[bike.target].tolist(), frame[bike.time_column].tolist())
    records = _records(bike)
    assert len(records) == len(DAYS)
    assert all(r["summary"]["rows"] == 24 and r["built_against"]["by"] == "landing" for _, r in records.values())

    # A re-run replaces the partition's file: its day is summarised afresh, its rows counted once.
    dag_run = dag.test(run_conf={"partition": DAYS[2]})
    landed = task_xcom(dag.dag_id, "summarize_scored_partition", dag_run.run_id)
    assert landed["days"] == [{"folder": f"date={DAYS[2]}", "files": 1, "summarised": 1, "afresh": True}]
    after = _records(bike)
    assert len(after) == len(DAYS) and all(r["summary"]["rows"] == 24 for _, r in after.values())

    # The hourly summariser, over days already covered, reads and writes nothing.
    summarize = build_log_summary_dag(bike)
    dag_run = summarize.test(run_conf={"day": DAYS[3]})
    assert str(dag_run.state) == "success"
    result = task_xcom(summarize.dag_id, "summarize_landed_log", dag_run.run_id)
    assert [d["folder"] for d in result["days"]] == [f"date={DAYS[2]}", f"date={DAYS[3]}"]
    assert result["files_summarised"] == 0
    assert _records(bike) == after


def test_monitoring_reuses_landed_summaries_and_decides_as_the_exact_path(bike: UseCase) -> None:
    before = _records(bike)
    assert len(before) == len(DAYS), "runs after test_scoring_summarises_each_partition_once"
    volume = _monitor(bike)
    assert _records(bike) == before  # every day merged as it landed: nothing summarised at monitoring time
    _same_verdicts(volume, _monitor(_exact(bike)))


def test_a_new_champion_makes_monitoring_summarise_afresh(bike: UseCase) -> None:
    before = _records(bike)
    version = _train(bike, "2011-07-01", "landing_v2")  # trained on May-June: a new reference, new bins
    volume = _monitor(bike)
    after = _records(bike)
    assert all(after[p] == before[p] for p in before)
    fresh = [r for p, (_, r) in after.items() if p not in before]
    assert len(fresh) == len(DAYS)
    assert all(r["built_against"] == {"by": "monitoring", "model_version": version} for r in fresh)
    _same_verdicts(volume, _monitor(_exact(bike)))
