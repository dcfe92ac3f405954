"""The training DAG's edges under `dag.test()`: what a failed run leaves for the person who reads it.

A failed validation keeps its Data Docs link, the approval bookkeeping does not add a
second failure, and validation judges dates against the run's own window. No test here
reaches the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest
from airflow_xcom import task_xcom

from mlops.config import Approval, FileSource, UseCase, find_use_case

pytestmark = pytest.mark.integration

RAW = Path(__file__).resolve().parents[2] / "data" / "raw" / "bike_sharing_hourly.csv"
AS_OF = "2011-03-01"
DAG_ID = "train_bike_sharing"


@pytest.fixture(scope="module")
def bike(mlflow_server: str, airflow_home: Path) -> UseCase:
    use_case = find_use_case("bike_sharing")
    training = use_case.training.model_copy(update={"window": use_case.training.window.model_copy(update={"days": 45})})
    return use_case.model_copy(update={"training": training})


def _run(use_case: UseCase, conf: dict[str, Any], *, up_to: str | None = None) -> tuple[str, str, dict[str, str]]:
    """Run the training DAG once (or only `up_to` and what it needs); (run id, run state, task states)."""
    from mlops.orchestration.training import build_training_dag

    dag = build_training_dag(use_case)
    if up_to is not None:
        dag = dag.partial_subset(task_ids=[up_to], include_upstream=True, include_downstream=False)
    dag_run = dag.test(run_conf=conf)
    return dag_run.run_id, str(dag_run.state), {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


@pytest.fixture(scope="module")
def failed_validation(bike: UseCase, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of a use case that requires approval, on data that breaks the suite (negative counts)."""
    frame = pd.read_csv(RAW, nrows=2000)
    frame["cnt"] = -frame["cnt"]
    path = tmp_path_factory.mktemp("negative") / "negative_counts.csv"
    frame.to_csv(path, index=False)
    gated = bike.model_copy(
        update={"source": FileSource(path=str(path)), "approval": Approval(required=True, timeout_hours=1)}
    )
    run_id, state, tasks = _run(gated, {"as_of": AS_OF, "reason": "test"})
    return {"run_id": run_id, "state": state, "tasks": tasks}


def test_a_failure_upstream_is_not_followed_by_a_second_one(failed_validation: dict[str, Any]) -> None:
    # record_approval_outcome runs whatever happened upstream (all_done) to record a rejection;
    # with nothing evaluated it skips, so the run shows one failure: the one to read.
    tasks = failed_validation["tasks"]
    assert failed_validation["state"] == "failed"
    assert [t for t, s in tasks.items() if s == "failed"] == ["validate_snapshot"], tasks
    assert tasks["approve_promotion"] == "upstream_failed"
    assert tasks["record_approval_outcome"] == "skipped"


def test_a_failed_validation_keeps_its_data_docs_link(failed_validation: dict[str, Any]) -> None:
    from airflow.models.taskinstancekey import TaskInstanceKey

    from mlops.orchestration.links import DataDocsLink

    outcome = task_xcom(DAG_ID, "validate_snapshot", failed_validation["run_id"])
    assert outcome is not None, "a failed validate_snapshot must still leave its outcome in XCom"
    assert outcome["success"] is False and outcome["suite"] == "bike_sharing"
    assert any(f["column"] == "cnt" for f in outcome["failed"]), outcome["failed"]
    page = Path(outcome["data_docs_page"])
    assert page.is_file() and page.suffix == ".html"
    # The task's "Data Docs" button, as the API server computes it from the metadata DB.
    key = TaskInstanceKey(DAG_ID, "validate_snapshot", failed_validation["run_id"], try_number=1, map_index=-1)
    link = DataDocsLink().get_link(None, ti_key=key)  # type: ignore[arg-type]
    assert link.endswith("/mlops/data-docs/" + quote(page.relative_to(_data_docs_dir()).as_posix()))


def _data_docs_dir() -> Path:
    from mlops.settings import get_settings

    return get_settings().data_docs_dir
