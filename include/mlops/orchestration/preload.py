"""Import the tasks' libraries once, in the scheduler, so every task process starts warm.

Why: with the LocalExecutor the scheduler forks its worker processes when it starts,
and each worker forks one process per task (the Task SDK supervisor uses `os.fork`).
A module the scheduler imported before that is already in every task's `sys.modules`,
shared copy-on-write. Without it each of a training run's dozen task processes imports
pandas, scikit-learn, MLflow, Great Expectations or Evidently afresh: 8-15 s apiece on
two cores, which made the DAG five times slower than the same steps in one script
(docs/benchmarks.md). Celery workers and `dag.test()` are unaffected.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence

log = logging.getLogger(__name__)


def is_local_executor_scheduler(argv: Sequence[str], executor: str) -> bool:
    """True in the `airflow scheduler` process of a LocalExecutor deployment.

    Forked task processes inherit the scheduler's argv, so callers must also check
    that they are starting the scheduler job itself (see plugins/mlops_preload.py).
    """
    return len(argv) > 1 and argv[1] == "scheduler" and "LocalExecutor" in executor


def preload(modules: Sequence[str]) -> dict[str, float]:
    """Import each module; returns seconds per module. A module that fails to import is
    logged and skipped: the task that needs it will raise the real error itself."""
    # Tasks draw their plots headless; choose the backend before pyplot is imported.
    os.environ.setdefault("MPLBACKEND", "Agg")
    seconds: dict[str, float] = {}
    for name in modules:
        if name in sys.modules:
            continue
        start = time.perf_counter()
        try:
            # Import-time deprecation warnings are the libraries' business and would only
            # flood the scheduler log (skops alone triggers ~1 100 from Airflow's shims).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except Exception as exc:  # a preload must never stop the scheduler
            log.warning("preload of %s failed (%s: %s); tasks will import it themselves",
                        name, type(exc).__name__, exc)  # fmt: skip
            continue
        seconds[name] = time.perf_counter() - start
    return seconds
