"""Build the log-summary DAG of one use case: the prediction log's newly landed files summarised for monitoring.

The work is `mlops.monitoring.landing`; this file wires it to the schedule.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, dag, task

from mlops.config import UseCase
from mlops.naming import log_summary_dag_id
from mlops.orchestration.defaults import NETWORK_BOUND, dag_kwargs


def build_log_summary_dag(use_case: UseCase) -> DAG:
    """`summarize_log_<use case>`: extend the day summaries of the run's interval with the files that landed."""

    @dag(
        schedule=use_case.schedule.log_summaries,
        **dag_kwargs(
            log_summary_dag_id(use_case.name),
            tags=["monitoring", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(hours=1),
            owner=use_case.owner,
            access=use_case.access,
            params={"day": Param(None, type=["null", "string"], description="YYYY-MM-DD to summarise")},
        ),
    )
    def log_summaries() -> None:
        # NETWORK_BOUND: it reads the champion from MLflow; re-running it reads what is covered and writes nothing.
        @task(**NETWORK_BOUND)
        def summarize_landed_log(**context: Any) -> dict[str, Any]:
            from mlops.monitoring import landing

            start, end = _interval(context)
            return landing.summarize_interval(use_case, start, end).to_dict()

        summarize_landed_log()

    return log_summaries()


def _interval(context: dict[str, Any]) -> tuple[datetime, datetime]:
    """The run's interval in naive UTC: the `day` param's day, else the data interval, else the day it ran after."""
    import pendulum

    day = context["params"].get("day")
    if day:
        try:
            start = datetime.fromisoformat(str(day)).replace(tzinfo=None)
        except ValueError:
            raise ValueError(f"day {day!r} is not a date: pass it as YYYY-MM-DD") from None
        return start, start + timedelta(days=1)
    first, last = context.get("data_interval_start"), context.get("data_interval_end")
    if first is None or last is None:  # a run triggered without a logical date: the hour before it was due
        after = pendulum.instance(context["dag_run"].run_after).in_timezone("UTC").naive()
        return after - timedelta(hours=1), after
    return pendulum.instance(first).in_timezone("UTC").naive(), pendulum.instance(last).in_timezone("UTC").naive()


def _doc(use_case: UseCase) -> str:
    return f"""
### Summarise the prediction log of `{use_case.name}`

Extends the monitoring summaries of the log's day folders of the run's interval (and the day
before, for late files) with the files that landed since the last run, binned by the current
`@champion`'s reference (`mlops.monitoring.landing`). The monitoring run then merges the day
summaries instead of reading the window's rows. A re-run writes nothing new; a use case whose
windows stay under `monitoring.exact_below_rows` ({use_case.monitoring.exact_below_rows:,} rows) is skipped.

**Params**: `day` (`YYYY-MM-DD`: summarise that day and the one before; default: the data interval).
"""
