"""Monitoring: drift, data quality and performance of a prediction window, and the retraining decision.

The only module that imports Evidently (inside functions: its import takes ~9 s, so
DAG files can import this module at parse time). Evidently renders the HTML/JSON
reports; the drift numbers behind the decision come from Evidently itself for
windows up to `FAST_PATH_ROWS` rows and from `mlops.drift` (the same default
tests, computed exactly and far faster) above that, with the Evidently report
rendered on a bounded sample.

Reference data is the champion's training snapshot, found through its lineage
(`snapshot_path` tag/param on the model's training run), never a fixed file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlops._io import atomic_path, atomic_write_text
from mlops.config import UseCase
from mlops.evaluation.gate import relative_loss
from mlops.monitoring.drift import ColumnDrift, DriftResult, SkippedColumn
from mlops.naming import monitoring_experiment
from mlops.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

# Above this many window rows the decision uses mlops.drift; Evidently's own run
# grows to ~56 s and 1 GB RSS at 1M rows (benchmarks/drift/README.md).
FAST_PATH_ROWS = 100_000
# Rows of the window (and of the reference) the HTML reports are rendered on above FAST_PATH_ROWS.
REPORT_SAMPLE_ROWS = 50_000
PREDICTION = "prediction"
LABEL = "label"

# Evidently's display names of its drift tests -> the names mlops.drift uses.
_EVIDENTLY_TESTS = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
}

Action = Literal["retrain", "none", "insufficient_data", "data_bug", "cooldown"]


class LineageError(LookupError):
    """The champion's run does not lead to a readable training snapshot."""


class ReportWriteError(OSError):
    """A report file could not be written; the message names the path."""


# --------------------------------------------------------------------------- reference data


def reference_from_lineage(tags: Mapping[str, Any], settings: Settings | None = None) -> Path:
    """Path of the champion's training snapshot from its run's tags or params.

    Accepts the run's tags and params merged in one mapping (keys `snapshot_path`,
    optionally prefixed `params.`/`tags.` as MLflow's search API returns them).
    A relative path is tried against the data dir, MLOPS_HOME and the project root.
    """
    settings = settings or get_settings()
    raw = next(
        (tags[k] for k in ("snapshot_path", "params.snapshot_path", "tags.snapshot_path") if tags.get(k)),
        None,
    )
    if raw is None:
        raise LineageError(
            f"the champion's run has no 'snapshot_path' tag or param (keys found: {sorted(tags)}); "
            "re-register the champion from a training run that logs its snapshot, or pass a reference path by hand"
        )
    path = Path(str(raw)).expanduser()
    candidates = [path] if path.is_absolute() else [settings.data_dir / path, settings.home / path,
                                                      settings.project_root / path]  # fmt: skip
    for candidate in candidates:
        if candidate.exists():
            return candidate
    md5 = tags.get("dvc_md5") or tags.get("params.dvc_md5") or tags.get("tags.dvc_md5")
    restore = f" It is versioned by DVC (md5 {md5}): run `dvc pull` in {settings.data_dir}." if md5 else ""
    raise LineageError(
        f"the champion's training snapshot {raw!r} does not exist (tried {[str(c) for c in candidates]}).{restore}"
    )


def read_reference(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a reference frame from a Parquet file or folder, or a CSV file."""
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"reference data {path} does not exist; check the champion's snapshot_path")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"reference data {path} is neither Parquet nor CSV; write snapshots as .parquet")
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    return frame


# --------------------------------------------------------------------------- report files


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` via a temp file and rename, so a half-written file never looks complete."""
    try:
        return atomic_write_text(path, text)
    except OSError as exc:
        raise ReportWriteError(
            f"could not write monitoring report {path}: {exc.strerror or exc}. "
            f"Check that {path.parent} is writable (reports live under MLOPS_HOME/reports)."
        ) from exc


def report_dir(use_case: str, run_key: str, root: Path | None = None) -> Path:
    """root (default settings.reports_dir) / use_case / run_key, the key made safe as a folder name."""
    safe = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in run_key) or "run"
    return (root or get_settings().reports_dir) / use_case / safe


# --------------------------------------------------------------------------- Evidently


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=seed)


def _is_probability(values: pd.Series) -> bool:
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


