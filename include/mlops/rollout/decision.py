"""The rollout decision: promote the candidate, reject it, move a canary a step on, or wait.

Pure: the evidence (`mlops.rollout.evidence`), the rules (`deployment` in the config) and
the run's own clock in, a decision with its reasons out.

A shadow (`decide`), in order:
1. fewer than `min_labeled_rows` paired labelled requests: wait;
2. a classification whose McNemar test finds the shadow less often right than the champion
   on the same requests (more champion-only-right than shadow-only-right requests, exact
   p < 1 - `confidence`): reject, whatever the primary metric says: a model that answers
   clients wrong more often is not promoted on another metric, and more traffic would only
   make the two tests surer of their disagreement;
3. no metric or interval (undefined on these labels): wait;
4. the interval's lower bound above `min_improvement`: promote (better, with `confidence`);
   for a classification the reason quotes McNemar too (by 2, it is not against);
5. the interval's upper bound below `min_improvement`: reject (worse, or not better by
   the margin asked, with `confidence`; with `min_improvement: 0` that is "worse");
6. otherwise the interval holds both: wait.
So the bootstrap on the primary metric decides a promotion, and McNemar, the exact paired
test of how often each side is right, can only veto it (or reject earlier); a shadow better
by McNemar alone waits for its primary metric.

A canary (`decide_canary`), in order:
1. the service saw a guard breach (error rate or p99, `mlops.rollout.canary_breach`): reject,
   a rollback (the service already sends it no traffic);
2. labelled rows enough on both sides and the interval's upper bound below 0: reject, a
   rollback (worse with `confidence`, at any step);
3. not at the last step: advance once the step's canary requests reach
   `canary_min_requests`, else wait;
4. at the last step: the shadow's rules 1-6 on the unpaired evidence (McNemar needs pairs: it
   does not apply).

Either way, a wait at or after `deadline_hours` from the rollout's start is a rejection,
with the wait's reason in it: a rollout never waits forever.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from mlops.config import Deployment
from mlops.evaluation.gate import fmt
from mlops.rollout.evidence import Evidence

Action = Literal["promote", "reject", "wait", "advance"]


@dataclass(frozen=True)
class RolloutDecision:
    action: Action
    reasons: list[str]
    evidence: Evidence
    since: str
    """When the rollout began (`@shadow` or `@canary` set)."""
    deadline: str
    decided_at: str
    """The run's time the decision was taken at (its data interval end), not the wall clock."""
    rules: dict[str, Any] = field(default_factory=dict)
    strategy: str = "shadow"
    step: int | None = None
    """A canary's step when judged (an index into `canary_steps`); None for a shadow."""
    ends_when: list[str] = field(default_factory=list)
    """What would end the rollout, or move it on, in words: the UI shows them."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "evidence": self.evidence.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutDecision:
        return cls(**{**data, "evidence": Evidence.from_dict(data["evidence"])})

    @property
    def summary(self) -> str:
        return f"{self.action}: " + "; ".join(self.reasons)


def describe_interval(evidence: Evidence) -> str:
    """`[+1.2%, +4.5%] at 95%`: the interval of the candidate's relative gain, or "none"."""
    if evidence.interval is None:
        return "none"
    low, high = evidence.interval
    return f"[{low:+.2%}, {high:+.2%}] at {evidence.confidence:.0%}"


def describe_mcnemar(evidence: Evidence) -> str:
    """`McNemar: 12 requests right by the candidate only, 30 by the champion only, exact p = 0.0081`, or "none"."""
    if evidence.mcnemar_p is None:
        return "none"
    return (
        f"McNemar: {evidence.candidate_only_right} requests right by the candidate only, "
        f"{evidence.champion_only_right} by the champion only, exact p = {evidence.mcnemar_p:.2g}"
    )


def less_often_right(evidence: Evidence) -> bool:
    """McNemar finds the candidate less often right than the champion, with the evidence's confidence."""
    if evidence.mcnemar_p is None or evidence.champion_only_right is None or evidence.candidate_only_right is None:
        return False
    worse = evidence.candidate_only_right < evidence.champion_only_right
    return worse and evidence.mcnemar_p < 1 - evidence.confidence


def decide(evidence: Evidence, rules: Deployment, shadow_since: datetime, now: datetime) -> RolloutDecision:
    """Promote, reject or wait on a shadow's paired `evidence` under `rules`, at the run's time `now`."""
    action, reasons = _judge(evidence, rules, "shadow")
    ends = _ends_when(rules, mcnemar=evidence.mcnemar_p is not None)
    return _decision(action, reasons, evidence, rules, shadow_since, now, "shadow", None, ends)


def decide_canary(
    evidence: Evidence,
    rules: Deployment,
    since: datetime,
    now: datetime,
    *,
    step: int,
    step_requests: int,
    breach: str | None = None,
) -> RolloutDecision:
    """Reject (roll back), advance, promote or wait on a canary at `step` that answered `step_requests` there."""
    step = min(max(step, 0), len(rules.canary_steps) - 1)
    fraction = rules.canary_steps[step]
    last = step == len(rules.canary_steps) - 1
    ends = _ends_when(rules, step)
    action: Action
    if breach:
        action, reasons = "reject", [f"rolled back: the service saw the canary breach its guard: {breach}"]
    elif _surely_worse(evidence, rules):
        action, reasons = "reject", [f"rolled back at {fraction:.0%}: {_scores(evidence, 'canary')}: worse than "
                                     f"the champion with {evidence.confidence:.0%} confidence"]  # fmt: skip
    elif last:
        action, reasons = _judge(evidence, rules, "canary")
    elif step_requests >= rules.canary_min_requests:
        following = rules.canary_steps[step + 1]
        action, reasons = (
            "advance",
            [
                f"{step_requests} requests answered at {fraction:.0%} with no guard breach "
                f"(at least {rules.canary_min_requests}): on to {following:.0%}"
            ],
        )
    else:
        action, reasons = (
            "wait",
            [f"{step_requests} of {rules.canary_min_requests} requests answered at {fraction:.0%} so far"],
        )
    return _decision(action, reasons, evidence, rules, since, now, "canary", step, ends)


