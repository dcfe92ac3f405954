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


def build_label_ingestion_dag(use_case: UseCase) -> DAG:
    """`ingest_labels_<use case>`: landed files (and the SQL query, when configured), then settle unmatched labels."""

    @dag(
        schedule=use_case.labels.schedule,
        **dag_kwargs(
            labels_dag_id(use_case.name),
            tags=["monitoring", "labels", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(hours=1),
            owner=use_case.owner,
        ),
    )
    def label_ingestion() -> None:
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

        steps = [ingest_landed_labels()]

        if use_case.labels.sql is not None:
            conn_id = use_case.labels.sql.conn_id

            @task(**NETWORK_BOUND)
            def ingest_queried_labels(**context: Any) -> dict[str, Any]:
                from mlops.orchestration.connections import sql_uri
                from mlops.predictionlog import label_sources

                try:
                    result = label_sources.ingest_query(
                        use_case,
                        sql_uri(conn_id),
                        start=_naive(context.get("data_interval_start")),
                        end=_naive(context.get("data_interval_end")),
                    )
                except label_sources.LabelSourceError as exc:
                    raise AirflowFailException(str(exc)) from exc  # the same query returns the same rows
                log.info("labels of %s from connection %s: %s", use_case.name, conn_id, result.to_dict())
                totals: dict[str, Any] = result.to_dict()
                totals["unknown"] = len(result.unknown_ids)
                return totals

            steps.append(ingest_queried_labels())

        @task(**NETWORK_BOUND, trigger_rule="all_done")
        def settle_unmatched_labels() -> int:
            from mlops.predictionlog.labels import settle_unmatched

            moved = settle_unmatched(use_case)
            log.info("%d unmatched labels of %s found their prediction", moved, use_case.name)
            return moved

        steps >> settle_unmatched_labels()

    return label_ingestion()


def _naive(moment: Any) -> datetime | None:
    """A data-interval bound as the log keeps times: naive UTC (None for a run without an interval)."""
    import pendulum

    if moment is None:
        return None
    value: datetime = pendulum.instance(moment).in_timezone("UTC").naive()
    return value


def _doc(use_case: UseCase) -> str:
    sql = use_case.labels.sql
    query = f"\nAlso runs the query of connection `{sql.conn_id}` (`labels.sql`)." if sql else ""
    return f"""
### Ingest the labels of `{use_case.name}`

Reads every CSV or Parquet file landed in `{use_case.labels_landing_dir}` (columns `id`,
`label`, optionally `event_time`), validates it (type and class set from the config, one
label per id, no label before its prediction) and writes it to the labels store, where it
joins its prediction by request id; then moves it to `done/`. A file with a missing column or
a bad row goes to `rejected/` with `<file>.reason.txt`, nothing of it written, and the task
fails with the reasons after the other files were written.{query}

A label sent again replaces the earlier one, never doubles it. Labels for ids the log does not
hold yet are kept and counted (`unknown`); `settle_unmatched_labels` moves them beside their
prediction once it is logged.
"""
