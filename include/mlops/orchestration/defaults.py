"""Named task-argument profiles, each with the reason for its numbers.

Every DAG of the platform builds its `default_args` from `DAG_DEFAULTS` and picks
a profile per task, so retries and time-outs are decided once, deliberately.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum

from mlops.orchestration.notifiers import MlopsNotifier
from mlops.orchestration.team_roles import access_control

if TYPE_CHECKING:
    from mlops.config import Access

# Test-only. A factor in (0, 1] that shortens every retry delay below (not the retry counts
# nor the time-outs), so a test that watches Airflow's own retries under the real scheduler
# (tests/reliability/test_scheduler_faults.py) sees the same policy in seconds instead of
# minutes. Unset, the delays are exactly as written; a deployment never sets it.
RETRY_SCALE_VARIABLE = "MLOPS_TEST_RETRY_SCALE"


def _retry_scale() -> float:
    raw = os.environ.get(RETRY_SCALE_VARIABLE)
    if raw is None:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = 0.0
    if not 0 < scale <= 1:
        raise ValueError(f"{RETRY_SCALE_VARIABLE}={raw!r} must be a number in (0, 1]; unset it outside tests")
    return scale


RETRY_SCALE = _retry_scale()


def _delay(**amount: float) -> timedelta:
    """A retry delay of the profiles, times the test-only RETRY_SCALE (1 unless a test sets it)."""
    return timedelta(**amount) * RETRY_SCALE


# Reading from a source, MLflow or the registry: failures are usually transient
# (a server restarting), so retry with exponential backoff.
NETWORK_BOUND: dict[str, Any] = {
    "retries": 3,
    "retry_delay": _delay(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": _delay(minutes=5),
    "execution_timeout": timedelta(minutes=30),
}

# Fitting a model: a killed worker is worth one retry; a real bug will not fix itself.
COMPUTE_BOUND: dict[str, Any] = {
    "retries": 2,
    "retry_delay": _delay(seconds=30),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=1),
}

# Quality gates (data validation, model evaluation): the data they read will not
# change on retry, so a retry only delays the failure.
GATE: dict[str, Any] = {
    "retries": 0,
    "execution_timeout": timedelta(minutes=20),
}

# Moving registry aliases: quick, idempotent, retried for transient server errors.
REGISTRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay": _delay(seconds=15),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(minutes=10),
}

DAG_DEFAULTS: dict[str, Any] = {
    "owner": "mlops",
    **NETWORK_BOUND,
    # Task-level, so it fires once a task has exhausted its retries, naming the task and error.
    "on_failure_callback": MlopsNotifier.on_failure(),
}

# DAG-level (each @dag passes it as on_failure_callback): a run can fail with no task failing,
# when its dagrun_timeout skips what is left, which no task callback sees. It stays silent for
# a run failed by a task, which the task-level callback above has already reported.
RUN_FAILURE_CALLBACK = MlopsNotifier.on_run_failure()

# One run at a time per DAG: two training runs of one use case would race on
# the registry aliases, and two monitoring runs would double-trigger retraining.
MAX_ACTIVE_RUNS = 1

# Any fixed past date: with catchup=False it only bounds the schedule, and a constant keeps
# the serialized DAG stable between parses.
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def dag_kwargs(
    dag_id: str,
    *,
    tags: list[str],
    doc_md: str,
    dagrun_timeout: timedelta,
    owner: str = DAG_DEFAULTS["owner"],
    access: Access | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The `@dag(...)` arguments every platform DAG shares, plus its own (params, ...).

    One run at a time, no catch-up, the default task profile with the use case's owner,
    the roles of its `access`, and the run-level failure alert: decided here once instead
    of in every builder. The schedule stays at the `@dag(schedule=...)` call, where a
    reader looks for it.
    """
    return {
        "dag_id": dag_id,
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": MAX_ACTIVE_RUNS,
        "default_args": {**DAG_DEFAULTS, "owner": owner},
        "dagrun_timeout": dagrun_timeout,
        "on_failure_callback": RUN_FAILURE_CALLBACK,
        "tags": tags,
        "doc_md": doc_md,
        "access_control": access_control(access),
        **extra,
    }
