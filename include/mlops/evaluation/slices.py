"""The primary metric per value of each slice feature (`gate.slices`), for the gate and the model card.

A model that is better on average can be worse for one group (rainy hours, one season);
scoring each value of a categorical feature on its own shows it. The scores come from the
same `compute_metrics` as every holdout score, so a slice of the whole holdout is scored
exactly as the holdout is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase

if TYPE_CHECKING:
    import pandas as pd

MISSING_VALUE = "missing"
"""How a slice of rows whose feature is missing is named."""

SliceScores = dict[str, dict[str, float]]
"""feature -> value -> the primary metric on the holdout rows with that value."""
SliceRows = dict[str, dict[str, int]]
"""feature -> value -> how many holdout rows have that value."""


@dataclass(frozen=True)
class Slices:
    scores: SliceScores
    rows: SliceRows


def slice_values(column: pd.Series) -> list[str]:
    """Each row's slice name: the value as text (`1`, not `1.0`, for whole numbers), or `missing`."""
    names = []
    for value in column.tolist():
        if value is None or (isinstance(value, float) and value != value):
            names.append(MISSING_VALUE)
        elif isinstance(value, float) and value.is_integer():
            names.append(str(int(value)))
        else:
            names.append(str(value))
    return names


def score_slices(
    use_case: UseCase,
    holdout_df: pd.DataFrame,
    y_pred: Any,
    y_proba: Any = None,
    labels: list[Any] | None = None,
) -> Slices:
    """The primary metric of `y_pred` (predictions on `holdout_df`, row for row) per slice value.

    A value on which the metric is undefined (one row for r2, one class for roc_auc) is
    left out of the scores and still counted in the rows.
    """
    import numpy as np

    from mlops.training.candidates import compute_metrics

    primary = use_case.gate.primary_metric
    y_true = holdout_df[use_case.target].to_numpy()
    predictions = np.asarray(y_pred)
    proba = np.asarray(y_proba) if y_proba is not None else None
    scores: SliceScores = {}
    rows: SliceRows = {}
    for feature in use_case.gate.slices:
        names = np.asarray(slice_values(holdout_df[feature]), dtype=object)
        scores[feature], rows[feature] = {}, {}
        for value in sorted(set(names.tolist()), key=_natural):
            mask = names == value
            rows[feature][value] = int(mask.sum())
            metrics = compute_metrics(
                use_case.task, y_true[mask], predictions[mask], proba[mask] if proba is not None else None, labels
            )
            if primary in metrics:
                scores[feature][value] = metrics[primary]
    return Slices(scores, rows)


def _natural(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text, `missing` last."""
    if value == MISSING_VALUE:
        return 2, 0.0, value
    try:
        return 0, float(value), value
    except ValueError:
        return 1, 0.0, value
