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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase
from mlops.monitoring import drift
from mlops.monitoring.drift import ColumnDrift, ColumnKind, DriftResult, SkippedColumn
from mlops.monitoring.performance import (
    LABEL,
    PREDICTION,
    Performance,
    champion_rows,
    is_probability,
    measure_performance,
    performance_by_version,
    proba_classes,
    proba_columns,
    served_rows,
    task_metrics,
)
from mlops.monitoring.reports import (
    EvidentlyDrift,
    ReportWriteError,
    evidently_drift,
    report_dir,
    save_data_quality_report,
    save_performance_report,
    write_atomic,
)
from mlops.monitoring.skew import Skew, check_skew
from mlops.monitoring.volume import WindowFiles

if TYPE_CHECKING:
    import pandas as pd

    from mlops.monitoring.summaries import Bins

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
    """'evidently' (full window), 'fast' (mlops.monitoring.drift on the full window), 'summaries' (the
    window's merged per-file summaries, mlops.monitoring.summaries) or 'none' (empty window)."""
    prediction_drift: ColumnDrift | None = None
    prediction_reference: str | None = None
    """What the window's predictions were compared with: 'prediction' (the reference's
    own predictions) or 'target' (the training labels)."""
    prediction_drift_on: str | None = None
    """Which values of the predictions were compared: a `proba__<positive class>` column
    (binary), 'max_proba' (multiclass: the model's confidence) or 'prediction' (the class
    or the regression value)."""
    performance: dict[str, float] = field(default_factory=dict)
    """The primary comparison: metrics of the judged version's champion-role labelled rows."""
    champion_metrics: dict[str, float] = field(default_factory=dict)
    performance_version: str | None = None
    """The model version `performance` was computed on (the current champion when known)."""
    performance_rows: int | None = None
    """Labelled rows behind `performance`; None on a summary built before versions were split."""
    performance_unavailable: dict[str, str] = field(default_factory=dict)
    """Each metric the task allows that `performance` lacks, and why."""
    performance_by_version: dict[str, Performance] = field(default_factory=dict)
    """Performance of each model version's champion-role labelled rows in the window."""
    null_shares: dict[str, NullShare] = field(default_factory=dict)
    """Each feature's share of nulls in the window and in the reference."""
    null_share_findings: list[str] = field(default_factory=list)
    """Features whose null share rose above the reference's by more than monitoring.max_null_share_increase."""
    label_lag: LabelLag | None = None
    skew: Skew | None = None
    """A store-backed use case's served features against the offline store (mlops.monitoring.skew)."""
    report_sample_rows: int | None = None
    window_sample_rows: int | None = None
    """Rows of the window's stratified sample when the window was too large to read (else None)."""
    drift_error_bounds: dict[str, float] = field(default_factory=dict)
    """With drift_engine 'summaries': each Wasserstein score's bound on its distance from the exact score."""
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
            "prediction_drift_on": self.prediction_drift_on,
            "performance": self.performance,
            "champion_metrics": self.champion_metrics,
            "performance_version": self.performance_version,
            "performance_rows": self.performance_rows,
            "performance_unavailable": self.performance_unavailable,
            "performance_by_version": {v: p.to_dict() for v, p in self.performance_by_version.items()},
            "null_shares": {c: asdict(n) for c, n in self.null_shares.items()},
            "null_share_findings": self.null_share_findings,
            "label_lag": asdict(self.label_lag) if self.label_lag else None,
            "skew": self.skew.to_dict() if self.skew is not None else None,
            "report_sample_rows": self.report_sample_rows,
            "window_sample_rows": self.window_sample_rows,
            "drift_error_bounds": self.drift_error_bounds,
            "report_dir": str(self.report_dir) if self.report_dir else None,
            "report_files": [str(p) for p in self.report_files],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class NullShare:
    window: float
    reference: float | None
    """None when the reference lacks the column."""


