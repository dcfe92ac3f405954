"""Model cards kept where people look: on each version at registration, and the current champion's.

A version's card is logged on its training run (`model_card/v<version>.md`) and named by
the version's `mlops.model_card` tag, so the MLOps page and MLflow's artifact view show
the card as it was written when the version was registered. The current champion's card
is rewritten whenever `@champion` moves (the `model_card_<use case>` DAG, scheduled on the
champion Asset): `$MLOPS_HOME/cards/<use case>/champion.md` and the registered model's
description in MLflow.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlops._io import atomic_write_text
from mlops.config import UseCase, resolve_use_case
from mlops.lineage.card import render_card
from mlops.lineage.chain import Chain, build_chain
from mlops.lineage.gather import Target, gather
from mlops.mlflow import lineage as mlflow_lineage
from mlops.mlflow import registry
from mlops.naming import CHAMPION, TAG_MODEL_CARD, model_card_artifact
from mlops.settings import get_settings

log = logging.getLogger(__name__)


def version_card(use_case: UseCase | str, version: str) -> tuple[Chain, str]:
    """The lineage chain of one version as it stands now, and the card written from it."""
    uc = resolve_use_case(use_case)
    records = gather(Target(uc.model_name, str(version), uc))
    chain = build_chain(records)
    return chain, render_card(chain, records.use_case or uc)


def log_version_card(use_case: UseCase | str, version: str) -> str:
    """Log the version's card on its training run and tag the version with where it is; returns the path."""
    uc = resolve_use_case(use_case)
    info = registry.version_info(uc.model_name, str(version))
    if info.run_id is None:
        raise ValueError(f"{uc.model_name} v{version} names no training run; a card needs the run's lineage")
    path = model_card_artifact(info.version)
    mlflow_lineage.log_text(info.run_id, path, version_card(uc, info.version)[1])
    # Written after the card: a version carrying the tag has its card.
    registry.set_version_tags(uc.model_name, info.version, {TAG_MODEL_CARD: path})
    log.info("model card of %s v%s logged on run %s as %s", uc.model_name, info.version, info.run_id, path)
    return path


def champion_card_path(use_case: UseCase | str) -> Path:
    return get_settings().cards_dir / resolve_use_case(use_case).name / "champion.md"


def refresh_champion_card(use_case: UseCase | str) -> Path | None:
    """Rewrite the current champion's card (file and registered-model description); None without a champion."""
    uc = resolve_use_case(use_case)
    version = registry.alias_version(uc.model_name, CHAMPION)
    if version is None:
        log.info("%s has no @champion: no champion card to write", uc.model_name)
        return None
    chain, card = version_card(uc, version)
    moves = [c for c in chain.alias_history if c.alias == CHAMPION and c.change == "gained"]
    since = f"since {moves[-1].at}, {moves[-1].cause}" if moves else "since a time the tags do not record"
    text = f"*The current `@champion` of `{uc.model_name}`: v{version}, {since}.*\n\n" + card
    path = atomic_write_text(champion_card_path(uc), text)
    mlflow_lineage.set_model_description(uc.model_name, text)
    log.info("champion card of %s v%s written to %s", uc.model_name, version, path)
    return path
