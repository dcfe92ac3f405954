"""Monitoring reports: the folder each run writes, and the Evidently reports saved in it.

The only module that imports Evidently, inside the functions: its import takes ~9 s,
and DAG files import the monitoring package at parse time. Callers get plain results
back (`DriftResult`, `ColumnDrift`, the paths written), never an Evidently object, so
an Evidently upgrade touches this file alone.

Every report is saved as `<name>.html` and `<name>.json` through a temporary file and
a rename, so a reader never sees half a report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops._io import atomic_write_text
from mlops.monitoring.drift import ColumnDrift, ColumnKind, DriftResult
from mlops.monitoring.performance import LABEL, PREDICTION, is_probability, proba_classes, proba_columns
from mlops.naming import positive_class, report_folder_name
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

# Evidently's display names of its drift tests -> the names mlops.monitoring.drift uses.
EVIDENTLY_TESTS = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
}
_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"


class ReportWriteError(OSError):
    """A report file could not be written; the message names the path."""


# --------------------------------------------------------------------------- report files


def report_dir(use_case: str, run_key: str, root: Path | None = None) -> Path:
    """root (default settings.reports_dir) / use_case / run_key, the key made safe as a folder name."""
    return (root or get_settings().reports_dir) / use_case / report_folder_name(run_key)


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` via a temp file and rename, so a half-written file never looks complete."""
    try:
        return atomic_write_text(path, text)
    except OSError as exc:
        raise ReportWriteError(
            f"could not write monitoring report {path}: {exc.strerror or exc}. "
            f"Check that {path.parent} is writable (reports live under MLOPS_HOME/reports)."
        ) from exc


def mark_sampled(path: Path, note: str) -> None:
    """Put `note` at the top of a saved HTML report (a report rendered on a sample says so)."""
    import html

    text = path.read_text()
    banner = (
        '<div style="padding:8px 12px;margin:8px;border:1px solid #c90;background:#fff8e1;font-family:sans-serif">'
        f"{html.escape(note)}</div>"
    )
    at = text.find("<body")
    at = text.find(">", at) + 1 if at >= 0 else 0
    write_atomic(path, text[:at] + banner + text[at:])


def _save(snapshot: Any, directory: Path, name: str) -> list[Path]:
    return [
        write_atomic(directory / f"{name}.html", snapshot.get_html_str(as_iframe=False)),
        write_atomic(directory / f"{name}.json", snapshot.json()),
    ]


# --------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class EvidentlyDrift:
    """Evidently's drift of the compared columns, of `prediction` when asked, and the files saved."""

    drift: DriftResult
    prediction_drift: ColumnDrift | None
    files: list[Path] = field(default_factory=list)


def evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    drift_share_threshold: float = 0.5,
    prediction_kind: ColumnKind | None = None,
    save_to: Path | None = None,
) -> EvidentlyDrift:
    """Run Evidently's DataDriftPreset (and ValueDrift on `prediction` when `prediction_kind` is given).

    Columns must already be usable (see mlops.monitoring.drift.usable_columns). With
    `save_to`, the report is saved there as drift.html and drift.json.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    columns = [*numeric, *categorical]
    with_prediction = prediction_kind is not None
    num = [*numeric, *([PREDICTION] if prediction_kind == "numeric" else [])]
    cat = [*categorical, *([PREDICTION] if prediction_kind == "categorical" else [])]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    keep = [*columns, *([PREDICTION] if with_prediction else [])]
    metrics: list[Any] = [DataDriftPreset(columns=columns, drift_share=drift_share_threshold)] if columns else []
    if with_prediction:
        metrics.append(ValueDrift(column=PREDICTION))
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(current[keep], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[keep], data_definition=definition),
    )
    kinds: dict[str, ColumnKind] = {**dict.fromkeys(numeric, "numeric"), **dict.fromkeys(categorical, "categorical")}
    if prediction_kind is not None:
        kinds[PREDICTION] = prediction_kind
    by_column = _column_drifts(snapshot.dict(), kinds)
    return EvidentlyDrift(
        drift=DriftResult([by_column[c] for c in columns], drift_share_threshold=drift_share_threshold),
        prediction_drift=by_column[PREDICTION] if with_prediction else None,
        files=_save(snapshot, save_to, "drift") if save_to is not None else [],
    )


def _column_drifts(result: dict[str, Any], kinds: dict[str, ColumnKind]) -> dict[str, ColumnDrift]:
    """Each ValueDrift of an Evidently result as a ColumnDrift: its score from the metric, its verdict from the test."""
    scores: dict[str, tuple[str, float, float]] = {}
    for metric in result["metrics"]:
        config = metric.get("config", {})
        if config.get("type") == _VALUE_DRIFT:
            test = EVIDENTLY_TESTS.get(config.get("method", ""), str(config.get("method")))
            scores[config["column"]] = (test, float(metric["value"]), float(config.get("threshold") or math.nan))
    drifted: dict[str, bool] = {}
    for test_result in result["tests"]:
        params = test_result.get("metric_config", {}).get("params", {})
        if params.get("type") == _VALUE_DRIFT:
            drifted[params["column"]] = test_result["status"] == "FAIL"
    return {name: ColumnDrift(name, kind, *scores[name], drifted[name]) for name, kind in kinds.items()}


# --------------------------------------------------------------------------- data quality and performance


def save_data_quality_report(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str], directory: Path
) -> list[Path]:
    """Evidently's DataSummaryPreset of the window against the reference, saved as data_quality.html/.json."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    keep = [*numeric, *categorical]
    # Evidently refuses a reference that lacks some of the columns: summarise the window alone then.
    with_reference = all(c in reference.columns for c in keep)
    snapshot = Report([DataSummaryPreset()]).run(
        current_data=Dataset.from_pandas(current[keep], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[keep], data_definition=definition) if with_reference else None,
    )
    return _save(snapshot, directory, "data_quality")


def _class_names(values: pd.Series) -> pd.Series:
    """Class labels as text, integral floats (a label column with gaps) as their ints: 1.0 -> "1"."""
    import pandas as pd

    if pd.api.types.is_float_dtype(values.dtype) and bool((values == values.round()).all()):
        values = values.astype(int)
    return values.astype(str)


def save_performance_report(task: str, labelled: pd.DataFrame, directory: Path) -> list[Path]:
    """Evidently's Regression- or ClassificationPreset on the labelled rows, saved as performance.html/.json.

    Classification predictions may be positive-class probabilities, binary labels or
    labels of several classes; each needs its own Evidently task definition.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    frame = labelled[[LABEL, PREDICTION]]
    if task == "regression":
        definition = DataDefinition(
            numerical_columns=[LABEL, PREDICTION], regression=[Regression(target=LABEL, prediction=PREDICTION)]
        )
        preset: Any = RegressionPreset()
    else:
        if is_probability(frame[PREDICTION]):
            kind: Any = BinaryClassification(target=LABEL, prediction_probas=PREDICTION, pos_label=1)
            frame = frame.assign(**{LABEL: frame[LABEL].astype(int)})
        else:
            # Evidently takes str or int labels, not the float a label column with gaps holds;
            # as text they also match the class names of the `proba__<label>` columns.
            frame = frame.assign(**{c: _class_names(frame[c]) for c in (LABEL, PREDICTION)})
            columns = proba_columns(labelled)
            if len(columns) == 2 and labelled[columns].notna().all(axis=None):
                positive = str(positive_class(proba_classes(columns)))
                frame = frame.assign(**{columns[-1]: labelled[columns[-1]].astype("float64")})
                kind = BinaryClassification(
                    target=LABEL, prediction_labels=PREDICTION, prediction_probas=columns[-1], pos_label=positive
                )
            elif frame[LABEL].nunique() <= 2 and frame[PREDICTION].nunique() <= 2:
                positive = max(set(frame[LABEL]) | set(frame[PREDICTION]))
                kind = BinaryClassification(target=LABEL, prediction_labels=PREDICTION, pos_label=positive)
            else:
                kind = MulticlassClassification(target=LABEL, prediction_labels=PREDICTION)
        definition = DataDefinition(categorical_columns=[LABEL, PREDICTION], classification=[kind])
        preset = ClassificationPreset()
    snapshot = Report([preset]).run(current_data=Dataset.from_pandas(frame, data_definition=definition))
    return _save(snapshot, directory, "performance")
