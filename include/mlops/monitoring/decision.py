"""The retraining decision: pure, from a monitoring summary and the facts only the caller knows.

No I/O and no clock: the same summary and guards always give the same decision, so
each guard is tested alone (tests/unit/test_monitoring.py) and a re-run of a window
decides as the first run did.

Checked in order: a data bug, too little data, then the triggers (drift share,
performance of the current champion version on its own predictions against its
holdout), then the guards that hold a trigger back (a training run already active,
the cooldown after the last trigger). A feature's rising null share is a data-quality
finding: listed in `data_quality` and the reasons, alerted on its own, never a trigger; a
store-backed use case's training/serving skew likewise, in `skew`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from mlops.config import Monitoring, UseCase
from mlops.evaluation.gate import relative_loss

if TYPE_CHECKING:
    from mlops.monitoring.run import MonitoringSummary

Action = Literal["retrain", "none", "insufficient_data", "data_bug", "cooldown"]

TRAINING_ACTIVE = "a training run is already queued or running: not triggering another"


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
    performance_version: str | None = None
    """The model version whose own predictions `performance` was computed on."""
    performance_unavailable: dict[str, str] = field(default_factory=dict)
    """Each metric the task allows that could not be computed on the window, and why."""
    data_quality: list[str] = field(default_factory=list)
    """Data-quality findings (a feature's null share rising): their own alert, not a retrain."""
    skew: list[str] = field(default_factory=list)
    """Training/serving skew findings (served store features unlike the offline store's): their own alert."""

    @property
    def alert(self) -> bool:
        """Someone should hear about it: retraining, a suppressed trigger or a data bug."""
        return self.action in ("retrain", "cooldown", "data_bug")

    @property
    def data_quality_alert(self) -> bool:
        """A data-quality finding to alert on, whatever the action."""
        return bool(self.data_quality)

    @property
    def skew_alert(self) -> bool:
        """A skew finding to alert on, whatever the action: a bug to fix, not a reason to retrain."""
        return bool(self.skew)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alert": self.alert, "data_quality_alert": self.data_quality_alert,
                "skew_alert": self.skew_alert}  # fmt: skip


@dataclass(frozen=True)
class _Finding:
    """One check's outcome: its sentence for the reasons, and whether it calls for retraining."""

    text: str
    triggers: bool = False


def decide(use_case: UseCase, summary: MonitoringSummary, guards: Guards) -> MonitoringDecision:
    """Retrain, or say why not; the reasons list the triggers first, then everything else that was judged."""
    cfg = use_case.monitoring

    def decision(action: Action, reasons: list[str], degradation: float | None = None) -> MonitoringDecision:
        return MonitoringDecision(
            use_case=use_case.name, action=action, reasons=reasons,
            drift_share=summary.drift.share_of_drifted_columns, drifted_columns=summary.drift.drifted_columns,
            performance=dict(summary.performance), primary_metric=use_case.gate.primary_metric,
            degradation=degradation, performance_version=summary.performance_version,
            performance_unavailable=dict(summary.performance_unavailable),
            data_quality=list(summary.null_share_findings),
            skew=list(summary.skew.findings) if summary.skew is not None else [],
        )  # fmt: skip

    if guards.validation_passed is False:
        return decision("data_bug", [_data_bug(guards)])
    if summary.rows < cfg.min_rows:
        return decision("insufficient_data", [_too_few_rows(summary, cfg)])

    performance, degradation = _performance_finding(use_case, summary)
    findings = [_drift_finding(summary, cfg), performance]
    prediction_drift = _prediction_drift_note(summary)
    triggers = [f.text for f in findings if f.triggers]
    others = [f.text for f in findings if not f.triggers] + ([prediction_drift] if prediction_drift else [])
    others += [f"data quality: {finding}" for finding in summary.null_share_findings]
    if summary.skew is not None:
        others += [f"skew: {finding}" for finding in summary.skew.findings]
    if not triggers:
        return decision("none", others, degradation)
    reasons = [*triggers, *others]
    if guards.training_active:
        return decision("cooldown", [*reasons, TRAINING_ACTIVE], degradation)
    note, held_back = _cooldown(guards, cfg)
    return decision("cooldown" if held_back else "retrain", [*reasons, *note], degradation)


