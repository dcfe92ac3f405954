"""How well the champion predicts the window: the rows whose label has arrived, scored as the holdout was.

`window_performance` uses the training holdout's own metric function, so the window's
numbers compare directly with the champion's holdout metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# The prediction log's columns monitoring reads besides the features.
PREDICTION = "prediction"
LABEL = "label"


def is_probability(values: pd.Series) -> bool:
    """Floats within [0, 1], not all integral: positive-class probabilities rather than class labels."""
    import numpy as np
    import pandas as pd

    if not pd.api.types.is_float_dtype(values.dtype):
        return False
    finite = values.dropna().to_numpy()
    return (
        bool(finite.size)
        and bool(((finite >= 0) & (finite <= 1)).all())
        and not bool(np.all(finite == np.round(finite)))
    )


def window_performance(task: str, y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """Metrics of the labelled rows with the holdout's own function (mlops.training.candidates.compute_metrics).

    Classification predictions may be labels or positive-class probabilities; the
    latter are thresholded at 0.5 for the label metrics and add roc_auc/log_loss.
    """
    import numpy as np
    import pandas as pd

    from mlops.training.candidates import compute_metrics

    truth, pred = pd.Series(list(y_true)), pd.Series(list(y_pred))
    if truth.empty:
        return {}
    if task == "regression":
        return compute_metrics(task, truth.to_numpy(dtype="float64"), pred.to_numpy(dtype="float64"))
    # Labels arrive through a float column (NaN until they arrive): give integral values back their ints.
    if pd.api.types.is_float_dtype(truth.dtype) and bool((truth == truth.round()).all()):
        truth = truth.astype(int)
    if is_probability(pred.astype("float64") if pd.api.types.is_numeric_dtype(pred.dtype) else pred):
        proba = pred.to_numpy(dtype="float64")
        return compute_metrics(task, truth.to_numpy(), (proba >= 0.5).astype(int), proba, labels=[0, 1])
    if pd.api.types.is_float_dtype(pred.dtype) and bool((pred == pred.round()).all()):
        pred = pred.astype(int)
    return compute_metrics(task, np.asarray(truth), np.asarray(pred))
