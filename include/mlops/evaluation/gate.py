"""The promotion gate: absolute thresholds, the allowed regression against the champion, the worst slice.

Pure functions over metric dictionaries, no MLflow, so every rule is unit-tested
and the reasons are the same text in logs, run tags and model-version tags.

Why not `mlflow.validate_evaluation_results`: its `MetricThreshold.min_relative_change`
must lie in [0, 1] and demands an *improvement* over the baseline, so it cannot
express "at most 5 % worse than the champion" (`gate.max_regression`), and it
raises on the first failure instead of listing every reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops.config import METRIC_DIRECTIONS, UseCase

# Float noise must not fail a gate that compares a model with itself.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate may become `@champion`, and why (failures only when it may not)."""

    passed: bool
    reasons: list[str]
    candidate_metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    primary_metric: str = ""
    candidate_key: str | None = None
    champion_error: str | None = None
    """Set when a champion exists but could not be loaded or scored on this holdout."""
    checks: list[str] = field(default_factory=list)
    """Every check, passed or failed, for the record."""
    candidate_slices: dict[str, dict[str, float]] = field(default_factory=dict)
    """The candidate's primary metric per slice value (`gate.slices`) on the holdout."""
    champion_slices: dict[str, dict[str, float]] = field(default_factory=dict)
    """The champion's, on the same holdout rows."""
    slice_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    """How many holdout rows each slice value has."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        return cls(**data)

    @property
    def summary(self) -> str:
        return ("passed: " if self.passed else "failed: ") + "; ".join(self.reasons)


def fmt(value: float) -> str:
    """Short human form: 130.2, 120, 0.9883, 12345.6."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.1f}"
    return f"{value:.4g}"


def is_better(metric: str, value: float, other: float) -> bool:
    """True if `value` is strictly better than `other` for `metric`."""
    return value < other if METRIC_DIRECTIONS[metric] == "min" else value > other


def relative_loss(metric: str, candidate: float, champion: float) -> float:
    """How much worse the candidate is, as a fraction of |champion| (negative = better)."""
    worse_by = candidate - champion if METRIC_DIRECTIONS[metric] == "min" else champion - candidate
    if champion == 0:
        return 0.0 if worse_by <= 0 else math.inf
    return worse_by / abs(champion)


def threshold_checks(use_case: UseCase, metrics: dict[str, float]) -> tuple[list[str], list[str]]:
    """(failures, all checks) of the absolute thresholds in `gate.thresholds`."""
    failures: list[str] = []
    checks: list[str] = []
    for metric, bound in use_case.gate.thresholds.items():
        value = metrics.get(metric)
        if value is None:
            text = f"{metric} is missing from the candidate's metrics (undefined on this holdout?)"
            failures.append(text)
            checks.append(text)
            continue
        if bound.max is not None:
            ok = value <= bound.max + _TOLERANCE
            text = f"{metric} {fmt(value)} {'<=' if ok else '>'} max {fmt(bound.max)}"
            checks.append(text)
            if not ok:
                failures.append(text)
        if bound.min is not None:
            ok = value >= bound.min - _TOLERANCE
            text = f"{metric} {fmt(value)} {'>=' if ok else '<'} min {fmt(bound.min)}"
            checks.append(text)
            if not ok:
                failures.append(text)
    return failures, checks


def regression_check(
    use_case: UseCase, candidate: float, champion: float, champion_version: str | None
) -> tuple[bool, str]:
    """(ok, reason) for the primary metric against the champion, allowing `gate.max_regression`."""
    metric = use_case.gate.primary_metric
    allowed = use_case.gate.max_regression
    loss = relative_loss(metric, candidate, champion)
    who = f"champion v{champion_version}" if champion_version else "the champion"
    head = f"{metric} {fmt(candidate)}"
    if loss <= _TOLERANCE:
        if abs(loss) <= _TOLERANCE:
            return True, f"{head} equals {who} ({fmt(champion)})"
        return True, f"{head} is {-loss:.1%} better than {who} ({fmt(champion)})"
    ok = loss <= allowed + _TOLERANCE
    loss_text = "infinitely" if math.isinf(loss) else f"{loss:.1%}"
    return ok, f"{head} is {loss_text} worse than {who} ({fmt(champion)}); allowed {allowed:.1%}"