def _prediction_kind(use_case: UseCase, predictions: pd.Series) -> Literal["numeric", "categorical"]:
    if use_case.task == "regression" or _is_probability(predictions):
        return "numeric"
    return "categorical"


def evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    drift_share_threshold: float = 0.5,
    prediction_kind: Literal["numeric", "categorical"] | None = None,
) -> tuple[DriftResult, ColumnDrift | None, Any]:
    """Run Evidently's DataDriftPreset (and ValueDrift on `prediction` when asked).

    Returns the drift of the listed columns, the prediction drift and the snapshot
    (for the HTML/JSON). Columns must already be usable (see mlops.drift.usable_columns).
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
    result = snapshot.dict()
    scores: dict[str, tuple[str, float, float]] = {}
    for metric in result["metrics"]:
        config = metric.get("config", {})
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            test = _EVIDENTLY_TESTS.get(config.get("method", ""), str(config.get("method")))
            scores[config["column"]] = (test, float(metric["value"]), float(config.get("threshold") or math.nan))
    drifted: dict[str, bool] = {}
    for test_result in result["tests"]:
        params = test_result.get("metric_config", {}).get("params", {})
        if params.get("type") == "evidently:metric_v2:ValueDrift":
            drifted[params["column"]] = test_result["status"] == "FAIL"
    kinds = {**dict.fromkeys(numeric, "numeric"), **dict.fromkeys(categorical, "categorical")}
    if prediction_kind is not None:
        kinds[PREDICTION] = prediction_kind

    def column(name: str) -> ColumnDrift:
        test, score, threshold = scores[name]
        return ColumnDrift(name, kinds[name], test, score, threshold, drifted[name])

    drift = DriftResult([column(c) for c in columns], drift_share_threshold=drift_share_threshold)
    return drift, (column(PREDICTION) if with_prediction else None), snapshot


def _summary_snapshot(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    keep = [*numeric, *categorical]
    # Evidently refuses a reference that lacks some of the columns: summarise the window alone then.
    with_reference = all(c in reference.columns for c in keep)
    return Report([DataSummaryPreset()]).run(
        current_data=Dataset.from_pandas(current[keep], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[keep], data_definition=definition) if with_reference else None,
    )


def _performance_snapshot(use_case: UseCase, labelled: pd.DataFrame) -> Any:
    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    frame = labelled[[LABEL, PREDICTION]]
    if use_case.task == "regression":
        definition = DataDefinition(
            numerical_columns=[LABEL, PREDICTION], regression=[Regression(target=LABEL, prediction=PREDICTION)]
        )
        preset: Any = RegressionPreset()
    else:
        if _is_probability(frame[PREDICTION]):
            task: Any = BinaryClassification(target=LABEL, prediction_probas=PREDICTION, pos_label=1)
        elif frame[LABEL].nunique() <= 2 and frame[PREDICTION].nunique() <= 2:
            task = BinaryClassification(target=LABEL, prediction_labels=PREDICTION, pos_label=1)
        else:
            task = MulticlassClassification(target=LABEL, prediction_labels=PREDICTION)
        definition = DataDefinition(categorical_columns=[LABEL], classification=[task])
        preset = ClassificationPreset()
    return Report([preset]).run(current_data=Dataset.from_pandas(frame, data_definition=definition))


# --------------------------------------------------------------------------- performance


def window_performance(task: str, y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """Metrics of the labelled rows with the training holdout's own function (mlops.training.compute_metrics).

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
    if _is_probability(pred.astype("float64") if pd.api.types.is_numeric_dtype(pred.dtype) else pred):
        proba = pred.to_numpy(dtype="float64")
        return compute_metrics(task, truth.to_numpy(), (proba >= 0.5).astype(int), proba, labels=[0, 1])
    if pd.api.types.is_float_dtype(pred.dtype) and bool((pred == pred.round()).all()):
        pred = pred.astype(int)
    return compute_metrics(task, np.asarray(truth), np.asarray(pred))


# --------------------------------------------------------------------------- the monitoring run


@dataclass
class MonitoringSummary:
    use_case: str
    run_key: str
    rows: int
    labelled_rows: int
    drift: DriftResult
    drift_engine: str
    """'evidently' (full window), 'fast' (mlops.drift on the full window) or 'none' (empty window)."""
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