@dataclass(frozen=True)
class LabelLag:
    """How much of the window is labelled, and how late the labels came."""

    labelled_share: float
    median_delay_hours: float | None
    delay_from: str | None
    """The log column the delay is measured from: 'logged_at', else 'event_time'."""
    note: str | None = None
    """Why the delay is unknown, when it is."""


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
    champion_version: str | None = None,
    fast_path_rows: int = FAST_PATH_ROWS,
    report_sample_rows: int = REPORT_SAMPLE_ROWS,
    seed: int = 0,
    notes: Sequence[str] = (),
    at_volume: WindowFiles | None = None,
) -> MonitoringSummary:
    """Compute drift, data quality and (with labels) performance of a window; save the reports.

    `current` is a prediction-log frame (features, `prediction`, optional `label`,
    `label_arrived_at`, `role`, `model_version`, `proba__<label>`, `logged_at`,
    `event_time`); `reference` the champion's training data (features, the target,
    optionally `prediction` and `proba__<label>` when the champion scored it).
    Performance is judged on `champion_version`'s own champion-role rows when given
    (else on every champion-role row). Reports go to `reports_root/<use_case>/<run_key>/`
    (default settings.reports_dir); `summary.json` is written last, so its presence
    marks a complete run. `notes` are the caller's own (how the reference was prepared)
    and open the summary's notes.

    `at_volume`: `current` is a stratified sample of a window too large to read
    (mlops.monitoring.volume); drift, null shares and row counts then come from the
    window's files' merged summaries (mlops.monitoring.summaries), the rest from the sample.
    """
    directory = report_dir(use_case.name, run_key, reports_root)
    current = served_rows(current)  # a shadow's rows are never the champion's window
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
        label_lag=label_lag(current),
        notes=list(notes),
    )
    if current.empty:
        return _summarise_empty_window(summary, directory)

    columns = _drift_columns(use_case, reference, current)
    summary.notes += [f"column {s.column} skipped for drift: {s.reason}" for s in columns.skipped]
    _measure_null_shares(summary, use_case, reference, current)
    summary.skew = check_skew(use_case, current, reference)
    if summary.skew is not None and summary.skew.note:
        summary.notes.append(f"skew check: {summary.skew.note}")
    reference, scored, prediction_kind = _prediction_reference(use_case, reference, current, summary)
    if at_volume is not None:
        frames = _ReportFrames(_sample(scored, report_sample_rows, seed), _sample(reference, report_sample_rows, seed),
                               sampled=True)  # fmt: skip
        summary.report_sample_rows = len(frames.current)
        _measure_at_volume(summary, use_case, reference, scored, columns, prediction_kind, at_volume, champion_version)
        _report_drift_sample(summary, use_case, frames, columns, prediction_kind, directory)
    else:
        frames = _report_frames(scored, reference, fast_path_rows, report_sample_rows, seed)
        summary.report_sample_rows = len(frames.current) if frames.sampled else None
        _measure_drift(summary, use_case, reference, scored, frames, columns, prediction_kind, directory)
    _report_data_quality(summary, use_case, frames, columns, directory)
    _measure_performance(summary, use_case, labelled, champion_version, report_sample_rows, seed, directory)
    if at_volume is not None:
        _mark_sampled_reports(summary, at_volume)
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


def _probability_score(frame: pd.DataFrame) -> tuple[str, pd.Series] | None:
    """The probability a classifier's drift is judged on: the positive class's (binary), else the top class's."""
    from mlops.naming import positive_class, proba_column

    columns = proba_columns(frame)
    if len(columns) < 2:
        return None
    if len(columns) == 2:
        name = proba_column(positive_class(proba_classes(columns)))
        return name, frame[name].astype("float64")
    return "max_proba", frame[columns].astype("float64").max(axis=1, skipna=False)


