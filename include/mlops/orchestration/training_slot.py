"""The training slot of a use case: which training run started last, and why a run started late.

Airflow keeps when a run was asked for and when it started, but not why the two differ;
the training DAG's first task records it through `claim_training_slot`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pendulum
from airflow.sdk import Variable

from mlops.config import UseCase
from mlops.naming import training_dag_id, training_slot_variable
from mlops.orchestration.defaults import MAX_ACTIVE_RUNS

# A run that starts within this long of being asked for did not wait for another one:
# a free slot is taken within a scheduler loop or two, even on a loaded machine.
QUEUE_NOTICE_SECONDS = 10.0
QUEUE_XCOM_KEY = "queue_wait"

log = logging.getLogger(__name__)


def queue_wait(
    dag_id: str, run_id: str, asked_at: datetime, started_at: datetime, cleared: bool, previous: dict[str, Any] | None
) -> dict[str, str]:
    """Why a run started later than it was asked for, if it did; empty when it did not wait.

    Airflow keeps both times but not the reason: with `max_active_runs=1` a run asked for
    while another runs (two triggers at once, or a trigger during a run) stays queued until
    that one ends. `previous` is the run that started before this one: the one it waited for
    in that case. Airflow's API does not give tasks the end of another run, so a delay for
    another reason (a full pool, a slow scheduler) would name it too; the wording says only
    what is known. A cleared run's start is measured from its original request, so it says nothing.
    """
    if cleared or previous is None or previous.get("run_id") == run_id:
        return {}
    waited = (started_at - asked_at).total_seconds()
    if waited < QUEUE_NOTICE_SECONDS:
        return {}
    return {
        "queued_seconds": f"{waited:.1f}",
        "queued_behind": str(previous["run_id"]),
        "queue_reason": (
            f"queued {waited:.0f} s: {dag_id} runs one run at a time (max_active_runs={MAX_ACTIVE_RUNS}); "
            f"the run started before it is {previous['run_id']} (started {previous.get('started')})"
        ),
    }


def claim_training_slot(use_case: UseCase, context: Any) -> dict[str, str]:
    """Record this run as the last one started, and whether (and behind which run) it was queued.

    Idempotent per run: a retry or a re-run of the first task keeps what the first attempt found.
    """
    dag_run = context["dag_run"]
    name = training_slot_variable(use_case.name)
    held = Variable.get(name, default=None, deserialize_json=True)
    if held and held.get("run_id") == dag_run.run_id:
        return dict(held.get("queue") or {})
    started = dag_run.start_date or pendulum.now("UTC")
    wait = queue_wait(
        training_dag_id(use_case.name), dag_run.run_id, dag_run.run_after, started, bool(dag_run.clear_number), held
    )
    record = {"run_id": dag_run.run_id, "started": started.isoformat(), "queue": wait}
    Variable.set(name, record, serialize_json=True)
    if wait:
        log.info("%s", wait["queue_reason"])
    return wait