def _save_snapshot(snapshot: Any, directory: Path, name: str) -> list[Path]:
    return [
        write_atomic(directory / f"{name}.html", snapshot.get_html_str(as_iframe=False)),
        write_atomic(directory / f"{name}.json", snapshot.json()),
    ]


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
    import pandas as pd

    from mlops.monitoring import drift as fast

    directory = report_dir(use_case.name, run_key, reports_root)
    numeric, categorical = use_case.features.numeric, use_case.features.categorical
    threshold = use_case.monitoring.drift_share_threshold
    labelled = current[current[LABEL].notna()] if LABEL in current.columns else current.iloc[0:0]
    summary = MonitoringSummary(
        use_case=use_case.name,
        run_key=run_key,
        rows=len(current),
        labelled_rows=len(labelled),
        drift=DriftResult([], drift_share_threshold=threshold),
        drift_engine="none",
        champion_metrics=dict(champion_metrics or {}),
        report_dir=directory,
    )
    if current.empty:
        summary.notes.append("the window is empty: no drift, quality or performance report")
        summary.report_files.append(write_atomic(directory / "summary.json", json.dumps(summary.to_dict(), indent=2)))
        return summary

    kinds, skipped = fast.usable_columns(reference, current, numeric, categorical)
    # Also skip what is unusable on the window side, so Evidently never meets an all-null column.
    usable_num: list[str] = []
    usable_cat: list[str] = []
    for name, kind in kinds.items():
        values = current[name]
        if fast._clean(values).empty:
            skipped.append(SkippedColumn(name, "all values missing in the window"))
        elif kind == "numeric" and not pd.api.types.is_numeric_dtype(values.dtype):
            skipped.append(SkippedColumn(name, f"declared numeric but the window holds {values.dtype}"))
        else:
            (usable_num if kind == "numeric" else usable_cat).append(name)
    summary.notes += [f"column {s.column} skipped for drift: {s.reason}" for s in skipped]

    # Prediction drift: against the reference's own predictions when the caller scored
    # the reference with the champion (pure input shift), else against the training target.
    reference = reference.copy(deep=False)
    pred_kind: Literal["numeric", "categorical"] | None = None
    if PREDICTION in current.columns and not fast._clean(current[PREDICTION]).empty:
        pred_kind = _prediction_kind(use_case, current[PREDICTION])
        if PREDICTION in reference.columns and not fast._clean(reference[PREDICTION]).empty:
            summary.prediction_reference = "prediction"
        elif use_case.target in reference.columns and not (
            use_case.task == "classification" and pred_kind == "numeric"
        ):
            reference[PREDICTION] = reference[use_case.target]
            summary.prediction_reference = "target"
        else:
            pred_kind = None
            summary.notes.append("prediction drift skipped: the reference has neither predictions nor a usable target")

    large = len(current) > fast_path_rows
    sample = _sample(current, report_sample_rows, seed) if large else current
    ref_sample = _sample(reference, report_sample_rows, seed) if large else reference
    summary.report_sample_rows = len(sample) if large else None
    snapshot = None
    try:
        ev_drift, ev_pred, snapshot = evidently_drift(ref_sample, sample, usable_num, usable_cat, threshold, pred_kind)
        if not large:
            summary.drift, summary.prediction_drift, summary.drift_engine = ev_drift, ev_pred, "evidently"
    except Exception as exc:  # a report must not stop the decision: fall back to mlops.drift
        summary.notes.append(f"Evidently drift report failed ({type(exc).__name__}: {exc}); drift from mlops.drift")
    if summary.drift_engine == "none":
        summary.drift = fast.check_drift(reference, current, usable_num, usable_cat, threshold)
        if pred_kind is not None:
            summary.prediction_drift = fast.column_drift(reference[PREDICTION], current[PREDICTION], pred_kind)
        summary.drift_engine = "fast"
    summary.drift = DriftResult(summary.drift.columns, skipped, threshold)
    if snapshot is not None:
        summary.report_files += _save_snapshot(snapshot, directory, "drift")

    try:
        quality = _summary_snapshot(ref_sample, sample, [*usable_num, *[c for c in numeric if c not in usable_num
                                                                        and c in sample.columns]],
                                    [c for c in categorical if c in sample.columns])  # fmt: skip
        summary.report_files += _save_snapshot(quality, directory, "data_quality")
    except ReportWriteError:
        raise
    except Exception as exc:
        summary.notes.append(f"Evidently data summary failed ({type(exc).__name__}: {exc})")

    if len(labelled) and PREDICTION in labelled.columns:
        summary.performance = window_performance(use_case.task, labelled[LABEL], labelled[PREDICTION])
        try:
            perf = _performance_snapshot(use_case, _sample(labelled, report_sample_rows, seed))
            summary.report_files += _save_snapshot(perf, directory, "performance")
        except ReportWriteError:
            raise
        except Exception as exc:
            summary.notes.append(f"Evidently performance report failed ({type(exc).__name__}: {exc})")
    elif not len(labelled):
        summary.notes.append("no labels have arrived for this window: performance not measured")

    summary.report_files.append(directory / "summary.json")
    write_atomic(directory / "summary.json", json.dumps(summary.to_dict(), indent=2, default=str))
    return summary