def _prediction_reference(
    use_case: UseCase, reference: pd.DataFrame, current: pd.DataFrame, summary: MonitoringSummary
) -> tuple[pd.DataFrame, pd.DataFrame, ColumnKind | None]:
    """The reference and the window, each with the `prediction` column to compare, and its kind.

    A classifier whose window logs probabilities is compared on them (the positive
    class's, or the top class's for multiclass) with the reference's when the champion
    scored the reference: a change of the model's confidence shows before the class
    flips. Otherwise the reference's own predictions when the caller scored the
    reference (a pure input shift), else the training target; None when neither fits.
    """
    reference, current = reference.copy(deep=False), current.copy(deep=False)
    if PREDICTION not in current.columns or drift.usable_values(current[PREDICTION]).empty:
        return reference, current, None
    if use_case.task == "classification":
        window_score, reference_score = _probability_score(current), _probability_score(reference)
        if window_score is not None and reference_score is not None and window_score[0] == reference_score[0]:
            current[PREDICTION], reference[PREDICTION] = window_score[1], reference_score[1]
            summary.prediction_reference, summary.prediction_drift_on = "prediction", window_score[0]
            return reference, current, "numeric"
        if window_score is not None:
            summary.notes.append(
                f"prediction drift on the predicted class: the reference holds no {window_score[0]} "
                "(the champion did not score it)"
            )
    kind = _prediction_kind(use_case, current[PREDICTION])
    summary.prediction_drift_on = PREDICTION
    if PREDICTION in reference.columns and not drift.usable_values(reference[PREDICTION]).empty:
        summary.prediction_reference = "prediction"
        return reference, current, kind
    # Probabilities compared with class labels would measure nothing but the difference of scale.
    if use_case.target in reference.columns and not (use_case.task == "classification" and kind == "numeric"):
        reference[PREDICTION] = reference[use_case.target]
        summary.prediction_reference = "target"
        return reference, current, kind
    summary.notes.append("prediction drift skipped: the reference has neither predictions nor a usable target")
    summary.prediction_drift_on = None
    return reference, current, None


def _measure_null_shares(
    summary: MonitoringSummary, use_case: UseCase, reference: pd.DataFrame, current: pd.DataFrame
) -> None:
    """Each feature's null share against the reference's; a rise beyond the configured margin is a finding.

    Under `serving.missing: impute` a null is answered and logged as null, so a feed
    that starts dropping a field shows here (a data-quality alert), never at the door.
    """
    margin = use_case.monitoring.max_null_share_increase
    for name in use_case.features.all:
        if name not in current.columns:
            continue
        window = float(current[name].isna().mean())
        ref = float(reference[name].isna().mean()) if name in reference.columns and len(reference) else None
        summary.null_shares[name] = NullShare(window, ref)
        if ref is not None and window - ref > margin:
            summary.null_share_findings.append(
                f"null share of {name} rose to {window:.1%} from {ref:.1%} in the reference "
                f"(> monitoring.max_null_share_increase = {margin:.0%})"
            )


def label_lag(current: pd.DataFrame) -> LabelLag | None:
    """The share of the window labelled and the median delay of its labels (label_arrived_at - logged_at)."""
    import pandas as pd

    if current.empty or LABEL not in current.columns:
        return None
    labelled = current[LABEL].notna()
    share = float(labelled.mean())
    start = next((c for c in ("logged_at", "event_time") if c in current.columns), None)
    if "label_arrived_at" not in current.columns or start is None:
        return LabelLag(share, None, start, "the log records no label arrival time: delay unknown")
    if not labelled.any():
        return LabelLag(share, None, start, "no labels have arrived")

    def utc(values: pd.Series) -> pd.Series:
        stamps = pd.to_datetime(values[labelled])
        return stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")

    delay = (utc(current["label_arrived_at"]) - utc(current[start])).dropna()
    if delay.empty:
        return LabelLag(share, None, start, "no label arrival time recorded")
    return LabelLag(share, float(delay.median().total_seconds() / 3600), start)


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


