"""Warm task processes: the LocalExecutor scheduler imports the tasks' libraries before it
forks its workers (the reasons and numbers are in mlops/orchestration/preload.py).

A listener's `on_starting` runs when the scheduler's Job is created, before the executor
starts and forks. Set MLOPS_SCHEDULER_PRELOAD="" to turn it off.
"""

from __future__ import annotations

import logging
import sys

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)


class SchedulerPreload:
    @hookimpl
    def on_starting(self, component: object) -> None:
        # Task processes call on_starting too, with argv inherited from the scheduler;
        # only the scheduler's own Job (not yet typed at this point) may preload.
        if type(component).__name__ != "Job":
            return
        from airflow.configuration import conf

        from mlops.orchestration.preload import is_local_executor_scheduler, preload
        from mlops.settings import get_settings

        if not is_local_executor_scheduler(sys.argv, conf.get("core", "executor")):
            return
        seconds = preload(get_settings().scheduler_preload)
        log.info("preloaded %d modules for task processes in %.1f s", len(seconds), sum(seconds.values()))


class MLOpsPreloadPlugin(AirflowPlugin):
    name = "mlops_preload"
    listeners = [SchedulerPreload()]