# --------------------------------------------------------------------------- the checks


def _data_bug(guards: Guards) -> str:
    detail = f": {guards.validation_details}" if guards.validation_details else ""
    return f"the window failed data validation{detail}; treated as a data bug, not drift: no retraining"


def _too_few_rows(summary: MonitoringSummary, cfg: Monitoring) -> str:
    return f"only {summary.rows} rows in the window (< monitoring.min_rows = {cfg.min_rows}): nothing decided"


def _drift_finding(summary: MonitoringSummary, cfg: Monitoring) -> _Finding:
    result, share = summary.drift, summary.drift.share_of_drifted_columns
    if not result.columns:
        return _Finding("no column could be compared for drift")
    if share >= cfg.drift_share_threshold:
        return _Finding(
            f"drift share {share:.2f} >= {cfg.drift_share_threshold} "
            f"({result.number_of_drifted_columns}/{len(result.columns)} columns: {', '.join(result.drifted_columns)})",
            triggers=True,
        )
    return _Finding(f"drift share {share:.2f} < {cfg.drift_share_threshold}")


def _performance_finding(use_case: UseCase, summary: MonitoringSummary) -> tuple[_Finding, float | None]:
    """The primary metric on the judged version's own labelled rows against its holdout, and the loss when judged."""
    cfg, metric = use_case.monitoring, use_case.gate.primary_metric
    window_value, champion_value = summary.performance.get(metric), summary.champion_metrics.get(metric)
    rows = summary.labelled_rows if summary.performance_rows is None else summary.performance_rows
    whose = f"champion v{summary.performance_version}" if summary.performance_version else "champion"
    if window_value is None:
        why = summary.performance_unavailable.get(metric, f"no {metric} for the window ({rows} labelled rows)")
        return _Finding(f"decay not judged: {metric} could not be computed for {whose}: {why}"), None
    if rows < cfg.min_rows:
        return _Finding(
            f"decay not judged: {rows} labelled rows of {whose} (< monitoring.min_rows = {cfg.min_rows})"
        ), None
    if champion_value is None:
        return _Finding(f"decay not judged: the champion has no holdout {metric}"), None
    degradation = relative_loss(metric, window_value, champion_value)
    text = (
        f"{metric} {window_value:.4g} vs champion {champion_value:.4g} ({degradation:+.1%} loss, "
        f"{whose} on its own {rows} labelled rows)"
    )
    allowed = cfg.performance_degradation
    if degradation > allowed:
        return _Finding(f"{text} > allowed {allowed:.0%}", triggers=True), degradation
    return _Finding(f"{text} within allowed {allowed:.0%}"), degradation


def _prediction_drift_note(summary: MonitoringSummary) -> str | None:
    """Prediction drift is reported, never a trigger: against the training target it is biased from the start."""
    drifted = summary.prediction_drift
    if drifted is None or not drifted.drifted:
        return None
    return (
        f"prediction drift against the reference {summary.prediction_reference} "
        f"({drifted.stattest} {drifted.score:.3g})"
    )


def _cooldown(guards: Guards, cfg: Monitoring) -> tuple[list[str], bool]:
    """What the last recorded trigger says about this one, and whether it holds this trigger back."""
    if guards.last_triggered_at is None:
        return [], False
    since = guards.now - guards.last_triggered_at
    if since < timedelta(0):
        # The recorded trigger is later than this window: a backfill or re-run of an earlier
        # window, or a second demo on the same MLOPS_HOME. It says nothing about the hours
        # before this window, so it must not hold the trigger back (else nothing ever retrains).
        return [
            f"the last recorded trigger ({guards.last_triggered_at.isoformat(sep=' ')}) is "
            f"{-since.total_seconds() / 3600:.1f} h after this window's end ({guards.now.isoformat(sep=' ')}): "
            "not a cooldown for this window"
        ], False
    if since < timedelta(hours=cfg.cooldown_hours):
        return [
            f"last retraining triggered {since.total_seconds() / 3600:.1f} h ago "
            f"(< monitoring.cooldown_hours = {cfg.cooldown_hours}): not triggering again"
        ], True
    return [], False
