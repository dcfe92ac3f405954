"""Build the label-ingestion DAG of one use case: landed files and an SQL query into the labels store.

The work is `mlops.predictionlog.label_sources`; this file wires it and turns its
outcomes into task states: a rejected file fails the task with the reasons (after the
other files were written), and a query that returns bad labels fails without retries.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, dag, task
from airflow.sdk.exceptions import AirflowFailException

from mlops.config import UseCase
from mlops.naming import labels_dag_id
from mlops.orchestration.defaults import GATE, NETWORK_BOUND, dag_kwargs

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1)
"""`:start` of the first run: every row the query returns up to the run's time."""


def build_label_ingestion_dag(use_case: UseCase) -> DAG:
    """`ingest_labels_<use case>`: settle unmatched labels, then the landed files and the SQL query (when set)."""

    @dag(
        schedule=use_case.labels.schedule,
        **dag_kwargs(
            labels_dag_id(use_case.name),
            tags=["monitoring", "labels", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(hours=1),
            owner=use_case.owner,
            access=use_case.access,
        ),
    )
    def label_ingestion() -> None:
        # First, not last: the ingestion tasks stay the leaves, so a rejected file fails the run
        # (a leaf that ran "all_done" would mark it successful). Labels this run leaves unmatched
        # are settled by the next one; they join in the meantime all the same.
        @task(**NETWORK_BOUND)
        def settle_unmatched_labels() -> int:
            from mlops.predictionlog.labels import settle_unmatched

            moved = settle_unmatched(use_case)
            log.info("%d unmatched labels of %s found their prediction", moved, use_case.name)
            return moved

        settled = settle_unmatched_labels()

        # No retries: a rejected file has been moved aside, so a retry would find nothing and pass.
        @task(**GATE)
        def ingest_landed_labels() -> dict[str, Any]:
            from mlops.predictionlog import label_sources

            report = label_sources.ingest_landing(use_case)
            log.info("%s", report.summary())
            failure = report.failure()
            if failure:
                raise AirflowFailException(failure)
            return report.totals()

        settled >> ingest_landed_labels()

        if use_case.labels.sql is not None:
            conn_id = use_case.labels.sql.conn_id

            @task(**NETWORK_BOUND)
            def ingest_queried_labels(**context: Any) -> dict[str, Any]:
                from mlops.orchestration.connections import sql_uri
                from mlops.predictionlog import label_sources

                # Since the last successful run: a failed run's rows are read again by the next one,
                # which the replacing write makes harmless. Not the data interval: a cron schedule's
                # interval is empty in Airflow 3 (CronTriggerTimetable: start == end).
                end = context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
                start = _naive(context.get("prev_data_interval_end_success")) or _EPOCH
                try:
                    result = label_sources.ingest_query(use_case, sql_uri(conn_id), start=start, end=_naive(end))
                except label_sources.LabelSourceError as exc:
                    raise AirflowFailException(str(exc)) from exc  # the same query returns the same rows
                log.info("labels of %s from connection %s: %s", use_case.name, conn_id, result.to_dict())
                totals: dict[str, Any] = result.to_dict()
                totals["unknown"] = len(result.unknown_ids)
                return totals

            settled >> ingest_queried_labels()

    return label_ingestion()


def _naive(moment: Any) -> datetime | None:
    """A data-interval bound as the log keeps times: naive UTC (None for a run without an interval)."""
    import pendulum

    if not moment:  # None, or Airflow's lazy proxy of None (prev_data_interval_end_success of a first run)
        return None
    value: datetime = pendulum.instance(moment).in_timezone("UTC").naive()
    return value


def _doc(use_case: UseCase) -> str:
    sql = use_case.labels.sql
    query = (
        f"\n\nAlso runs the query of connection `{sql.conn_id}` (`labels.sql`), with `:start` bound to the "
        "last successful run's time (1970-01-01 for the first) and `:end` to this run's."
        if sql
        else ""
    )
    return f"""
### Ingest the labels of `{use_case.name}`

Reads every CSV or Parquet file landed in `{use_case.labels_landing_dir}` (columns `id`,
`label`, optionally `event_time`), validates it (type and class set from the config, one
label per id, no label before its prediction) and writes it to the labels store, where it
joins its prediction by request id; then moves it to `done/`. A file with a missing column or
a bad row goes to `rejected/` with `<file>.reason.txt`, nothing of it written, and the task
fails with the reasons after the other files were written.{query}

A label sent again replaces the earlier one, never doubles it. Labels for ids the log does not
hold yet are kept and counted (`unknown`); they join as soon as their prediction is logged, and
the next run's `settle_unmatched_labels` moves them beside it.
"""
