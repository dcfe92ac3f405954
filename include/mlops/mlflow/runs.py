"""Tracking runs as plain records: the training parent run of a DAG run, found by its tags.

The rest of the package reads runs through these records, never through MLflow's
entities, so a change in MLflow's types touches this package only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops.mlflow.client import client as default_client
from mlops.mlflow.client import filter_literal
from mlops.naming import TAG_DAG_ID, TAG_DAG_RUN_ID, TAG_RUN_TYPE, training_experiment

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class RunRecord:
    """What the platform reads of an MLflow run."""

    run_id: str
    experiment_id: str
    status: str
    start_time: datetime | None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def record(run: Any) -> RunRecord:
    """An MLflow `Run` as a RunRecord."""
    started = run.info.start_time
    return RunRecord(
        run_id=str(run.info.run_id),
        experiment_id=str(run.info.experiment_id),
        status=str(run.info.status),
        start_time=datetime.fromtimestamp(started / 1000, tz=UTC) if started else None,
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        params=dict(run.data.params),
        tags=dict(run.data.tags),
    )


def find_parent_run(
    use_case: str, dag_id: str, run_id: str, mlflow_client: MlflowClient | None = None
) -> RunRecord | None:
    """The training parent run of DAG run `dag_id`/`run_id` (the first, if a race made two), or None."""
    mlflow_client = mlflow_client or default_client()
    experiment = mlflow_client.get_experiment_by_name(training_experiment(use_case))
    if experiment is None:
        return None
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{TAG_RUN_TYPE}` = 'parent' and tags.{TAG_DAG_ID} = {filter_literal(dag_id, 'dag_id')} "
            f"and tags.{TAG_DAG_RUN_ID} = {filter_literal(run_id, 'run_id')}"
        ),
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return record(runs[0]) if runs else None
