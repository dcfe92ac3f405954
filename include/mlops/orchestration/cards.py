"""Build the model-card DAG of one use case: whenever `@champion` moves, rewrite the champion's card.

Scheduled on the champion Asset, which a promotion (`train_<use case>`'s
`publish_champion`) and a rollback (`rollback_model`, through the alias
`mlops.champion_moves`) update: the card in `$MLOPS_HOME/cards/<use case>/champion.md` and
the registered model's description always describe the version that serves.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, dag, task

from mlops.config import UseCase
from mlops.naming import card_dag_id
from mlops.orchestration.assets import champion_asset
from mlops.orchestration.defaults import REGISTRY, dag_kwargs


def _doc(use_case: UseCase) -> str:
    return f"""
### Model card of `{use_case.name}`'s champion

Runs when the Asset `{champion_asset(use_case).name}` gets an event (a promotion or a
rollback of `{use_case.model_name}`): writes the current `@champion`'s model card, built from
its lineage (training data, metrics per slice, gate, approval, code and data versions), to
`$MLOPS_HOME/cards/{use_case.name}/champion.md` and to the registered model's description in
MLflow. Each version's own card was logged with it at registration.
"""


def build_card_dag(use_case: UseCase) -> DAG:
    @dag(
        schedule=[champion_asset(use_case)],
        **dag_kwargs(
            card_dag_id(use_case.name),
            tags=["model card", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(minutes=30),
            owner=use_case.owner,
            access=use_case.access,
        ),
    )
    def model_card() -> None:
        # Reads the registry and writes a file: as quick and idempotent as moving an alias.
        @task(**REGISTRY)
        def refresh_champion_card(**context: Any) -> str | None:
            from mlops.lineage import cards

            path = cards.refresh_champion_card(use_case)
            return str(path) if path is not None else None

        refresh_champion_card()

    return model_card()
