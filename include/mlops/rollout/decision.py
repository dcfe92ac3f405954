"""The rollout decision: promote the shadow, reject it, or wait for more labelled traffic.

Pure: the evidence (`mlops.rollout.evidence`), the rules (`deployment` in the config) and
the run's own clock in, a decision with its reasons out. The rules, in order:

1. fewer than `min_labeled_rows` paired labelled requests: wait;
2. no metric or interval (undefined on these labels): wait;
3. the interval's lower bound above `min_improvement`: promote (better, with `confidence`);
4. the interval's upper bound below `min_improvement`: reject (worse, or not better by
   the margin asked, with `confidence`; with `min_improvement: 0` that is "worse");
5. otherwise the interval holds both: wait.
A wait at or after `deadline_hours` from when `@shadow` was set is a rejection, with the
wait's reason in it: a rollout never waits forever.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from mlops.config import Deployment
from mlops.evaluation.gate import fmt
from mlops.rollout.evidence import Evidence

Action = Literal["promote", "reject", "wait"]


@dataclass(frozen=True)
class RolloutDecision:
    action: Action
    reasons: list[str]
    evidence: Evidence
    shadow_since: str
    deadline: str
    decided_at: str
    """The run's time the decision was taken at (its data interval end), not the wall clock."""
    rules: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "evidence": self.evidence.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutDecision:
        return cls(**{**data, "evidence": Evidence.from_dict(data["evidence"])})

    @property
    def summary(self) -> str:
        return f"{self.action}: " + "; ".join(self.reasons)


def describe_interval(evidence: Evidence) -> str:
    """`[+1.2%, +4.5%] at 95%`: the interval of the shadow's relative gain, or "none"."""
    if evidence.interval is None:
        return "none"
    low, high = evidence.interval
    return f"[{low:+.2%}, {high:+.2%}] at {evidence.confidence:.0%}"


def decide(evidence: Evidence, rules: Deployment, shadow_since: datetime, now: datetime) -> RolloutDecision:
    """Promote, reject or wait on `evidence` under `rules`, at the run's time `now`."""
    deadline = shadow_since + timedelta(hours=rules.deadline_hours)
    action, reasons = _judge(evidence, rules)
    if action == "wait" and now >= deadline:
        action = "reject"
        reasons = [
            f"no decision by the deadline ({rules.deadline_hours:g} h after @shadow was set, {deadline.isoformat()}): "
            "rejected",
            *reasons,
        ]
    return RolloutDecision(
        action=action,
        reasons=reasons,
        evidence=evidence,
        shadow_since=shadow_since.isoformat(),
        deadline=deadline.isoformat(),
        decided_at=now.isoformat(),
        rules=rules.model_dump(exclude={"strategy", "shadow_timeout_ms"}),
    )


def _judge(evidence: Evidence, rules: Deployment) -> tuple[Action, list[str]]:
    metric, version = evidence.metric, f"v{evidence.shadow_version}"
    if evidence.rows < rules.min_labeled_rows:
        return "wait", [
            f"{evidence.rows} of {rules.min_labeled_rows} labelled requests scored by both champion and shadow "
            f"({evidence.shadow_rows} scored by the shadow so far)"
        ]
    if evidence.interval is None or evidence.champion_metric is None or evidence.shadow_metric is None:
        return "wait", [f"no comparison on {evidence.rows} requests: {evidence.note or 'no metric'}"]
    low, high = evidence.interval
    scores = (
        f"{metric} shadow {version} {fmt(evidence.shadow_metric)} vs champion {fmt(evidence.champion_metric)} "
        f"on {evidence.rows} requests; relative gain {describe_interval(evidence)}"
    )
    margin = f"the required gain {rules.min_improvement:.2%}"
    if low > rules.min_improvement:
        return "promote", [f"{scores}: better than {margin} with {evidence.confidence:.0%} confidence"]
    if high < rules.min_improvement:
        verdict = "worse than the champion" if high < 0 else f"not better by {margin}"
        return "reject", [f"{scores}: {verdict} with {evidence.confidence:.0%} confidence"]
    return "wait", [f"{scores}: the interval includes {margin}; more labelled traffic is needed"]
