"""Promotion: register the gate's candidate and move the aliases as the gate decided.

Passed: `@champion` moves to the version and the old champion becomes `@previous`; under
`deployment.strategy: shadow` the version becomes `@shadow` instead, scored beside the
champion on live traffic, and under `canary` it becomes `@canary`, answering a growing
fraction of it, until `rollout_<use case>` promotes or rejects it (`mlops.rollout`).
One rollout per use case at a time: while a `@shadow` or `@canary` exists, a new passing
candidate is kept as `@challenger` with that reason; end the rollout first (the rollout
DAG's `abort`).
Failed: the version becomes `@challenger`, tagged with the reasons. Every write is
idempotent per DAG run: a version is found by its `mlops.run_key` tag before registering,
and a DAG run's decision, once applied, is not applied again.

Tags on a version, so the UI can say when and why it got where it is:
- `mlops.run_key`: the DAG run that registered it;
- `mlops.model_card`: where its model card is among its training run's artifacts (`mlops.lineage.cards`);
- `mlops.gate.*`: the gate's verdict and reasons, as the gate wrote them;
- `mlops.promoted_by`, `mlops.promoted_at`, `mlops.replaced`: promoted to `@champion`;
- `mlops.rejected_by`, `mlops.rejected_at`, `mlops.rejection_reason`: kept as `@challenger`;
- `mlops.rollout.shadow_at`, `.shadow_reason`, `.shadow_by`: made `@shadow`; `.canary_at`, `.canary_step`,
  `.canary_step_at`, `.canary_reason`, `.canary_by`: made `@canary`; `mlops.rollout.*`: the live evidence;
- `mlops.approval.*`: a person's answer to its promotion request (`promotion.approval`);
- `mlops.rollback.*`, `mlops.rolled_back.*`: moved by hand (`promotion.rollback`).
Times are ISO 8601 in UTC, to the second.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from mlops.config import UseCase, resolve_use_case
from mlops.evaluation.gate import GateDecision
from mlops.lineage import cards
from mlops.mlflow import registry
from mlops.naming import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    ROLLOUT_ALIASES,
    SHADOW,
    TAG_CANARY_AT,
    TAG_CANARY_BY,
    TAG_CANARY_REASON,
    TAG_CANARY_STEP,
    TAG_CANARY_STEP_AT,
    TAG_CANDIDATE_KEY,
    TAG_GATE_CHAMPION_VERSION,
    TAG_GATE_CHECKS,
    TAG_GATE_PASSED,
    TAG_GATE_REASONS,
    TAG_GATE_RUN_KEY,
    TAG_MODEL_CARD,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_REJECTED_AT,
    TAG_REJECTED_BY,
    TAG_REJECTION_REASON,
    TAG_REPLACED,
    TAG_RUN_KEY,
    TAG_SHADOW_AT,
    TAG_SHADOW_BY,
    TAG_SHADOW_REASON,
    TAG_USE_CASE,
)
from mlops.training.results import CandidateResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionResult:
    action: Literal["promoted", "shadow", "canary", "challenger", "unchanged"]
    version: str
    champion: str | None
    previous: str | None
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def register_candidate(use_case: UseCase | str, candidate: CandidateResult | Mapping[str, Any], run_key: str) -> str:
    """Register the candidate's model once per run key, with its model card; returns the version."""
    uc = resolve_use_case(use_case)
    cand = CandidateResult.of(candidate)
    registry.ensure_registered_model(uc.model_name, {TAG_USE_CASE: uc.name, "mlops.task": uc.task}, uc.description)
    existing = registry.find_version_by_run_key(uc.model_name, run_key)
    if existing is not None:
        log.info("%s v%s was already registered for %s", uc.model_name, existing, run_key)
        # An earlier attempt may have died between registering and writing the card.
        if TAG_MODEL_CARD not in registry.version_tags(uc.model_name, existing):
            cards.log_version_card(uc, existing)
        return existing
    # Tags go in with the version, atomically: the run-key lookup above can always find it.
    tags = {
        TAG_RUN_KEY: run_key,
        TAG_CANDIDATE_KEY: cand.key,
        "mlops.run_id": cand.run_id,
        **{f"mlops.metric.{k}": repr(v) for k, v in cand.metrics.items()},
    }
    version = registry.register_version(cand.model_uri, uc.model_name, tags)
    cards.log_version_card(uc, version)
    return version