# --------------------------------------------------------------------------- decision


@dataclass(frozen=True)
class Guards:
    """Facts the caller knows that the window does not: passed in so `decide` stays pure."""

    now: datetime
    """The run's logical time (never wall-clock now(), so a re-run decides the same)."""
    training_active: bool = False
    """A training run is queued or running."""
    last_triggered_at: datetime | None = None
    """Window end of the last retraining trigger. Only one in (now - cooldown_hours, now] holds a
    trigger back; one after `now` (a backfill, a re-run of an earlier window) is reported and ignored."""
    validation_passed: bool | None = None
    """Outcome of the window's Great Expectations validation; None when not validated."""
    validation_details: str = ""


@dataclass(frozen=True)
class MonitoringDecision:
    use_case: str
    action: Action
    reasons: list[str]
    drift_share: float
    drifted_columns: list[str]
    performance: dict[str, float]
    primary_metric: str
    degradation: float | None
    """Relative loss of the primary metric versus the champion's holdout (positive = worse)."""

    @property
    def alert(self) -> bool:
        """Someone should hear about it: retraining, a suppressed trigger or a data bug."""
        return self.action in ("retrain", "cooldown", "data_bug")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alert": self.alert}


def decide(use_case: UseCase, summary: MonitoringSummary, guards: Guards) -> MonitoringDecision:
    """Retrain, or say why not. Guards are checked in order: data bug, too little data, then
    the triggers (drift share, performance), then the cooldown on a trigger."""
    cfg = use_case.monitoring
    metric = use_case.gate.primary_metric
    share = summary.drift.share_of_drifted_columns
    reasons: list[str] = []

    def result(action: Action, degradation: float | None = None) -> MonitoringDecision:
        return MonitoringDecision(
            use_case=use_case.name, action=action, reasons=reasons, drift_share=share,
            drifted_columns=summary.drift.drifted_columns, performance=dict(summary.performance),
            primary_metric=metric, degradation=degradation,
        )  # fmt: skip

    if guards.validation_passed is False:
        detail = f": {guards.validation_details}" if guards.validation_details else ""
        reasons.append(f"the window failed data validation{detail}; treated as a data bug, not drift: no retraining")
        return result("data_bug")
    if summary.rows < cfg.min_rows:
        reasons.append(
            f"only {summary.rows} rows in the window (< monitoring.min_rows = {cfg.min_rows}): nothing decided"
        )
        return result("insufficient_data")

    triggers: list[str] = []
    if not summary.drift.columns:
        reasons.append("no column could be compared for drift")
    elif share >= cfg.drift_share_threshold:
        triggers.append(
            f"drift share {share:.2f} >= {cfg.drift_share_threshold} "
            f"({summary.drift.number_of_drifted_columns}/{len(summary.drift.columns)} columns: "
            f"{', '.join(summary.drift.drifted_columns)})"
        )
    else:
        reasons.append(f"drift share {share:.2f} < {cfg.drift_share_threshold}")

    degradation: float | None = None
    window_value, champion_value = summary.performance.get(metric), summary.champion_metrics.get(metric)
    if window_value is None:
        reasons.append(f"performance not judged: no {metric} for the window ({summary.labelled_rows} labelled rows)")
    elif summary.labelled_rows < cfg.min_rows:
        reasons.append(
            f"performance not judged: {summary.labelled_rows} labelled rows (< monitoring.min_rows = {cfg.min_rows})"
        )
    elif champion_value is None:
        reasons.append(f"performance not judged: the champion has no holdout {metric}")
    else:
        degradation = relative_loss(metric, window_value, champion_value)
        text = f"{metric} {window_value:.4g} vs champion {champion_value:.4g} ({degradation:+.1%} loss)"
        if degradation > cfg.performance_degradation:
            triggers.append(f"{text} > allowed {cfg.performance_degradation:.0%}")
        else:
            reasons.append(f"{text} within allowed {cfg.performance_degradation:.0%}")

    if summary.prediction_drift is not None and summary.prediction_drift.drifted:
        reasons.append(
            f"prediction drift against the reference {summary.prediction_reference} "
            f"({summary.prediction_drift.stattest} {summary.prediction_drift.score:.3g})"
        )
    if not triggers:
        return result("none", degradation)
    reasons[:0] = triggers
    if guards.training_active:
        reasons.append("a training run is already queued or running: not triggering another")
        return result("cooldown", degradation)
    if guards.last_triggered_at is not None:
        since = guards.now - guards.last_triggered_at
        if since < timedelta(0):
            # The recorded trigger is later than this window: a backfill or re-run of an earlier
            # window, or a second demo on the same MLOPS_HOME. It says nothing about the hours
            # before this window, so it must not hold the trigger back (else nothing ever retrains).
            reasons.append(
                f"the last recorded trigger ({guards.last_triggered_at.isoformat(sep=' ')}) is "
                f"{-since.total_seconds() / 3600:.1f} h after this window's end ({guards.now.isoformat(sep=' ')}): "
                "not a cooldown for this window"
            )
        elif since < timedelta(hours=cfg.cooldown_hours):
            reasons.append(
                f"last retraining triggered {since.total_seconds() / 3600:.1f} h ago "
                f"(< monitoring.cooldown_hours = {cfg.cooldown_hours}): not triggering again"
            )
            return result("cooldown", degradation)
    return result("retrain", degradation)


