"""Every Asset of the platform, named in one place.

Producers list them in `outlets`, consumers name them in `schedule`. The `x-`
scheme marks them as ours so Airflow does not try to normalise the URI.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

from mlops.config import UseCase


def champion_asset(use_case: UseCase) -> Asset:
    """Updated whenever `@champion` moves to a new version: by a promotion (the training DAG's
    `publish_champion`) or a rollback (the rollback DAG's, through `champion_moves()`)."""
    return Asset(
        name=f"{use_case.name}.champion",
        uri=f"x-mlops://models/{use_case.model_name}/champion",
        group="model",
    )


def challenger_asset(use_case: UseCase) -> Asset:
    """Updated when a candidate that passed the gate becomes `@shadow` or `@canary` (deployment.strategy);
    its event's extra names the version. `rollout_<use case>` is scheduled on it."""
    return Asset(
        name=f"{use_case.name}.challenger",
        uri=f"x-mlops://models/{use_case.model_name}/challenger",
        group="model",
    )


def champion_moves() -> AssetAlias:
    """The outlet of a task that moves `@champion` of a model known only at run time (rollback).

    The task adds an event for that use case's `champion_asset` only; DAGs scheduled on
    the champion Asset wake up as they do after a promotion.
    """
    return AssetAlias(name="mlops.champion_moves", group="model")


def predictions_asset(use_case: UseCase) -> Asset:
    """Updated when a batch-scoring partition lands in the prediction log."""
    return Asset(name=f"{use_case.name}.predictions", uri=f"x-mlops://predictions/{use_case.name}", group="dataset")


def drift_report_asset(use_case: UseCase) -> Asset:
    return Asset(name=f"{use_case.name}.monitoring", uri=f"x-mlops://reports/{use_case.name}", group="report")