def apply_decision(
    use_case: UseCase | str, version: str, decision: GateDecision | dict[str, Any], run_key: str
) -> PromotionResult:
    """Record the gate decision on the version and move aliases accordingly.

    Idempotent per run key: once this run key has promoted the version or kept it as
    challenger, applying its decision again moves nothing and rewrites no tag (action
    "unchanged"), even if later runs have moved the aliases since.
    """
    uc = resolve_use_case(use_case)
    gate = decision if isinstance(decision, GateDecision) else GateDecision.from_dict(decision)
    version, name = str(version), uc.model_name
    reasons = list(gate.reasons)
    champion = registry.alias_version(name, CHAMPION)
    previous = registry.alias_version(name, PREVIOUS)
    earlier = decided_earlier(registry.version_tags(name, version), version, run_key)
    if earlier is not None:
        log.info("%s: %s", name, earlier)
        return PromotionResult("unchanged", version, champion, previous, [*reasons, earlier])
    registry.set_version_tags(name, version, gate_tags(gate, run_key))
    strategy = uc.deployment.strategy
    if gate.passed and strategy in ROLLOUT_ALIASES and champion is not None and champion != version:
        return _start_rollout(name, strategy, version, champion, previous, reasons, run_key)
    if gate.passed:
        # Direct, or the first champion of a model: with no champion there is no live traffic to compare on.
        return move_champion(name, version, champion, previous, reasons, run_key)
    if champion == version:
        # Only a rollback demotes a champion, deliberately and on the record.
        note = f"v{version} is @champion and stays so; use rollback to replace it"
        return PromotionResult("unchanged", version, champion, previous, [*reasons, note])
    action = keep_as_challenger(name, version, "; ".join(gate.reasons), run_key)
    log.info("%s v%s is @challenger: %s", name, version, "; ".join(reasons))
    return PromotionResult(action, version, champion, previous, reasons)


def move_champion(
    name: str, version: str, champion: str | None, previous: str | None, reasons: list[str], run_key: str
) -> PromotionResult:
    """Move `@champion` to the version, the replaced champion to `@previous`; then mark it done."""
    if champion == version:
        # This run key moved @champion here but died before its mark below (nothing else
        # points @champion at a version this run registered and has not marked): finish
        # the promotion, so the version says when and by whom and the Asset event goes out.
        done = {TAG_REPLACED: previous or "none", TAG_PROMOTED_AT: applied_at(), TAG_PROMOTED_BY: run_key}
        registry.set_version_tags(name, version, done)
        log.info("%s v%s: finished an interrupted promotion to @champion", name, version)
        note = f"v{version} was already @champion: finished the interrupted promotion"
        return PromotionResult("promoted", version, version, previous, [*reasons, note])
    if champion is not None:
        # @previous first: a crash between the two calls leaves @champion untouched,
        # and the re-run sets the same @previous again.
        registry.set_alias(name, PREVIOUS, champion)
        previous = champion
    registry.set_alias(name, CHAMPION, version)
    if registry.alias_version(name, CHALLENGER) == version:
        registry.delete_alias(name, CHALLENGER)
    # Written last: the run key's mark that this decision is applied (see decided_earlier).
    done = {TAG_REPLACED: champion or "none", TAG_PROMOTED_AT: applied_at(), TAG_PROMOTED_BY: run_key}
    registry.set_version_tags(name, version, done)
    log.info("%s v%s promoted to @champion (previous: %s)", name, version, champion)
    return PromotionResult("promoted", version, version, previous, reasons)


