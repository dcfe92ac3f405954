"""A rollout read from and written to the registry: find it, gather its evidence, apply its decision.

The rollout's state lives in the registry only: the `@shadow` or `@canary` alias and its
version's tags (`mlops.rollout.shadow_at`; `canary_at`, `canary_step`, `canary_step_at`,
`canary_breach`), so a restarted scheduler or service picks it up where it was. Promote is
today's promotion (`mlops.promotion.decisions.move_champion`: `@previous` first, then
`@champion`) followed by removing the rollout alias; reject makes the version `@challenger`
with the reasons and removes the alias (for a canary, that is the rollback: the service
stops routing to it at its next poll, and already sends it nothing after a breach); advance
moves a canary's step tag on; wait moves nothing. Every run writes its decision and evidence
as `mlops.rollout.progress` (the page shows it); a final decision's evidence goes on the
version as `mlops.rollout.*` tags before any alias moves.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from mlops.config import UseCase, resolve_use_case
from mlops.mlflow import registry
from mlops.naming import (
    CANARY,
    CHAMPION,
    PREVIOUS,
    ROLE_CANARY,
    SHADOW,
    TAG_CANARY_AT,
    TAG_CANARY_BREACH,
    TAG_CANARY_STEP,
    TAG_CANARY_STEP_AT,
    TAG_ROLLOUT_CANDIDATE_METRIC,
    TAG_ROLLOUT_CHAMPION_METRIC,
    TAG_ROLLOUT_CHAMPION_VERSION,
    TAG_ROLLOUT_DECIDED_AT,
    TAG_ROLLOUT_DECIDED_BY,
    TAG_ROLLOUT_DECISION,
    TAG_ROLLOUT_EVIDENCE,
    TAG_ROLLOUT_INTERVAL,
    TAG_ROLLOUT_MCNEMAR,
    TAG_ROLLOUT_METRIC,
    TAG_ROLLOUT_PROGRESS,
    TAG_ROLLOUT_REASONS,
    TAG_ROLLOUT_ROWS,
    TAG_SHADOW_AT,
)
from mlops.promotion.decisions import applied_at, keep_as_challenger, move_champion
from mlops.rollout.decision import RolloutDecision, decide, decide_canary, describe_interval, describe_mcnemar
from mlops.rollout.evidence import Evidence, compare, pair_rows, split_rows

log = logging.getLogger(__name__)

Strategy = Literal["shadow", "canary"]


@dataclass(frozen=True)
class Rollout:
    """The rollout in progress: the `@shadow` or `@canary` version, since when, beside which champion."""

    use_case: str
    model_name: str
    strategy: Strategy
    version: str
    since: str
    champion_version: str | None
    since_recorded: bool = True
    """False when the alias was set without its start tag (by hand): this run's time starts it."""
    step: int | None = None
    """A canary's step (index into `deployment.canary_steps`); None for a shadow."""
    step_at: str | None = None
    breach: str | None = None
    """A canary guard breach the service recorded (its reason), or None."""

    @property
    def alias(self) -> str:
        return SHADOW if self.strategy == "shadow" else CANARY

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        return cls(**data)


@dataclass(frozen=True)
class RolloutResult:
    action: Literal["promoted", "rejected", "advanced", "waiting"]
    version: str
    champion: str | None
    previous: str | None
    reasons: list[str]
    decision: dict[str, Any] = field(default_factory=dict)
    strategy: str = "shadow"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_rollout(use_case: UseCase | str, now: datetime, *, record: bool = True) -> Rollout | None:
    """The use case's rollout in progress, or None when neither `@shadow` nor `@canary` exists.

    An alias set by hand has no start time: `now` (the run's time) becomes it, recorded on
    the version (unless `record` is False: a reader such as monitoring), so the deadline
    runs from the first rollout run that saw it.
    """
    uc = resolve_use_case(use_case)
    for strategy, alias, since_tag in (("shadow", SHADOW, TAG_SHADOW_AT), ("canary", CANARY, TAG_CANARY_AT)):
        version = registry.alias_version(uc.model_name, alias)
        if version is None:
            continue
        tags = registry.version_tags(uc.model_name, version)
        since = tags.get(since_tag)
        recorded = since is not None
        if since is None:
            since = now.isoformat(timespec="seconds")
            start = {since_tag: since}
            if strategy == "canary":
                start |= {TAG_CANARY_STEP: tags.get(TAG_CANARY_STEP) or "0", TAG_CANARY_STEP_AT: since}
            if record:
                registry.set_version_tags(uc.model_name, version, start)
            tags = {**tags, **start}
        champion = registry.alias_version(uc.model_name, CHAMPION)
        if strategy == "shadow":
            return Rollout(uc.name, uc.model_name, "shadow", version, since, champion, recorded)
        return Rollout(
            uc.name, uc.model_name, "canary", version, since, champion, recorded,
            step=uc.deployment.canary_step(tags.get(TAG_CANARY_STEP)),
            step_at=tags.get(TAG_CANARY_STEP_AT) or since, breach=breach_reason(tags),
        )  # fmt: skip
    return None


