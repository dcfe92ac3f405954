"""How well the champion predicts the window: the rows whose label has arrived, scored as the holdout was.

`window_performance` uses the training holdout's own metric function, so the window's
numbers compare directly with the champion's holdout metrics. `measure_performance`
reads a prediction-log frame: the class, the `proba__<label>` columns when the log has
them, and says for every metric the task allows that it could not compute, why.
`performance_by_version` splits the champion-role rows by `model_version`, so a window
that spans a promotion never mixes two models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.config import CLASSIFICATION_METRICS, REGRESSION_METRICS
from mlops.naming import PROBA_COLUMN_PREFIX, ROLE_CHAMPION, ROLE_SHADOW, positive_class

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# The prediction log's columns monitoring reads besides the features.
PREDICTION = "prediction"
LABEL = "label"
ROLE = "role"
MODEL_VERSION = "model_version"
PROBABILITY_METRICS = ("roc_auc", "log_loss")


@dataclass(frozen=True)
class Performance:
    """Metrics of some labelled rows, and for each metric the task allows but that is missing, why."""

    rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "metrics": self.metrics, "unavailable": self.unavailable}


def task_metrics(task: str) -> list[str]:
    """Every metric the config allows as a primary metric for `task`."""
    return list(REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS)


def proba_columns(frame: pd.DataFrame) -> list[str]:
    """The frame's `proba__<label>` columns, in the order the log has them (the model's `classes_`)."""
    return [str(c) for c in frame.columns if str(c).startswith(PROBA_COLUMN_PREFIX)]


def proba_classes(columns: Sequence[str]) -> list[str]:
    """The class labels the proba columns name, as strings (the log's column names are text)."""
    return [c[len(PROBA_COLUMN_PREFIX) :] for c in columns]


def champion_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the champion answered; a log written before roles existed is all champion."""
    if ROLE not in frame.columns:
        return frame
    return frame[frame[ROLE].fillna(ROLE_CHAMPION).astype(str) == ROLE_CHAMPION]


def served_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows answered to a client: a shadow's rows (scored beside the champion, never answered) left out.

    Drift, data quality and the label lag read these, so a shadow rollout never counts a
    request twice nor puts its challenger's predictions into the champion's window.
    """
    if ROLE not in frame.columns:
        return frame
    return frame[frame[ROLE].fillna(ROLE_CHAMPION).astype(str) != ROLE_SHADOW]


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

    Classification predictions may be labels or positive-class probabilities (a log
    written before the `proba__` columns); the latter are thresholded at 0.5 for the
    label metrics and add roc_auc/log_loss.
    """
    import numpy as np
    import pandas as pd

    from mlops.training.candidates import compute_metrics

    truth, pred = pd.Series(list(y_true)), pd.Series(list(y_pred))
    if truth.empty:
        return {}
    if task == "regression":
        return compute_metrics(task, truth.to_numpy(dtype="float64"), pred.to_numpy(dtype="float64"))
    truth = _integral_as_int(truth)
    if is_probability(pred.astype("float64") if pd.api.types.is_numeric_dtype(pred.dtype) else pred):
        proba = pred.to_numpy(dtype="float64")
        return compute_metrics(task, truth.to_numpy(), (proba >= 0.5).astype(int), proba, labels=[0, 1])
    return compute_metrics(task, np.asarray(truth), np.asarray(_integral_as_int(pred)))


def measure_performance(task: str, labelled: pd.DataFrame) -> Performance:
    """Every metric of `task` on labelled prediction-log rows, each missing one with its reason.

    Classifiers use the `proba__<label>` columns for roc_auc and log_loss (binary: the
    positive class, `mlops.naming.positive_class`); without them only the label metrics
    can be computed, and the summary says so.
    """
    wanted = task_metrics(task)
    rows = len(labelled)
    if not rows:
        return Performance(0, {}, dict.fromkeys(wanted, "no labels have arrived for this window"))
    if PREDICTION not in labelled.columns:
        return Performance(rows, {}, dict.fromkeys(wanted, "the prediction log has no prediction column"))
    if task == "regression":
        metrics = window_performance(task, labelled[LABEL], labelled[PREDICTION])
        return Performance(rows, metrics, _why_not(task, wanted, metrics, labelled, []))
    columns = proba_columns(labelled)
    if columns and labelled[columns].notna().all(axis=None):
        metrics = _classification_with_proba(labelled, columns)
    else:
        metrics = window_performance(task, labelled[LABEL], labelled[PREDICTION])
    return Performance(rows, metrics, _why_not(task, wanted, metrics, labelled, columns))


def performance_by_version(task: str, labelled: pd.DataFrame) -> dict[str, Performance]:
    """Performance of each model version's champion-role rows (a log without `model_version` is one "unknown")."""
    rows = champion_rows(labelled)
    if MODEL_VERSION not in rows.columns:
        return {"unknown": measure_performance(task, rows)} if len(rows) else {}
    versions = rows[MODEL_VERSION].astype("string").fillna("unknown")
    return {str(v): measure_performance(task, rows[versions == v]) for v in sorted(versions.unique(), key=_version_key)}


# --------------------------------------------------------------------------- helpers


def _version_key(version: object) -> tuple[int, str]:
    text = str(version)
    return (int(text), "") if text.isdigit() else (1 << 62, text)


def _integral_as_int(values: pd.Series) -> pd.Series:
    """Labels arrive through a float column (NaN until they arrive): give integral values back their ints."""
    import pandas as pd

    if pd.api.types.is_float_dtype(values.dtype) and bool((values == values.round()).all()):
        return values.astype(int)
    return values


def _as_class_names(values: pd.Series) -> np.ndarray[Any, Any]:
    """Labels and predictions as the text the proba column names hold (`proba__1` names class "1")."""
    import numpy as np

    return np.asarray([str(v) for v in _integral_as_int(values)], dtype=object)


def _classification_with_proba(labelled: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    from mlops.training.candidates import compute_metrics

    classes = proba_classes(columns)
    truth, pred = _as_class_names(labelled[LABEL]), _as_class_names(labelled[PREDICTION])
    proba = labelled[columns].to_numpy(dtype="float64")
    if len(classes) == 2:
        # compute_metrics scores the last column, which is the positive class the log names.
        assert classes[-1] == positive_class(classes)
    try:
        return compute_metrics("classification", truth, pred, proba, labels=classes)
    except ValueError:
        # A label outside the classes the model knows: the label metrics still hold.
        return compute_metrics("classification", truth, pred)


def _why_not(
    task: str, wanted: list[str], metrics: dict[str, float], labelled: pd.DataFrame, columns: list[str]
) -> dict[str, str]:
    """A sentence for each wanted metric that is missing from `metrics`."""
    present_classes = sorted({str(v) for v in _integral_as_int(labelled[LABEL])})
    reasons: dict[str, str] = {}
    for metric in (m for m in wanted if m not in metrics):
        if task == "regression":
            reasons[metric] = (
                f"{metric} needs at least two labelled rows"
                if len(labelled) < 2
                else f"{metric} is undefined on this window's labels"
            )
        elif metric in PROBABILITY_METRICS and not columns:
            reasons[metric] = (
                f"no class probabilities in the prediction log (only the class was logged): {metric} needs them"
            )
        elif metric in PROBABILITY_METRICS and labelled[columns].isna().any(axis=None):
            reasons[metric] = f"some labelled rows lack class probabilities: {metric} needs them on every row"
        elif metric in PROBABILITY_METRICS and len(present_classes) < 2:
            reasons[metric] = f"the window's labels hold one class ({present_classes[0]}): {metric} needs both"
        elif metric == "roc_auc" and len(columns) > 2:
            known = proba_classes(columns)
            reasons[metric] = (
                f"the window's labels hold {len(set(present_classes) & set(known))} of the {len(known)} classes: "
                "roc_auc (one-vs-rest) needs every class"
            )
        elif metric in PROBABILITY_METRICS:
            reasons[metric] = (
                f"the window's labels {present_classes} are not all classes of the logged probabilities "
                f"{proba_classes(columns)}"
            )
        else:
            reasons[metric] = f"{metric} is undefined on this window's labels"
    return reasons