def _start_rollout(
    name: str, alias: str, version: str, champion: str, previous: str | None, reasons: list[str], run_key: str
) -> PromotionResult:
    """Point `@shadow` or `@canary` at the version, unless another version's rollout is in progress (then
    `@challenger`)."""
    for running in ROLLOUT_ALIASES:
        other = registry.alias_version(name, running)
        if other is not None and other != version:
            # Two rollouts at once would split the traffic and the evidence and race on @champion; the
            # running one ends first, on its evidence, its deadline or by hand (the rollout DAG's `abort`).
            refusal = (
                f"passed the gate, but a rollout of v{other} (@{running}) is in progress; two rollouts for one use "
                f"case cannot run at once: end it (rollout DAG, param abort) and re-run training to roll out "
                f"v{version}"
            )
            action = keep_as_challenger(name, version, refusal, run_key)
            log.info("%s v%s: %s", name, version, refusal)
            return PromotionResult(action, version, champion, previous, [*reasons, refusal])
    tags = registry.version_tags(name, version)
    # The rollout's window and deadline start here; an interrupted earlier attempt keeps its time.
    if alias == SHADOW:
        why = f"passed the gate; deployment.strategy is shadow: judged on live traffic beside champion v{champion}"
        started = {TAG_SHADOW_AT: tags.get(TAG_SHADOW_AT) or applied_at(), TAG_SHADOW_REASON: why}
        done_tag = TAG_SHADOW_BY
    else:
        why = f"passed the gate; deployment.strategy is canary: answers a growing share of traffic beside v{champion}"
        at = tags.get(TAG_CANARY_AT) or applied_at()
        started = {
            TAG_CANARY_AT: at,
            TAG_CANARY_REASON: why,
            TAG_CANARY_STEP: tags.get(TAG_CANARY_STEP) or "0",
            TAG_CANARY_STEP_AT: tags.get(TAG_CANARY_STEP_AT) or at,
        }
        done_tag = TAG_CANARY_BY
    # Tags before the alias: the service reads the canary's step from them the moment it sees @canary.
    registry.set_version_tags(name, version, started)
    registry.set_alias(name, alias, version)
    if registry.alias_version(name, CHALLENGER) == version:
        registry.delete_alias(name, CHALLENGER)
    registry.set_version_tags(name, version, {done_tag: run_key})  # written last, as promoted_by
    log.info("%s v%s is @%s beside @champion v%s", name, version, alias, champion)
    return PromotionResult(alias, version, champion, previous, [*reasons, why])  # type: ignore[arg-type]


def decided_earlier(tags: Mapping[str, str], version: str, run_key: str) -> str | None:
    """Why a decision of `run_key` on this version must not be applied again, or None.

    A cleared or re-run promotion replays its DAG run's decision; by then a later run
    may have moved the aliases on, and replaying would move them back.
    """
    if tags.get(TAG_PROMOTED_BY) == run_key:
        return f"v{version} was already promoted to @champion by {run_key}; a re-run moves no alias"
    if tags.get(TAG_SHADOW_BY) == run_key:
        return f"v{version} was already made @shadow by {run_key}; a re-run moves no alias"
    if tags.get(TAG_CANARY_BY) == run_key:
        return f"v{version} was already made @canary by {run_key}; a re-run moves no alias"
    if tags.get(TAG_REJECTED_BY) == run_key:
        return (
            f"v{version} was already kept as @challenger by {run_key}; a re-run moves no alias "
            "(to promote it anyway, run rollback_model with this version)"
        )
    return None


def gate_tags(gate: GateDecision, run_key: str) -> dict[str, str]:
    """The gate's verdict as it wrote it; nothing after the gate (a person's answer) changes these."""
    return {
        TAG_GATE_PASSED: str(gate.passed).lower(),
        TAG_GATE_REASONS: "; ".join(gate.reasons),
        TAG_GATE_CHECKS: "; ".join(gate.checks),
        TAG_GATE_CHAMPION_VERSION: gate.champion_version or "none",
        TAG_GATE_RUN_KEY: run_key,
    }


def keep_as_challenger(
    name: str, version: str, reason: str, run_key: str, at: str | None = None
) -> Literal["challenger", "unchanged"]:
    """Point `@challenger` at the version and tag why and when; "unchanged" if it already was."""
    action: Literal["challenger", "unchanged"] = "unchanged"
    if registry.alias_version(name, CHALLENGER) != version:
        registry.set_alias(name, CHALLENGER, version)
        action = "challenger"
    # Written last: the run key's mark that this decision is applied (see decided_earlier).
    done = {TAG_REJECTION_REASON: reason, TAG_REJECTED_AT: at or applied_at(), TAG_REJECTED_BY: run_key}
    registry.set_version_tags(name, version, done)
    return action


def applied_at() -> str:
    """When a registry decision was applied, to the second in UTC, as every `mlops.*_at` tag is written."""
    # The moment the alias moved, not the run's partition date: the page says when it happened.
    return datetime.now(UTC).isoformat(timespec="seconds")