def _measure_at_volume(
    summary: MonitoringSummary,
    use_case: UseCase,
    reference: pd.DataFrame,
    sample: pd.DataFrame,
    columns: _DriftColumns,
    prediction_kind: ColumnKind | None,
    at_volume: WindowFiles,
    champion_version: str | None = None,
) -> None:
    """Drift, null shares and row counts of the whole window from its files' merged summaries.

    The prediction is summarised as one more column, under its name in the log (`prediction`
    or the positive class's `proba__<label>`); a multiclass top-class probability is not a
    log column, so its drift is computed on the sample, and the notes say so.
    """
    from dataclasses import replace

    from mlops.monitoring import summaries

    threshold = use_case.monitoring.drift_share_threshold
    source = summary.prediction_drift_on if prediction_kind is not None else None
    in_log = source is not None and source in sample.columns and source != "max_proba"
    view, numeric, categorical = _summarised_columns(reference, columns, prediction_kind, source if in_log else None)
    window = at_volume.log_window(use_case.name)
    bins = summaries.reference_bins(view, numeric, categorical)
    merged = window.summary(bins, {"by": "monitoring", "model_version": champion_version})
    bounds: dict[str, float] = {}
    if any(len(drift.usable_values(view[c])) <= drift.SMALL_REFERENCE_ROWS for c in [*numeric, *categorical]):
        outcome = drift.check_drift(view, window, numeric, categorical, threshold)
        summary.notes.append("reference of at most 1000 rows: drift read column by column from the whole window")
    else:
        result = summaries.drift_from_summary(view, merged, bins, numeric, categorical, threshold, window.column)
        outcome, bounds = result.result, result.error_bounds
        if result.ambiguous:
            summary.notes.append(
                f"columns {result.ambiguous} scored within their error bound of the threshold: recomputed exactly"
            )
    features = [c for c in outcome.columns if not (in_log and c.column == source)]
    summary.drift = DriftResult(features, [*columns.skipped, *outcome.skipped], threshold)
    summary.drift_error_bounds = {c: b for c, b in bounds.items() if not (in_log and c == source)}
    summary.drift_engine = "summaries"
    own = next((c for c in outcome.columns if in_log and c.column == source), None)
    if own is not None:
        summary.prediction_drift = replace(own, column=PREDICTION)
    elif prediction_kind is not None:
        summary.prediction_drift = drift.column_drift(reference[PREDICTION], sample[PREDICTION], prediction_kind)
        summary.notes.append(f"prediction drift on {summary.prediction_drift_on} from the window's sample")
    summary.rows = int(merged["rows"])
    summary.labelled_rows = at_volume.labelled_rows
    summary.window_sample_rows = at_volume.sample_rows
    if summary.label_lag is not None and summary.rows:
        summary.label_lag = replace(summary.label_lag, labelled_share=min(1.0, at_volume.labelled_rows / summary.rows))
    _null_shares_from_summary(summary, use_case, merged)


