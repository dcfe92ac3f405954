"""A person's answer to a promotion request: read from Airflow's approval step, recorded on the version.

On a rejection or a time-out `@champion` stays and the version becomes `@challenger`;
on an approval the promotion has already moved `@champion` and only the answer is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from mlops.config import UseCase, resolve_use_case
from mlops.evaluation.gate import GateDecision
from mlops.mlflow import registry
from mlops.naming import (
    CHAMPION,
    PREVIOUS,
    TAG_APPROVAL_AT,
    TAG_APPROVAL_BY,
    TAG_APPROVAL_DECISION,
    TAG_APPROVAL_REASON,
    TAG_PROMOTED_BY,
)
from mlops.promotion.decisions import PromotionResult, decided_earlier, gate_tags, keep_as_challenger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApprovalOutcome:
    """How a promotion request was answered: by a person, by the time-out, or not at all."""

    decision: Literal["approved", "rejected", "timed out", "not answered"]
    by: str
    at: str | None
    reason: str

    @property
    def approved(self) -> bool:
        return self.decision == "approved"


def approval_outcome(answer: Mapping[str, Any] | None, timeout_hours: float) -> ApprovalOutcome:
    """Read the answer the approval task kept (Airflow's human-in-the-loop response).

    On time-out Airflow applies the default answer ("Reject") with no responder;
    `timed_out` says so, and a missing responder is read the same way.
    """
    if not answer:
        return ApprovalOutcome("not answered", "nobody", None, "the approval step did not finish; champion kept")
    chosen = (answer.get("chosen_options") or ["Reject"])[0]
    at = _seconds(answer.get("responded_at"))
    user = answer.get("responded_by_user") or {}
    if answer.get("timed_out") or not user:
        reason = f"approval timed out: nobody answered within {timeout_hours:g} h; champion kept"
        return ApprovalOutcome("timed out", "nobody", at, reason)
    who = str(user.get("name") or user.get("id"))
    if chosen == "Approve":
        return ApprovalOutcome("approved", who, at, f"promotion approved by {who}")
    return ApprovalOutcome("rejected", who, at, f"promotion rejected by {who}; champion kept")


def _seconds(when: Any) -> str | None:
    """An ISO timestamp to the second, as the other `mlops.*.at` tags are written."""
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            return str(when)
    return when.isoformat(timespec="seconds") if isinstance(when, datetime) else None


def apply_approval(
    use_case: UseCase | str,
    version: str,
    decision: GateDecision | dict[str, Any],
    outcome: ApprovalOutcome,
    run_key: str,
) -> PromotionResult:
    """Record the answer to a passed candidate's promotion request; on a rejection or time-out keep the champion.

    The answer goes to its own tags (`mlops.approval.decision`, `.by`, `.at`, `.reason`);
    the gate's tags say what the gate decided (it passed): written here only when the
    promotion was skipped, since `apply_decision`, which writes them otherwise, never ran.
    Rejected or timed out: `@champion` stays and the version becomes `@challenger`, its
    `mlops.rejection_reason` saying who rejected it or that nobody answered. Approved:
    `apply_decision` has already moved `@champion`; only the answer is recorded.
    Idempotent per run key, like `apply_decision`.
    """
    uc = resolve_use_case(use_case)
    gate = decision if isinstance(decision, GateDecision) else GateDecision.from_dict(decision)
    version, name = str(version), uc.model_name
    champion = registry.alias_version(name, CHAMPION)
    previous = registry.alias_version(name, PREVIOUS)
    if outcome.decision == "not answered":
        return PromotionResult("unchanged", version, champion, previous, [outcome.reason])
    tags = registry.version_tags(name, version)
    earlier = decided_earlier(tags, version, run_key)
    # Approved after promote_candidate moved the alias: that is this run's own mark, not a replay.
    if earlier is not None and not (outcome.approved and tags.get(TAG_PROMOTED_BY) == run_key):
        return PromotionResult("unchanged", version, champion, previous, [outcome.reason, earlier])
    registry.set_version_tags(name, version, _answer_tags(outcome))
    if outcome.approved:
        return PromotionResult("unchanged", version, champion, previous, [outcome.reason])
    # The promotion was skipped, so apply_decision never wrote the gate's (passing) verdict here.
    registry.set_version_tags(name, version, gate_tags(gate, run_key))
    if champion == version:
        note = f"v{version} is @champion and stays so; use rollback to replace it"
        return PromotionResult("unchanged", version, champion, previous, [outcome.reason, note])
    action = keep_as_challenger(name, version, outcome.reason, run_key, at=outcome.at)
    log.info("%s v%s is @challenger: %s", name, version, outcome.reason)
    return PromotionResult(action, version, champion, previous, [outcome.reason])


def _answer_tags(outcome: ApprovalOutcome) -> dict[str, str]:
    return {
        TAG_APPROVAL_DECISION: outcome.decision,
        TAG_APPROVAL_BY: outcome.by,
        TAG_APPROVAL_REASON: outcome.reason,
        **({TAG_APPROVAL_AT: outcome.at} if outcome.at else {}),
    }