def breach_reason(tags: dict[str, str]) -> str | None:
    """The reason of a guard breach the service recorded on the version, or None."""
    raw = tags.get(TAG_CANARY_BREACH)
    if not raw:
        return None
    try:
        breach = json.loads(raw)
        return f"{breach.get('reason')} (seen by {breach.get('by')} at {breach.get('at')})"
    except (ValueError, AttributeError):
        return raw


def judge_rollout(
    use_case: UseCase | str,
    rollout: Rollout,
    now: datetime,
    *,
    since: datetime | None = None,
    uri: str | None = None,
    labels_uri: str | None = None,
) -> RolloutDecision:
    """Read the log from the rollout's start (or `since`) to `now` with its labels, compare, decide."""
    from mlops.predictionlog.predictions import read_predictions

    uc = resolve_use_case(use_case)
    started = _naive(datetime.fromisoformat(rollout.since))
    frame = read_predictions(uc, since or started, None, with_labels=True, uri=uri, labels_uri=labels_uri)
    rules = uc.deployment
    # A shadow scored the champion's own requests: paired. A canary answered others: unpaired.
    rows = pair_rows(frame, rollout.version) if rollout.strategy == "shadow" else split_rows(frame, rollout.version)
    evidence = compare(
        uc.task, uc.gate.primary_metric, rows, rollout.version, confidence=rules.confidence, seed=uc.training.seed
    )
    if rollout.strategy == "shadow":
        return decide(evidence, rules, started, _naive(now))
    step_since = _naive(datetime.fromisoformat(rollout.step_at or rollout.since))
    return decide_canary(
        evidence, rules, started, _naive(now),
        step=rollout.step or 0, step_requests=_answered_since(frame, rollout.version, step_since),
        breach=rollout.breach,
    )  # fmt: skip


def _answered_since(frame: Any, version: str, since: datetime) -> int:
    """Requests the canary version answered at or after `since` (logged time): its count at this step."""
    import pandas as pd

    if frame.empty or "role" not in frame:
        return 0
    mine = (frame["role"].astype(str) == ROLE_CANARY) & (frame["model_version"].astype(str) == str(version))
    logged = pd.to_datetime(frame["logged_at"]) if "logged_at" in frame else None
    if logged is not None:
        mine &= logged >= pd.Timestamp(since)
    return int(frame.loc[mine, "request_id"].nunique())


def live_comparison(use_case: UseCase | str, now: datetime) -> dict[str, Any] | None:
    """What `rollout_<use case>` would decide now, with its evidence, read only: the monitoring report shows
    it beside the champion's window. None when no rollout is in progress."""
    uc = resolve_use_case(use_case)
    rollout = current_rollout(uc, now, record=False)
    if rollout is None:
        return None
    comparison: dict[str, Any] = json.loads(progress_json(rollout, judge_rollout(uc, rollout, now), uc))
    return comparison


def abort_decision(decision: RolloutDecision, reason: str, requested_by: str) -> RolloutDecision:
    """The decision replaced by a person's rejection, the evidence so far kept on the record."""
    why = f"rollout ended by hand by {requested_by}: {reason}"
    return RolloutDecision(**{**asdict(decision), "evidence": decision.evidence, "action": "reject",
                              "reasons": [why, *decision.reasons]})  # fmt: skip


