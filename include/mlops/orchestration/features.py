"""Build the `materialize_features` DAG: apply → ingest offline → materialize online → publish.

Hourly. Each run registers the definitions of `features/` (`feast apply`: a no-op when
nothing changed), runs the repository's feature pipelines into the offline store (each
view's table replaced whole; the same source gives the same bytes) and loads the online
store up to the run's own time from where the last run stopped (Feast's
`materialize_incremental`; the first run starts at the oldest offline row), so a re-run
writes nothing twice. The Asset `features.online` says the online store is loaded up to that
time; training of a store-backed use case reads the offline store and says what to run
when it holds nothing for its window.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, dag, task

from mlops.naming import MATERIALIZE_FEATURES_DAG_ID
from mlops.orchestration.defaults import COMPUTE_BOUND, dag_kwargs

DAG_ID = MATERIALIZE_FEATURES_DAG_ID
SCHEDULE = "@hourly"


def online_features_asset() -> Asset:
    """Updated by every materialize_features run; its extra names the views and how far they are loaded."""
    return Asset(name="features.online", uri="x-mlops://features/online", group="features")


def build_materialize_dag() -> DAG:
    @dag(
        schedule=SCHEDULE,
        **dag_kwargs(DAG_ID, tags=["features", "platform"], doc_md=__doc__ or "", dagrun_timeout=timedelta(minutes=50)),
    )
    def materialize_features() -> None:
        @task(**COMPUTE_BOUND)
        def apply_definitions() -> list[str]:
            from mlops.features import store

            return store.apply_definitions(store.FeatureRepo.default())

        @task(**COMPUTE_BOUND)
        def ingest_offline(views: list[str]) -> dict[str, int]:
            from mlops.features import store
            from mlops.settings import get_settings

            return store.ingest_offline(store.FeatureRepo.default(), get_settings().project_root)

        @task(**COMPUTE_BOUND, outlets=[online_features_asset()])
        def materialize_online(written: dict[str, int], **context: Any) -> dict[str, Any]:
            import pendulum

            from mlops.features import store

            # The run's own time, not the worker's: a re-run of the same run loads the same span.
            end = pendulum.instance(context["dag_run"].run_after).in_timezone("UTC")
            views = store.materialize(store.FeatureRepo.default(), end)
            result = {"views": views, "end": end.isoformat(), "offline_rows": written}
            context["outlet_events"][online_features_asset()].extra = result
            return result

        materialize_online(ingest_offline(apply_definitions()))

    return materialize_features()
