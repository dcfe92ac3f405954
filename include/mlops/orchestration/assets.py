"""Every Asset of the platform, named in one place.

Producers list them in `outlets`, consumers name them in `schedule`. The `x-`
scheme marks them as ours so Airflow does not try to normalise the URI.
"""

from __future__ import annotations

from airflow.sdk import Asset

from mlops.config import UseCase


def champion_asset(use_case: UseCase) -> Asset:
    """Updated whenever `@champion` moves to a new version (promotion or rollback)."""
    return Asset(
        name=f"{use_case.name}.champion",
        uri=f"x-mlops://models/{use_case.model_name}/champion",
        group="model",
    )


def snapshot_asset(use_case: UseCase) -> Asset:
    """Updated when a validated training snapshot is written and versioned."""
    return Asset(name=f"{use_case.name}.snapshot", uri=f"x-mlops://data/{use_case.name}/snapshot", group="dataset")


def predictions_asset(use_case: UseCase) -> Asset:
    """Updated when a batch-scoring partition lands in the prediction log."""
    return Asset(
        name=f"{use_case.name}.predictions", uri=f"x-mlops://predictions/{use_case.name}", group="dataset"
    )


def drift_report_asset(use_case: UseCase) -> Asset:
    return Asset(name=f"{use_case.name}.monitoring", uri=f"x-mlops://reports/{use_case.name}", group="report")
