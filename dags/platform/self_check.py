"""
### Platform self-check

Verifies the plumbing every other DAG depends on: the use-case configs parse,
the MLflow tracking server answers, the state folder is writable, and the feature
store's registry matches `features/` (a definition changed without `feast apply` is named). It also reports
whether task processes start with their libraries preloaded (informational).
Trigger it by hand after `mlops stack up`, or let it run daily.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from mlops.orchestration.defaults import DAG_DEFAULTS, MAX_ACTIVE_RUNS, RUN_FAILURE_CALLBACK


@dag(
    dag_id="platform_self_check",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    default_args={**DAG_DEFAULTS, "retries": 1},
    on_failure_callback=RUN_FAILURE_CALLBACK,
    tags=["platform"],
    doc_md=__doc__,
)
def platform_self_check() -> None:
    @task
    def check_configs() -> dict[str, object]:
        from mlops.platform import health

        return health.check_configs().to_dict()

    @task
    def check_mlflow() -> dict[str, object]:
        from mlops.platform import health

        return health.check_mlflow().to_dict()

    @task
    def check_state_dir() -> dict[str, object]:
        from mlops.platform import health

        return health.check_state_dir().to_dict()

    @task
    def check_warm_start() -> dict[str, object]:
        # Must run before this task imports anything heavy itself: health imports only config.
        from mlops.platform import health

        return health.check_warm_start().to_dict()

    @task
    def check_feature_store() -> dict[str, object]:
        from mlops.platform import health

        return health.check_feature_store().to_dict()

    check_warm_start() >> check_configs() >> check_mlflow() >> check_state_dir() >> check_feature_store()


self_check_dag = platform_self_check()

if __name__ == "__main__":
    self_check_dag.test()
