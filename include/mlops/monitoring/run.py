"""One monitoring run: drift, data quality and (with labels) performance of a window, saved as reports.

The drift numbers behind the decision come from Evidently itself for windows up to
`FAST_PATH_ROWS` rows, and above that from `mlops.monitoring.drift` (the same default
tests, computed exactly and far faster), with the Evidently reports rendered on a
bounded sample. A report Evidently cannot build is noted in the summary, never fatal:
the decision needs the numbers, not the pages. A report that cannot be *written*
raises `ReportWriteError`, since a run without its files must not look complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase
from mlops.monitoring import drift
from mlops.monitoring.drift import ColumnDrift, ColumnKind, DriftResult, SkippedColumn
from mlops.monitoring.performance import LABEL, PREDICTION, is_probability, window_performance
from mlops.monitoring.reports import (
    EvidentlyDrift,
    ReportWriteError,
    evidently_drift,
    report_dir,
    save_data_quality_report,
    save_performance_report,
    write_atomic,
)

if TYPE_CHECKING:
    import pandas as pd

# Above this many window rows the decision uses mlops.monitoring.drift; Evidently's own
# run grows to ~56 s and 1 GB RSS at 1M rows (benchmarks/drift/README.md).
FAST_PATH_ROWS = 100_000
# Rows of the window (and of the reference) the HTML reports are rendered on above FAST_PATH_ROWS.
REPORT_SAMPLE_ROWS = 50_000


@dataclass
class MonitoringSummary:
    use_case: str
    run_key: str
    rows: int
    labelled_rows: int
    drift: DriftResult
    drift_engine: str
    """'evidently' (full window), 'fast' (mlops.monitoring.drift on the full window) or 'none' (empty window)."""
    prediction_drift: ColumnDrift | None = None
    prediction_reference: str | None = None
    """What the window's predictions were compared with: 'prediction' (the reference's
    own predictions) or 'target' (the training labels)."""
    performance: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    report_sample_rows: int | None = None
    report_dir: Path | None = None
    report_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Anything skipped or failed on the way (a report Evidently could not build, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "use_case": self.use_case,
            "run_key": self.run_key,
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "drift": self.drift.to_dict(),
            "drift_engine": self.drift_engine,
            "prediction_drift": asdict(self.prediction_drift) if self.prediction_drift else None,
            "prediction_reference": self.prediction_reference,
            "performance": self.performance,
            "champion_metrics": self.champion_metrics,
            "report_sample_rows": self.report_sample_rows,
            "report_dir": str(self.report_dir) if self.report_dir else None,
            "report_files": [str(p) for p in self.report_files],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class _DriftColumns:
    """The features both sides can be compared on, by kind, and the others with the reason."""

    numeric: list[str]
    categorical: list[str]
    skipped: list[SkippedColumn]


@dataclass(frozen=True)
class _ReportFrames:
    """What the Evidently reports are rendered on: the whole frames, or samples of a large window."""

    current: pd.DataFrame
    reference: pd.DataFrame
    sampled: bool


def run_monitoring(
    use_case: UseCase,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    run_key: str,
    champion_metrics: Mapping[str, float] | None = None,
    reports_root: Path | None = None,
    fast_path_rows: int = FAST_PATH_ROWS,
    report_sample_rows: int = REPORT_SAMPLE_ROWS,
    seed: int = 0,
) -> MonitoringSummary:
    """Compute drift, data quality and (with labels) performance of a window; save the reports.

    `current` is a prediction-log frame (features, `prediction`, optional `label`);
    `reference` the champion's training data (features, the target, optionally
    `prediction`). Reports go to `reports_root/<use_case>/<run_key>/` (default
    settings.reports_dir); `summary.json` is written last, so its presence marks a
    complete run.
    """
    directory = report_dir(use_case.name, run_key, reports_root)
    labelled = _labelled_rows(current)
    summary = MonitoringSummary(
        use_case=use_case.name,
        run_key=run_key,
        rows=len(current),
        labelled_rows=len(labelled),
        drift=DriftResult([], drift_share_threshold=use_case.monitoring.drift_share_threshold),
        drift_engine="none",
        champion_metrics=dict(champion_metrics or {}),
        report_dir=directory,
    )
    if current.empty:
        return _summarise_empty_window(summary, directory)

    columns = _drift_columns(use_case, reference, current)
    summary.notes += [f"column {s.column} skipped for drift: {s.reason}" for s in columns.skipped]
    reference, prediction_kind = _prediction_reference(use_case, reference, current, summary)
    frames = _report_frames(current, reference, fast_path_rows, report_sample_rows, seed)
    summary.report_sample_rows = len(frames.current) if frames.sampled else None
    _measure_drift(summary, use_case, reference, current, frames, columns, prediction_kind, directory)
    _report_data_quality(summary, use_case, frames, columns, directory)
    _measure_performance(summary, use_case, labelled, report_sample_rows, seed, directory)
    return _save_summary(summary, directory)


# --------------------------------------------------------------------------- the run's steps


def _labelled_rows(current: pd.DataFrame) -> pd.DataFrame:
    return current[current[LABEL].notna()] if LABEL in current.columns else current.iloc[0:0]


def _summarise_empty_window(summary: MonitoringSummary, directory: Path) -> MonitoringSummary:
    summary.notes.append("the window is empty: no drift, quality or performance report")
    summary.report_files.append(write_atomic(directory / "summary.json", json.dumps(summary.to_dict(), indent=2)))
    return summary


def _drift_columns(use_case: UseCase, reference: pd.DataFrame, current: pd.DataFrame) -> _DriftColumns:
    """The features usable on both sides; the window side is checked too, so Evidently never meets a null column."""
    import pandas as pd

    features = use_case.features
    kinds, skipped = drift.usable_columns(reference, current, features.numeric, features.categorical)
    numeric: list[str] = []
    categorical: list[str] = []
    for name, kind in kinds.items():
        values = current[name]
        if drift.usable_values(values).empty:
            skipped.append(SkippedColumn(name, "all values missing in the window"))
        elif kind == "numeric" and not pd.api.types.is_numeric_dtype(values.dtype):
            skipped.append(SkippedColumn(name, f"declared numeric but the window holds {values.dtype}"))
        else:
            (numeric if kind == "numeric" else categorical).append(name)
    return _DriftColumns(numeric, categorical, skipped)


def _prediction_kind(use_case: UseCase, predictions: pd.Series) -> ColumnKind:
    if use_case.task == "regression" or is_probability(predictions):
        return "numeric"
    return "categorical"


def _prediction_reference(
    use_case: UseCase, reference: pd.DataFrame, current: pd.DataFrame, summary: MonitoringSummary
) -> tuple[pd.DataFrame, ColumnKind | None]:
    """The reference with a `prediction` column to compare the window's predictions with, and their kind.

    The reference's own predictions when the caller scored the reference with the
    champion (a pure input shift), else the training target; None when neither fits.
    """
    reference = reference.copy(deep=False)
    if PREDICTION not in current.columns or drift.usable_values(current[PREDICTION]).empty:
        return reference, None
    kind = _prediction_kind(use_case, current[PREDICTION])
    if PREDICTION in reference.columns and not drift.usable_values(reference[PREDICTION]).empty:
        summary.prediction_reference = "prediction"
        return reference, kind
    # Probabilities compared with class labels would measure nothing but the difference of scale.
    if use_case.target in reference.columns and not (use_case.task == "classification" and kind == "numeric"):
        reference[PREDICTION] = reference[use_case.target]
        summary.prediction_reference = "target"
        return reference, kind
    summary.notes.append("prediction drift skipped: the reference has neither predictions nor a usable target")
    return reference, None


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=seed)


def _report_frames(
    current: pd.DataFrame, reference: pd.DataFrame, fast_path_rows: int, report_sample_rows: int, seed: int
) -> _ReportFrames:
    if len(current) <= fast_path_rows:
        return _ReportFrames(current, reference, sampled=False)
    return _ReportFrames(_sample(current, report_sample_rows, seed), _sample(reference, report_sample_rows, seed), True)


@contextmanager
def _noted_if_evidently_fails(summary: MonitoringSummary, what: str, then: str = "") -> Iterator[None]:
    """Note a report Evidently could not build and carry on; a report that could not be written still raises."""
    try:
        yield
    except ReportWriteError:
        raise
    except Exception as exc:
        summary.notes.append(f"{what} failed ({type(exc).__name__}: {exc}){then}")


def _measure_drift(
    summary: MonitoringSummary,
    use_case: UseCase,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    frames: _ReportFrames,
    columns: _DriftColumns,
    prediction_kind: ColumnKind | None,
    directory: Path,
) -> None:
    """Drift from Evidently's own report on a whole window, else from mlops.monitoring.drift on the whole window."""
    threshold = use_case.monitoring.drift_share_threshold
    report: EvidentlyDrift | None = None
    with _noted_if_evidently_fails(summary, "Evidently drift report", "; drift from mlops.monitoring.drift"):
        report = evidently_drift(
            frames.reference, frames.current, columns.numeric, columns.categorical, threshold, prediction_kind,
            save_to=directory,
        )  # fmt: skip
    if report is not None and not frames.sampled:
        summary.drift, summary.prediction_drift, summary.drift_engine = (
            report.drift, report.prediction_drift, "evidently"
        )  # fmt: skip
    else:
        summary.drift = drift.check_drift(reference, current, columns.numeric, columns.categorical, threshold)
        if prediction_kind is not None:
            summary.prediction_drift = drift.column_drift(reference[PREDICTION], current[PREDICTION], prediction_kind)
        summary.drift_engine = "fast"
    summary.drift = DriftResult(summary.drift.columns, columns.skipped, threshold)
    if report is not None:
        summary.report_files += report.files