def slice_checks(
    use_case: UseCase,
    candidate_slices: dict[str, dict[str, float]],
    champion_slices: dict[str, dict[str, float]],
    champion_version: str | None,
) -> tuple[list[str], list[str]]:
    """(failures, all checks) of the worst slice of each `gate.slices` feature against the champion.

    Only slice values both models were scored on count (a value absent from the holdout,
    or with the metric undefined there, says nothing). Judged when `gate.max_slice_regression`
    is set; otherwise the worst slice is only recorded.
    """
    allowed = use_case.gate.max_slice_regression
    metric = use_case.gate.primary_metric
    who = f"champion v{champion_version}" if champion_version else "the champion"
    failures: list[str] = []
    checks: list[str] = []
    for feature in use_case.gate.slices:
        candidate, champion = candidate_slices.get(feature, {}), champion_slices.get(feature, {})
        shared = [value for value in candidate if value in champion]
        if not shared:
            checks.append(f"slices of {feature}: none scored for both candidate and {who}")
            continue
        worst = max(shared, key=lambda value: relative_loss(metric, candidate[value], champion[value]))
        loss = relative_loss(metric, candidate[worst], champion[worst])
        head = f"worst slice {feature}={worst}: {metric} {fmt(candidate[worst])} vs {who} {fmt(champion[worst])}"
        loss_text = "infinitely worse" if math.isinf(loss) else f"{loss:+.1%}"
        if allowed is None:
            checks.append(f"{head} ({loss_text}, not judged: gate.max_slice_regression is unset)")
            continue
        ok = loss <= allowed + _TOLERANCE
        text = f"{head} ({loss_text}) {'within' if ok else 'beyond'} allowed {allowed:.1%}"
        checks.append(text)
        if not ok:
            failures.append(text)
    return failures, checks


def check_gate(
    use_case: UseCase,
    candidate_metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    *,
    champion_version: str | None = None,
    champion_error: str | None = None,
    candidate_key: str | None = None,
    candidate_slices: dict[str, dict[str, float]] | None = None,
    champion_slices: dict[str, dict[str, float]] | None = None,
    slice_rows: dict[str, dict[str, int]] | None = None,
) -> GateDecision:
    """Decide promotion: the absolute thresholds, then no regression beyond `gate.max_regression`,
    then (with `gate.max_slice_regression`) no slice worse than the champion's beyond that margin.

    `champion_metrics` and `champion_slices` must come from scoring the champion on the
    *same* holdout. With no champion at all (`champion_version` None) the thresholds alone
    decide. A champion that exists but could not be scored (`champion_error`) fails the
    gate: the candidate cannot be shown not to be worse, so a person decides.
    """
    primary = use_case.gate.primary_metric
    failures, checks = threshold_checks(use_case, candidate_metrics)
    candidate_primary = candidate_metrics.get(primary)
    if candidate_primary is None and not any(c.startswith(f"{primary} is missing") for c in failures):
        text = f"primary metric {primary} is missing from the candidate's metrics"
        failures.append(text)
        checks.append(text)

    if champion_error is not None:
        who = f"champion v{champion_version}" if champion_version else "the champion"
        text = (
            f"{who} could not be scored on this holdout ({champion_error}), so the candidate cannot be "
            f"compared with it and is not promoted automatically; if the change is intended (for example "
            f"new features), promote the candidate's version by hand with mlops.promotion.rollback.rollback"
            f"(model_name, version=<its version>, reason=..., requested_by=...)"
        )
        failures.append(text)
        checks.append(text)
    elif champion_version is None or champion_metrics is None:
        checks.append("no champion yet: judged on the absolute thresholds only")
    elif candidate_primary is not None:
        champion_primary = champion_metrics.get(primary)
        if champion_primary is None:
            text = (
                f"champion v{champion_version} has no {primary} on this holdout, so the candidate cannot be "
                f"compared with it; promote by hand with mlops.promotion.rollback.rollback if intended"
            )
            failures.append(text)
            checks.append(text)
        else:
            ok, text = regression_check(use_case, candidate_primary, champion_primary, champion_version)
            checks.append(text)
            if not ok:
                failures.append(text)
    if use_case.gate.slices and champion_slices is not None and champion_error is None:
        slice_failures, slice_texts = slice_checks(use_case, candidate_slices or {}, champion_slices, champion_version)
        failures += slice_failures
        checks += slice_texts

    passed = not failures
    return GateDecision(
        passed=passed,
        reasons=checks if passed else failures,
        candidate_metrics=dict(candidate_metrics),
        champion_version=champion_version,
        champion_metrics=dict(champion_metrics) if champion_metrics is not None else None,
        primary_metric=primary,
        candidate_key=candidate_key,
        champion_error=champion_error,
        checks=checks,
        candidate_slices=dict(candidate_slices or {}),
        champion_slices=dict(champion_slices or {}),
        slice_rows=dict(slice_rows or {}),
    )
