"""Build the hand-triggered rollback DAG: move `@champion` back, recording who asked and why."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from mlops.config import UseCase
from mlops.orchestration.assets import champion_asset, champion_moves
from mlops.orchestration.defaults import REGISTRY, dag_kwargs

DOC = """
### Roll back a model

Trigger by hand with **model_name**, an optional **version** (default: the `@previous`
version) and a **reason**. Moves `@champion` to that version, keeps the replaced
champion as `@previous`, and records who asked and why as model-version tags.
Emits the use case's champion Asset event, as a promotion does, so DAGs scheduled on it
hear about the rollback. The prediction service picks the new champion up on its next
alias poll.
"""


def build_rollback_dag(use_cases: list[UseCase]) -> DAG:
    model_names = sorted({use_case.model_name for use_case in use_cases}) or ["none"]
    champion_assets = {name: [champion_asset(uc) for uc in use_cases if uc.model_name == name] for name in model_names}

    @dag(
        schedule=None,
        **dag_kwargs(
            "rollback_model",
            tags=["registry", "rollback"],
            doc_md=DOC,
            dagrun_timeout=timedelta(minutes=30),
            params={
                "model_name": Param(model_names[0], type="string", enum=model_names),
                "version": Param(None, type=["null", "string"], description="Target version; default @previous"),
                "reason": Param("", type="string", minLength=3, description="Why roll back (recorded)"),
            },
        ),
    )
    def rollback_model() -> None:
        @task(**REGISTRY)
        def move_champion(**context: Any) -> dict[str, Any]:
            from mlops.promotion import rollback

            params = context["params"]
            requested_by = context["dag_run"].triggering_user_name or "unknown"
            result = rollback.rollback(
                params["model_name"], params.get("version"), reason=params["reason"], requested_by=requested_by
            )
            return result.to_dict()

        # Which use case's Asset moved is known only at run time: the event goes out through
        # an alias, for that Asset alone. A rollback that moved nothing emits nothing.
        @task(outlets=[champion_moves()], retries=0)
        def publish_champion(rollback: dict[str, Any], **context: Any) -> dict[str, Any]:
            if rollback["action"] != "rolled_back":
                raise AirflowSkipException(f"@champion did not move: {rollback['action']}")
            extra = {key: rollback[key] for key in ("champion", "replaced", "reason", "requested_by")}
            for asset in champion_assets[rollback["model_name"]]:
                context["outlet_events"][champion_moves()].add(asset, extra={"action": "rollback", **extra})
            return rollback

        publish_champion(move_champion())

    return rollback_model()
