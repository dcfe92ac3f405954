"""The monitoring DAG's decisive step: a window against the champion's training data, decided and recorded.

`assess_window` chains the stages: the champion and its reference data (lineage),
the reports (`run_monitoring`), the pure decision (`decide`), and the record of both
in the report folder and in MLflow. It returns a small dataclass for XCom.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase
from mlops.monitoring.decision import Guards, MonitoringDecision, decide
from mlops.monitoring.reference import load_champion_model, read_reference, reference_from_lineage, score_reference
from mlops.monitoring.reports import write_atomic
from mlops.monitoring.run import MonitoringSummary, run_monitoring
from mlops.monitoring.volume import WindowFiles
from mlops.monitoring.window import read_window
from mlops.naming import (
    METRIC_DRIFT_SHARE,
    TAG_MONITORING_ACTION,
    TAG_MONITORING_CHAMPION_VERSION,
    TAG_MONITORING_DRIFT_ENGINE,
    TAG_MONITORING_RUN_KEY,
    TAG_MONITORING_USE_CASE,
)

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Assessment:
    decision: MonitoringDecision
    champion_version: str | None
    report_dir: str | None
    report_html: str | None
    mlflow_run_id: str | None
    window_end: str
    rollout: dict[str, Any] | None = None
    """The rollout in progress compared live (champion and candidate on labelled requests), or None."""

    @property
    def trigger_reason(self) -> str:
        return f"monitoring found {self.decision.action}: " + "; ".join(self.decision.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision.to_dict(), "trigger_reason": self.trigger_reason}


def assess_window(
    use_case: UseCase,
    window_path: str,
    guards: Guards,
    run_key: str,
    live_comparison: dict[str, Any] | None = None,
    window_files: str | None = None,
) -> Assessment:
    """Reports against the champion's training data, the decision, and their MLflow record.

    `window_files`: the listing `collect_window` writes for a window too large to read
    (`Window.files`); the window file is then its stratified sample.

    `live_comparison`: a rollout in progress, as `mlops.rollout.apply.live_comparison` reads it;
    written beside the reports as `rollout.json` (and so logged with them), the decision unchanged.
    """
    from mlops.mlflow import registry

    window_end = guards.now.date().isoformat()
    champion = registry.champion(use_case.model_name)
    if champion is None:
        return Assessment(_no_champion(use_case), None, None, None, None, window_end)
    reference = read_reference(reference_from_lineage({**champion.lineage, **champion.tags}))
    reference, notes = scored_reference(use_case, champion.name, champion.version, reference)
    current = read_window(use_case, window_path)
    summary = run_monitoring(
        use_case, current, reference, run_key, champion_metrics=champion.metrics, champion_version=champion.version,
        notes=notes, at_volume=WindowFiles.load(window_files) if window_files else None,
    )  # fmt: skip
    decision = decide(use_case, summary, guards)
    directory = summary.report_dir
    if directory is not None:
        write_atomic(directory / "decision.json", json.dumps(decision.to_dict(), indent=2, default=str))
        if live_comparison is not None:
            write_atomic(directory / "rollout.json", json.dumps(live_comparison, indent=2, default=str))
    run_id = record_monitoring_run(
        summary,
        decision,
        guards.now,
        tags={TAG_MONITORING_CHAMPION_VERSION: champion.version, TAG_MONITORING_RUN_KEY: run_key},
    )
    html = directory / "drift.html" if directory is not None else None
    return Assessment(
        decision,
        champion.version,
        str(directory) if directory else None,
        str(html) if html is not None and html.exists() else None,
        run_id,
        window_end,
        live_comparison,
    )


def scored_reference(
    use_case: UseCase, model_name: str, version: str, reference: pd.DataFrame, tracking_uri: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The reference scored by the champion, so its predictions compare with the window's like with like.

    A champion that cannot be loaded or cannot score its own training data leaves the
    reference as it was and says why: prediction drift then falls back to the predicted
    class against the target, and the rest of the run does not depend on it.
    """
    try:
        model = load_champion_model(model_name, version, tracking_uri)
        return score_reference(model, reference, use_case), []
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return reference, [
            f"the reference was not scored by champion v{version} ({type(exc).__name__}: {first}); "
            "prediction drift compares the predicted class with the training target"
        ]


def _no_champion(use_case: UseCase) -> MonitoringDecision:
    return MonitoringDecision(
        use_case.name, "insufficient_data", [f"no @champion of {use_case.model_name} yet: train one first"],
        0.0, [], {}, use_case.gate.primary_metric, None,
    )  # fmt: skip


def headline_metrics(summary: MonitoringSummary, decision: MonitoringDecision) -> dict[str, float]:
    """The numbers a monitoring run is charted by: drift, rows, window performance (`perf_<metric>`), degradation,
    the label lag (`labelled_share`, `label_delay_median_hours`) and the data-quality findings."""
    values = {
        METRIC_DRIFT_SHARE: summary.drift.share_of_drifted_columns,
        "drifted_columns": float(summary.drift.number_of_drifted_columns),
        "rows": float(summary.rows),
        "labelled_rows": float(summary.labelled_rows),
        **{f"perf_{k}": v for k, v in summary.performance.items()},
    }
    if decision.degradation is not None:
        values["degradation"] = decision.degradation
    if summary.prediction_drift is not None:
        values["prediction_drift_score"] = summary.prediction_drift.score
    if summary.label_lag is not None:
        values["labelled_share"] = summary.label_lag.labelled_share
        if summary.label_lag.median_delay_hours is not None:
            values["label_delay_median_hours"] = summary.label_lag.median_delay_hours
    values["null_share_findings"] = float(len(summary.null_share_findings))
    return values


def record_monitoring_run(
    summary: MonitoringSummary,
    decision: MonitoringDecision,
    window_end: datetime,
    tags: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log the reports as artifacts and the headline numbers as metrics of a run in
    `<use_case>-monitoring`; returns the MLflow run id."""
    from mlops.mlflow.monitoring import log_monitoring_run

    return log_monitoring_run(
        summary.use_case,
        f"monitor-{summary.run_key}",
        window_end=window_end,
        metrics=headline_metrics(summary, decision),
        tags={
            TAG_MONITORING_USE_CASE: summary.use_case,
            TAG_MONITORING_ACTION: decision.action,
            TAG_MONITORING_DRIFT_ENGINE: summary.drift_engine,
            **(tags or {}),
        },
        decision=decision.to_dict(),
        report_dir=summary.report_dir,
        tracking_uri=tracking_uri,
    )