def _report_data_quality(
    summary: MonitoringSummary, use_case: UseCase, frames: _ReportFrames, columns: _DriftColumns, directory: Path
) -> None:
    """Summarise every declared feature the window holds, the ones skipped for drift included."""
    present = frames.current.columns
    numeric = [*columns.numeric, *[c for c in use_case.features.numeric if c not in columns.numeric and c in present]]
    categorical = [c for c in use_case.features.categorical if c in present]
    with _noted_if_evidently_fails(summary, "Evidently data summary"):
        summary.report_files += save_data_quality_report(
            frames.reference, frames.current, numeric, categorical, directory
        )


def _measure_performance(
    summary: MonitoringSummary,
    use_case: UseCase,
    labelled: pd.DataFrame,
    report_sample_rows: int,
    seed: int,
    directory: Path,
) -> None:
    if not len(labelled):
        summary.notes.append("no labels have arrived for this window: performance not measured")
        return
    if PREDICTION not in labelled.columns:
        return
    summary.performance = window_performance(use_case.task, labelled[LABEL], labelled[PREDICTION])
    with _noted_if_evidently_fails(summary, "Evidently performance report"):
        summary.report_files += save_performance_report(
            use_case.task, _sample(labelled, report_sample_rows, seed), directory
        )


def _save_summary(summary: MonitoringSummary, directory: Path) -> MonitoringSummary:
    """summary.json, written last and listing itself: its presence marks a complete run."""
    path = directory / "summary.json"
    summary.report_files.append(path)
    write_atomic(path, json.dumps(summary.to_dict(), indent=2, default=str))
    return summary