def _decision(
    action: Action,
    reasons: list[str],
    evidence: Evidence,
    rules: Deployment,
    since: datetime,
    now: datetime,
    strategy: str,
    step: int | None,
    ends_when: list[str],
) -> RolloutDecision:
    deadline = since + timedelta(hours=rules.deadline_hours)
    if action == "wait" and now >= deadline:
        action = "reject"
        reasons = [
            f"no decision by the deadline ({rules.deadline_hours:g} h after @{strategy} was set, "
            f"{deadline.isoformat()}): rejected",
            *reasons,
        ]
    return RolloutDecision(
        action=action,
        reasons=reasons,
        evidence=evidence,
        since=since.isoformat(),
        deadline=deadline.isoformat(),
        decided_at=now.isoformat(),
        rules=rules.model_dump(exclude={"strategy", "shadow_timeout_ms"}),
        strategy=strategy,
        step=step,
        ends_when=ends_when,
    )


def _surely_worse(evidence: Evidence, rules: Deployment) -> bool:
    enough = evidence.rows >= rules.min_labeled_rows
    return enough and evidence.interval is not None and evidence.interval[1] < 0


def _scores(evidence: Evidence, role: str) -> str:
    candidate, champion = (
        "none" if value is None else fmt(value) for value in (evidence.candidate_metric, evidence.champion_metric)
    )
    return (
        f"{evidence.metric} {role} v{evidence.candidate_version} {candidate} vs champion {champion} "
        f"on {_compared(evidence)}; relative gain {describe_interval(evidence)}"
    )


def _compared(evidence: Evidence) -> str:
    if evidence.paired:
        return f"{evidence.rows} requests"
    return f"{evidence.candidate_labelled} and {evidence.champion_rows} labelled requests"


def _judge(evidence: Evidence, rules: Deployment, role: str) -> tuple[Action, list[str]]:
    if evidence.rows < rules.min_labeled_rows:
        if evidence.paired:
            have = (
                f"{evidence.rows} of {rules.min_labeled_rows} labelled requests scored by both champion and shadow "
                f"({evidence.candidate_rows} scored by the shadow so far)"
            )
        else:
            have = (
                f"{evidence.candidate_labelled} canary and {evidence.champion_rows} champion labelled requests of "
                f"the {rules.min_labeled_rows} each side needs ({evidence.candidate_rows} answered by the canary)"
            )
        return "wait", [have]
    if less_often_right(evidence):
        return "reject", [
            f"{describe_mcnemar(evidence)}: less often right than the champion on the same requests with "
            f"{evidence.confidence:.0%} confidence ({_scores(evidence, role)})"
        ]
    if evidence.interval is None or evidence.champion_metric is None or evidence.candidate_metric is None:
        return "wait", [f"no comparison on {_compared(evidence)}: {evidence.note or 'no metric'}"]
    low, high = evidence.interval
    scores = _scores(evidence, role)
    margin = f"the required gain {rules.min_improvement:.2%}"
    if low > rules.min_improvement:
        reasons = [f"{scores}: better than {margin} with {evidence.confidence:.0%} confidence"]
        if evidence.mcnemar_p is not None:
            reasons.append(f"{describe_mcnemar(evidence)}: not less often right than the champion")
        return "promote", reasons
    if high < rules.min_improvement:
        verdict = "worse than the champion" if high < 0 else f"not better by {margin}"
        return "reject", [f"{scores}: {verdict} with {evidence.confidence:.0%} confidence"]
    return "wait", [f"{scores}: the interval includes {margin}; more labelled traffic is needed"]


def _ends_when(rules: Deployment, step: int | None = None, *, mcnemar: bool = False) -> list[str]:
    """The rules that would end (or move on) the rollout, as sentences for the page."""
    interval = f"the {rules.confidence:.0%} interval of the relative gain"
    need = f"at least {rules.min_labeled_rows} labelled requests"
    promote = f"promoted when {interval} lies above {rules.min_improvement:+.2%} ({need})"
    reject = (
        f"rejected when it lies below {rules.min_improvement:+.2%}, or at the deadline ({rules.deadline_hours:g} h)"
    )
    if step is None:
        if mcnemar:
            promote += " and McNemar's test does not find it less often right"
            reject = (
                f"rejected when it lies below {rules.min_improvement:+.2%}, when McNemar's exact test finds it less "
                f"often right than the champion (p < {1 - rules.confidence:.2g}), or at the deadline "
                f"({rules.deadline_hours:g} h)"
            )
        return [promote, reject]
    steps = rules.canary_steps
    sentences = [
        f"rolled back at once by the service when over {rules.canary_max_error_rate:.1%} of its requests fail or "
        f"time out (>{rules.canary_timeout_ms:g} ms), or its p99 exceeds {rules.canary_max_latency_ratio:g}x the "
        f"champion's + {rules.canary_latency_slack_ms:g} ms",
        f"rolled back when {interval} lies below 0 ({need} on each side)",
    ]
    if step < len(steps) - 1:
        sentences.append(
            f"moves to {steps[step + 1]:.0%} after {rules.canary_min_requests} requests at {steps[step]:.0%}"
        )
    else:
        sentences += [promote, reject]
    return sentences
