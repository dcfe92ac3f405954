"""Build the batch-scoring DAG of one use case: score a landed partition with `@champion`.

Input partitions land as CSV or Parquet files in
`$MLOPS_HOME/landing/<use case>/date=<YYYY-MM-DD>/`. Re-running a partition
replaces its predictions in the log instead of appending them again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from mlops.config import UseCase
from mlops.naming import scoring_dag_id
from mlops.orchestration.assets import predictions_asset
from mlops.orchestration.defaults import COMPUTE_BOUND, NETWORK_BOUND, dag_kwargs


def build_scoring_dag(use_case: UseCase) -> DAG:
    """`score_<use case>`: score the partition of the run's date into the prediction log, then summarise it."""

    @dag(
        schedule=use_case.schedule.scoring,
        **dag_kwargs(
            scoring_dag_id(use_case.name),
            tags=["inference", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(hours=2),
            owner=use_case.owner,
            access=use_case.access,
            params={"partition": Param(None, type=["null", "string"], description="YYYY-MM-DD to score")},
        ),
    )
    def scoring() -> None:
        @task(**COMPUTE_BOUND, outlets=[predictions_asset(use_case)], inlets=_store_inlets(use_case))
        def score_landed_partition(**context: Any) -> dict[str, Any]:
            from mlops.serving import batch as serving_batch

            partition = _partition_of(context)
            frame = serving_batch.read_landed_partition(use_case, partition)
            if frame is None:
                raise AirflowSkipException(f"nothing landed for {use_case.name} partition {partition}")
            return serving_batch.score_partition(use_case, partition, frame).to_dict()

        # Its own task, after the rows are in the log: a failure here leaves the scored partition
        # logged (the monitoring run then summarises it itself), and a retry does not score again.
        @task(**NETWORK_BOUND)
        def summarize_scored_partition(scored: dict[str, Any]) -> dict[str, Any]:
            from mlops.monitoring import landing

            return landing.summarize_partition(use_case, scored["partition"]).to_dict()

        summarize_scored_partition(score_landed_partition())

    return scoring()


def _store_inlets(use_case: UseCase) -> list[Any]:
    """A store-backed use case's scoring reads what materialize_features loads: the Asset graph shows it."""
    if use_case.feature_store is None:
        return []
    from mlops.orchestration.features import online_features_asset

    return [online_features_asset()]


def _doc(use_case: UseCase) -> str:
    return f"""
### Batch scoring of `{use_case.name}`

Scores the partition `date=<partition>` landed in `$MLOPS_HOME/landing/{use_case.name}/`
with `models:/{use_case.model_name}@champion` and writes predictions (with model version,
row id, timestamps and input features) to the prediction log, which monitoring reads.
A re-run replaces the partition. Skips when nothing has landed for the partition.
Then `summarize_scored_partition` computes the monitoring summaries of the partition's day
folders against the champion's reference (`mlops.monitoring.landing`), so the monitoring run
merges them instead of reading the rows; a use case whose windows monitoring reads whole skips it.

**Params**: `partition` (`YYYY-MM-DD`; default: the run's logical date, or for a run
triggered without one, the date it ran after).
"""


def _store_doc(use_case: UseCase) -> str:
    if use_case.feature_store is None:
        return ""
    return (
        f"\n\nThe rows carry the calendar; {', '.join(use_case.feature_store.feature_names)} are joined from the "
        "feature store's offline tables as of each row's hour, as training joins them, and logged with the entity keys."
    )


def _partition_of(context: dict[str, Any]) -> str:
    """The partition a run scores: its `partition` param, else its logical date, else the date it ran after."""
    from mlops.serving.batch import run_partition

    # `ds` exists only for runs with a logical date; a REST trigger may have none.
    return run_partition(
        context["params"].get("partition"),
        context.get("logical_date"),
        getattr(context.get("dag_run"), "run_after", None),
    )
