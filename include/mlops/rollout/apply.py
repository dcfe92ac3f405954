"""A shadow rollout read from and written to the registry: find it, gather its evidence, apply its decision.

The rollout's state lives in the registry only (the `@shadow` alias and its version's
`mlops.rollout.shadow_at` tag), so a restarted scheduler or service picks it up where it
was. Promote is today's promotion (`mlops.promotion.decisions.move_champion`: `@previous`
first, then `@champion`) followed by removing `@shadow`; reject makes the version
`@challenger` with the reasons and removes `@shadow`; wait writes nothing. The evidence
goes on the version as `mlops.rollout.*` tags before any alias moves.
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
    CHAMPION,
    PREVIOUS,
    SHADOW,
    TAG_ROLLOUT_CHAMPION_METRIC,
    TAG_ROLLOUT_CHAMPION_VERSION,
    TAG_ROLLOUT_DECIDED_AT,
    TAG_ROLLOUT_DECIDED_BY,
    TAG_ROLLOUT_DECISION,
    TAG_ROLLOUT_EVIDENCE,
    TAG_ROLLOUT_INTERVAL,
    TAG_ROLLOUT_METRIC,
    TAG_ROLLOUT_REASONS,
    TAG_ROLLOUT_ROWS,
    TAG_ROLLOUT_SHADOW_METRIC,
    TAG_SHADOW_AT,
)
from mlops.promotion.decisions import applied_at, keep_as_challenger, move_champion
from mlops.rollout.decision import RolloutDecision, decide, describe_interval
from mlops.rollout.evidence import Evidence, compare, pair_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rollout:
    """The rollout in progress: the `@shadow` version, since when, beside which champion."""

    use_case: str
    model_name: str
    shadow_version: str
    shadow_since: str
    champion_version: str | None
    since_recorded: bool = True
    """False when `@shadow` was set without `mlops.rollout.shadow_at` (by hand): this run's time starts it."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        return cls(**data)


@dataclass(frozen=True)
class RolloutResult:
    action: Literal["promoted", "rejected", "waiting"]
    version: str
    champion: str | None
    previous: str | None
    reasons: list[str]
    decision: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_rollout(use_case: UseCase | str, now: datetime) -> Rollout | None:
    """The use case's rollout in progress, or None when no `@shadow` exists.

    A `@shadow` set by hand has no start time: `now` (the run's time) becomes it, recorded
    on the version, so the deadline runs from the first rollout run that saw it.
    """
    uc = resolve_use_case(use_case)
    version = registry.alias_version(uc.model_name, SHADOW)
    if version is None:
        return None
    since = registry.version_tags(uc.model_name, version).get(TAG_SHADOW_AT)
    recorded = since is not None
    if since is None:
        since = now.isoformat(timespec="seconds")
        registry.set_version_tags(uc.model_name, version, {TAG_SHADOW_AT: since})
    champion = registry.alias_version(uc.model_name, CHAMPION)
    return Rollout(uc.name, uc.model_name, version, since, champion, recorded)


def judge_rollout(
    use_case: UseCase | str,
    rollout: Rollout,
    now: datetime,
    *,
    since: datetime | None = None,
    uri: str | None = None,
    labels_uri: str | None = None,
) -> RolloutDecision:
    """Read the log from the rollout's start (or `since`) to `now` with its labels, pair, compare, decide."""
    from mlops.predictionlog.predictions import read_predictions

    uc = resolve_use_case(use_case)
    started = _naive(datetime.fromisoformat(rollout.shadow_since))
    frame = read_predictions(uc, since or started, None, with_labels=True, uri=uri, labels_uri=labels_uri)
    rules = uc.deployment
    evidence = compare(
        uc.task, uc.gate.primary_metric, pair_rows(frame, rollout.shadow_version), rollout.shadow_version,
        confidence=rules.confidence, seed=uc.training.seed,
    )  # fmt: skip
    return decide(evidence, rules, started, _naive(now))


def abort_decision(decision: RolloutDecision, reason: str, requested_by: str) -> RolloutDecision:
    """The decision replaced by a person's rejection, the evidence so far kept on the record."""
    why = f"rollout ended by hand by {requested_by}: {reason}"
    return RolloutDecision(**{**asdict(decision), "evidence": decision.evidence, "action": "reject",
                              "reasons": [why, *decision.reasons]})  # fmt: skip


def apply_rollout(use_case: UseCase | str, rollout: Rollout, decision: RolloutDecision, run_key: str) -> RolloutResult:
    """Promote, reject or leave the shadow as decided; the evidence is on the version before any alias moves."""
    uc = resolve_use_case(use_case)
    name, version = uc.model_name, rollout.shadow_version
    champion = registry.alias_version(name, CHAMPION)
    previous = registry.alias_version(name, PREVIOUS)
    if decision.action == "wait":
        log.info("%s v%s: waiting: %s", name, version, "; ".join(decision.reasons))
        return RolloutResult("waiting", version, champion, previous, decision.reasons, decision.to_dict())
    if registry.alias_version(name, SHADOW) != version:
        # Another run ended this rollout since the decision was read: deciding twice would move aliases twice.
        note = f"v{version} is no longer @shadow: this rollout has ended; nothing moved"
        return RolloutResult("waiting", version, champion, previous, [note], decision.to_dict())
    registry.set_version_tags(name, version, evidence_tags(decision))
    reasons = list(decision.reasons)
    if decision.action == "promote":
        promotion = move_champion(name, version, champion, previous, reasons, run_key)
        champion, previous, action = promotion.champion, promotion.previous, "promoted"
    else:
        keep_as_challenger(name, version, "rollout rejected: " + "; ".join(reasons), run_key)
        action = "rejected"
    registry.delete_alias(name, SHADOW)
    # Written last: the rollout run key's mark that this decision is applied.
    registry.set_version_tags(name, version, {TAG_ROLLOUT_DECIDED_AT: applied_at(), TAG_ROLLOUT_DECIDED_BY: run_key})
    log.info("%s v%s %s on live evidence: %s", name, version, action, "; ".join(reasons))
    return RolloutResult(action, version, champion, previous, reasons, decision.to_dict())  # type: ignore[arg-type]


def evidence_tags(decision: RolloutDecision) -> dict[str, str]:
    """The decision and its evidence as `mlops.rollout.*` model-version tags."""
    evidence: Evidence = decision.evidence
    return {
        TAG_ROLLOUT_DECISION: decision.action,
        TAG_ROLLOUT_REASONS: "; ".join(decision.reasons),
        TAG_ROLLOUT_ROWS: str(evidence.rows),
        TAG_ROLLOUT_METRIC: evidence.metric,
        TAG_ROLLOUT_CHAMPION_METRIC: _number(evidence.champion_metric),
        TAG_ROLLOUT_SHADOW_METRIC: _number(evidence.shadow_metric),
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