def _summarised_columns(
    reference: pd.DataFrame, columns: _DriftColumns, prediction_kind: ColumnKind | None, source: str | None
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The reference view and columns a window's summaries are built for: the features, and the prediction
    under its log column `source` (None when it is not a log column)."""
    numeric, categorical = list(columns.numeric), list(columns.categorical)
    view = reference.copy(deep=False)
    if source is not None:
        view[source] = reference[PREDICTION]
        (numeric if prediction_kind == "numeric" else categorical).append(source)
    return view, numeric, categorical


def summary_bins(use_case: UseCase, reference: pd.DataFrame, rows: pd.DataFrame) -> Bins:
    """The bins a window at volume is summarised with, given the reference (the champion's training data, scored
    by it) and some rows of the window (a landed partition: only its columns and whether they hold values count).

    The same steps as `run_monitoring` takes, so a partition summarised as it lands
    (mlops.monitoring.landing) carries the bins the monitoring run will ask for, and is reused.
    Where they differ (a column with no value in the partition but some in the window) the
    keys differ, and the monitoring run summarises that day again: never a wrong reuse.
    """
    from mlops.monitoring import summaries

    scratch = MonitoringSummary(use_case.name, "", 0, 0, DriftResult([]), "none")
    current = served_rows(rows)
    columns = _drift_columns(use_case, reference, current)
    reference, scored, kind = _prediction_reference(use_case, reference, current, scratch)
    source = scratch.prediction_drift_on if kind is not None else None
    in_log = source is not None and source in scored.columns and source != "max_proba"
    view, numeric, categorical = _summarised_columns(reference, columns, kind, source if in_log else None)
    return summaries.reference_bins(view, numeric, categorical)


def _null_shares_from_summary(summary: MonitoringSummary, use_case: UseCase, merged: dict[str, Any]) -> None:
    """Null shares of the whole window from the merged summary; a column not summarised keeps the sample's."""
    rows = merged["rows"]
    margin = use_case.monitoring.max_null_share_increase
    summary.null_share_findings = []
    for name in list(summary.null_shares):
        column = merged["numeric"].get(name) or merged["categorical"].get(name)
        if column is None or not rows:
            continue
        ref = summary.null_shares[name].reference
        window = column["nulls"] / rows
        summary.null_shares[name] = NullShare(window, ref)
    for name, share in summary.null_shares.items():
        if share.reference is not None and share.window - share.reference > margin:
            summary.null_share_findings.append(
                f"null share of {name} rose to {share.window:.1%} from {share.reference:.1%} in the reference "
                f"(> monitoring.max_null_share_increase = {margin:.0%})"
            )


def _report_drift_sample(
    summary: MonitoringSummary,
    use_case: UseCase,
    frames: _ReportFrames,
    columns: _DriftColumns,
    prediction_kind: ColumnKind | None,
    directory: Path,
) -> None:
    """Evidently's drift report on the sample: the page people read; the decision's numbers are the summaries'."""
    with _noted_if_evidently_fails(summary, "Evidently drift report"):
        report = evidently_drift(
            frames.reference, frames.current, columns.numeric, columns.categorical,
            use_case.monitoring.drift_share_threshold, prediction_kind, save_to=directory,
        )  # fmt: skip
        summary.report_files += report.files


def _mark_sampled_reports(summary: MonitoringSummary, at_volume: WindowFiles) -> None:
    """Say at the top of each HTML report that it shows a sample, and where the decision's numbers come from."""
    from mlops.monitoring.reports import mark_sampled

    note = (
        f"This report is rendered on a stratified sample of {summary.report_sample_rows:,} of the window's "
        f"{summary.rows:,} served rows (sample of {at_volume.sample_rows:,} rows drawn by day partition, each day "
        "in proportion to its rows; see docs/monitoring.md, At volume). The drift decision and scores in "
        "summary.json come from summaries of every row of the window, not from this sample."
    )
    for path in summary.report_files:
        if path.suffix == ".html":
            mark_sampled(path, note)


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
    champion_version: str | None,
    report_sample_rows: int,
    seed: int,
    directory: Path,
) -> None:
    """Every metric per model version on its champion-role rows; the judged version's as `performance`."""
    from mlops.monitoring.performance import MODEL_VERSION

    summary.performance_by_version = performance_by_version(use_case.task, labelled)
    if not len(labelled):
        summary.notes.append("no labels have arrived for this window: performance not measured")
        summary.performance_rows = 0
        summary.performance_unavailable = measure_performance(use_case.task, labelled).unavailable
        return
    own = champion_rows(labelled)
    if champion_version is not None and MODEL_VERSION in own.columns:
        own = own[own[MODEL_VERSION].astype("string") == str(champion_version)]
        summary.performance_version = str(champion_version)
        if own.empty:
            others = ", ".join(summary.performance_by_version) or "none"
            judged = Performance(0, {}, dict.fromkeys(
                task_metrics(use_case.task),
                f"no labelled predictions of champion version {champion_version} in the window "
                f"(versions with labels: {others})",
            ))  # fmt: skip
        else:
            judged = measure_performance(use_case.task, own)
    else:
        judged = measure_performance(use_case.task, own)
        if champion_version is not None:
            summary.performance_version = str(champion_version)
            summary.notes.append("the prediction log has no model_version: performance covers every champion row")
    summary.performance, summary.performance_rows = judged.metrics, judged.rows
    summary.performance_unavailable = judged.unavailable
    if PREDICTION not in own.columns or own.empty:
        return
    with _noted_if_evidently_fails(summary, "Evidently performance report"):
        summary.report_files += save_performance_report(
            use_case.task, _sample(own, report_sample_rows, seed), directory
        )


def _save_summary(summary: MonitoringSummary, directory: Path) -> MonitoringSummary:
    """summary.json, written last and listing itself: its presence marks a complete run."""
    path = directory / "summary.json"
    summary.report_files.append(path)
    write_atomic(path, json.dumps(summary.to_dict(), indent=2, default=str))
    return summary