# --------------------------------------------------------------------------- MLflow


def log_monitoring_run(
    summary: MonitoringSummary,
    decision: MonitoringDecision,
    window_end: datetime,
    tags: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log the reports as artifacts and the headline numbers as metrics of a run in
    `<use_case>-monitoring`; returns the MLflow run id.

    Metrics carry the window end as timestamp and its day number as step, so the
    experiment's charts show the trend across monitoring runs.
    """
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or get_settings().mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri)
    name = monitoring_experiment(summary.use_case)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(
        experiment_id,
        run_name=f"monitor-{summary.run_key}",
        tags={"use_case": summary.use_case, "monitoring.action": decision.action,
              "monitoring.drift_engine": summary.drift_engine, **(tags or {})},
    )  # fmt: skip
    run_id: str = run.info.run_id
    timestamp = int(window_end.timestamp() * 1000)
    step = int(window_end.timestamp() // 86400)
    values = {
        "drift_share": summary.drift.share_of_drifted_columns,
        "drifted_columns": float(summary.drift.number_of_drifted_columns),
        "rows": float(summary.rows),
        "labelled_rows": float(summary.labelled_rows),
        **{f"perf_{k}": v for k, v in summary.performance.items()},
    }
    if decision.degradation is not None:
        values["degradation"] = decision.degradation
    if summary.prediction_drift is not None:
        values["prediction_drift_score"] = summary.prediction_drift.score
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), timestamp, step) for k, v in values.items() if math.isfinite(v)],
        )
        client.log_dict(run_id, decision.to_dict(), "decision.json")
        if summary.report_dir is not None and summary.report_dir.is_dir():
            client.log_artifacts(run_id, str(summary.report_dir), artifact_path="reports")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


# --------------------------------------------------------------------------- the DAG's steps
# Each step reads and writes files and returns a small dataclass, so the monitoring
# DAG passes paths through XCom and never a frame.


@dataclass(frozen=True)
class Window:
    path: str
    rows: int
    labelled_rows: int
    start: str
    end: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_file(use_case: str, run_key: str) -> Path:
    return report_dir(use_case, run_key, get_settings().home / "monitoring") / "window.parquet"


def collect_window(use_case: UseCase, start: datetime, end: datetime, run_key: str) -> Window:
    """Copy the prediction log's window [start, end), with the labels so far, to a run-keyed file."""
    from mlops.predictionlog import stores

    frame = stores.read_predictions(use_case, start, end, with_labels=True)
    path = window_file(use_case.name, run_key)
    with atomic_path(path) as tmp:  # a re-run overwrites; a crash never leaves a half file under the real name
        frame.to_parquet(tmp, index=False)
    labelled = int(frame["label"].notna().sum()) if "label" in frame.columns else 0
    return Window(str(path), len(frame), labelled, start.isoformat(), end.isoformat())


@dataclass(frozen=True)
class WindowValidation:
    passed: bool | None
    """None when there was nothing to validate (an empty window)."""
    details: str
    data_docs_page: str | None = None
    """File path of the window's Great Expectations Data Docs page (the task's "Data Docs" link)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_window(use_case: UseCase, window_path: str | Path) -> pd.DataFrame:
    """The window's columns monitoring uses: the features, `prediction` and `label`, where present.

    The prediction log also holds request ids, model names and timestamps as strings; a
    10M-row window read whole held 6.2 GB, most of it those Python strings, which no
    report needs (benchmarks/drift/step.py).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    wanted = [*use_case.features.all, PREDICTION, LABEL]
    present = set(pq.read_schema(window_path).names)
    return pd.read_parquet(window_path, columns=[c for c in wanted if c in present])


def validate_window(use_case: UseCase, window_path: str, run_id: str | None = None) -> WindowValidation:
    """Great Expectations on the window's features: a failure is a data bug, not drift.

    `run_id` names the validation run in Data Docs; by default the window file's folder,
    which `collect_window` already names after the run.
    """

    from mlops.data import validation

    frame = read_window(use_case, window_path)
    if frame.empty:
        return WindowValidation(None, "empty window: nothing to validate")
    missing = [c for c in use_case.features.all if c not in frame.columns]
    if missing:
        return WindowValidation(False, f"the prediction log lacks feature columns {missing}")
    outcome = validation.validate_features(
        use_case, frame[use_case.features.all], run_id=run_id or Path(window_path).parent.name
    )
    return WindowValidation(outcome.success, "; ".join(f.describe() for f in outcome.failed), outcome.data_docs_page)


@dataclass(frozen=True)
class Assessment:
    decision: MonitoringDecision
    champion_version: str | None
    report_dir: str | None
    report_html: str | None
    mlflow_run_id: str | None
    window_end: str

    @property
    def trigger_reason(self) -> str:
        return f"monitoring found {self.decision.action}: " + "; ".join(self.decision.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision.to_dict(), "trigger_reason": self.trigger_reason}


def assess_window(use_case: UseCase, window_path: str, guards: Guards, run_key: str) -> Assessment:
    """Reports against the champion's training data, the decision, and their MLflow record."""

    from mlops.mlflow import registry

    window_end = guards.now.date().isoformat()
    champion = registry.champion(use_case.model_name)
    if champion is None:
        decision = MonitoringDecision(
            use_case.name, "insufficient_data", [f"no @champion of {use_case.model_name} yet: train one first"],
            0.0, [], {}, use_case.gate.primary_metric, None,
        )  # fmt: skip
        return Assessment(decision, None, None, None, None, window_end)
    reference = read_reference(reference_from_lineage({**champion.lineage, **champion.tags}))
    current = read_window(use_case, window_path)
    summary = run_monitoring(use_case, current, reference, run_key, champion_metrics=champion.metrics)
    decision = decide(use_case, summary, guards)
    directory = summary.report_dir
    if directory is not None:
        write_atomic(directory / "decision.json", json.dumps(decision.to_dict(), indent=2, default=str))
    run_id = log_monitoring_run(
        summary, decision, guards.now, tags={"champion_version": champion.version, "run_key": run_key}
    )
    html = directory / "drift.html" if directory is not None else None
    return Assessment(
        decision,
        champion.version,
        str(directory) if directory else None,
        str(html) if html is not None and html.exists() else None,
        run_id,
        window_end,
    )