def apply_rollout(use_case: UseCase | str, rollout: Rollout, decision: RolloutDecision, run_key: str) -> RolloutResult:
    """Promote, reject, advance or leave the candidate as decided; the evidence is on the version first."""
    uc = resolve_use_case(use_case)
    name, version, alias = uc.model_name, rollout.version, rollout.alias
    champion = registry.alias_version(name, CHAMPION)
    previous = registry.alias_version(name, PREVIOUS)
    if registry.alias_version(name, alias) != version:
        # Another run ended this rollout since the decision was read: deciding twice would move aliases twice.
        note = f"v{version} is no longer @{alias}: this rollout has ended; nothing moved"
        return RolloutResult("waiting", version, champion, previous, [note], decision.to_dict(), rollout.strategy)
    registry.set_version_tags(name, version, {TAG_ROLLOUT_PROGRESS: progress_json(rollout, decision, uc)})
    if decision.action == "wait":
        log.info("%s v%s: waiting: %s", name, version, "; ".join(decision.reasons))
        return RolloutResult("waiting", version, champion, previous, decision.reasons, decision.to_dict(),
                             rollout.strategy)  # fmt: skip
    if decision.action == "advance":
        step = (rollout.step or 0) + 1
        registry.set_version_tags(name, version, {TAG_CANARY_STEP: str(step), TAG_CANARY_STEP_AT: applied_at()})
        log.info("%s v%s: canary advanced to step %d: %s", name, version, step, "; ".join(decision.reasons))
        return RolloutResult("advanced", version, champion, previous, decision.reasons, decision.to_dict(),
                             rollout.strategy)  # fmt: skip
    registry.set_version_tags(name, version, evidence_tags(decision))
    reasons = list(decision.reasons)
    if decision.action == "promote":
        promotion = move_champion(name, version, champion, previous, reasons, run_key)
        champion, previous, action = promotion.champion, promotion.previous, "promoted"
    else:
        keep_as_challenger(name, version, "rollout rejected: " + "; ".join(reasons), run_key)
        action = "rejected"
    registry.delete_alias(name, alias)
    # Written last: the rollout run key's mark that this decision is applied.
    registry.set_version_tags(name, version, {TAG_ROLLOUT_DECIDED_AT: applied_at(), TAG_ROLLOUT_DECIDED_BY: run_key})
    log.info("%s v%s %s on live evidence: %s", name, version, action, "; ".join(reasons))
    return RolloutResult(action, version, champion, previous, reasons, decision.to_dict(), rollout.strategy)  # type: ignore[arg-type]


def progress_json(rollout: Rollout, decision: RolloutDecision, use_case: UseCase) -> str:
    """`mlops.rollout.progress`: this run's decision, evidence and what would end the rollout (the page's panel)."""
    steps = use_case.deployment.canary_steps if rollout.strategy == "canary" else None
    step = rollout.step if rollout.strategy == "canary" else None
    progress = {
        "strategy": rollout.strategy,
        "version": rollout.version,
        "champion_version": rollout.champion_version,
        "since": rollout.since,
        "deadline": decision.deadline,
        "step": step,
        "fraction": steps[min(step or 0, len(steps) - 1)] if steps else None,
        "steps": steps,
        "breach": rollout.breach,
        "action": decision.action,
        "reasons": decision.reasons,
        "decided_at": decision.decided_at,
        "evidence": decision.evidence.to_dict(),
        "ends_when": decision.ends_when,
    }
    return json.dumps(progress, default=str)


def evidence_tags(decision: RolloutDecision) -> dict[str, str]:
    """The decision and its evidence as `mlops.rollout.*` model-version tags."""
    evidence: Evidence = decision.evidence
    # McNemar's counts and p only where they apply (a paired classification); the evidence JSON holds them too.
    mcnemar = {TAG_ROLLOUT_MCNEMAR: describe_mcnemar(evidence)} if evidence.mcnemar_p is not None else {}
    return {
        **mcnemar,
        TAG_ROLLOUT_DECISION: decision.action,
        TAG_ROLLOUT_REASONS: "; ".join(decision.reasons),
        TAG_ROLLOUT_ROWS: str(evidence.rows),
        TAG_ROLLOUT_METRIC: evidence.metric,
        TAG_ROLLOUT_CHAMPION_METRIC: _number(evidence.champion_metric),
        TAG_ROLLOUT_CANDIDATE_METRIC: _number(evidence.candidate_metric),
        TAG_ROLLOUT_CHAMPION_VERSION: ",".join(evidence.champion_versions) or "none",
        TAG_ROLLOUT_INTERVAL: describe_interval(evidence),
        TAG_ROLLOUT_EVIDENCE: json.dumps(decision.to_dict(), default=str),
    }


def _number(value: float | None) -> str:
    return "none" if value is None else repr(float(value))


def _naive(moment: datetime) -> datetime:
    """Naive UTC, as the log stores times."""
    from mlops.predictionlog.frames import to_timestamp

    return to_timestamp(moment)
