"""The MLflow Model Registry: versions, aliases, promotion and rollback.

Aliases only (`@champion`, `@previous`, `@challenger`); registry stages are
deprecated. Every write is idempotent: a version is found by its `mlops.run_key`
tag before registering, and a DAG run's decision, once applied, is not applied again.

Tags on a version, so the UI can say when and why it got where it is:
- `mlops.run_key`: the DAG run that registered it;
- `mlops.gate.*`: the gate's verdict and reasons, as the gate wrote them;
- `mlops.promoted_by`, `mlops.promoted_at`, `mlops.replaced`: promoted to `@champion`;
- `mlops.rejected_by`, `mlops.rejected_at`, `mlops.rejection_reason`: kept as `@challenger`;
- `mlops.approval.*`: a person's answer to its promotion request (or the time-out);
- `mlops.rollback.*`, `mlops.rolled_back.*`: moved by hand, by whom and why.
Times are ISO 8601 in UTC, to the second.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from mlops.config import METRIC_DIRECTIONS, UseCase, resolve_use_case
from mlops.evaluation.gate import GateDecision
from mlops.mlflow.client import filter_literal, fluent_client, is_already_existing, is_missing
from mlops.naming import CHALLENGER, CHAMPION, PREVIOUS, TAG_PROMOTED_BY, TAG_REJECTED_BY, TAG_RUN_KEY

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops.training.runs import CandidateResult

log = logging.getLogger(__name__)

# Model-version tag values are capped by the server; reasons are cut, never rejected.
_MAX_TAG = 5000


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked; the message says what to do instead."""


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str | None
    metrics: dict[str, float]
    """The holdout metrics logged on the version's training run."""
    tags: dict[str, str]
    """Model-version tags (gate decision, run key, rollback records)."""
    aliases: list[str]
    lineage: dict[str, str] = field(default_factory=dict)
    """The training run's lineage tags (snapshot_path, dvc_md5, git_commit, ...)."""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model_uri": self.model_uri}


@dataclass(frozen=True)
class PromotionResult:
    action: Literal["promoted", "challenger", "unchanged"]
    version: str
    champion: str | None
    previous: str | None
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RollbackResult:
    model_name: str
    action: Literal["rolled_back", "unchanged"]
    champion: str
    previous: str | None
    replaced: str | None
    """The version that was `@champion` before the rollback."""
    reason: str
    requested_by: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _client() -> MlflowClient:
    return fluent_client()


def alias_version(model_name: str, alias: str) -> str | None:
    """The version `alias` points at, or None when the model or the alias does not exist."""
    try:
        mv = _client().get_model_version_by_alias(model_name, alias)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    return str(mv.version)


def _set_tags(mlflow_client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value[:_MAX_TAG])


def _ensure_registered_model(mlflow_client: MlflowClient, uc: UseCase) -> None:
    try:
        mlflow_client.get_registered_model(uc.model_name)
    except Exception as exc:
        if not is_missing(exc):
            raise
        try:
            mlflow_client.create_registered_model(
                uc.model_name, tags={"mlops.use_case": uc.name, "mlops.task": uc.task}, description=uc.description
            )
        except Exception as create_exc:
            # Created concurrently by another task: fine, it exists now.
            if not is_already_existing(create_exc):
                raise


def find_version_by_run_key(model_name: str, run_key: str) -> str | None:
    """The version an earlier attempt of this DAG run registered, if any."""
    name_filter = f"name = {filter_literal(model_name, 'model name')}"
    versions = _client().search_model_versions(
        f"{name_filter} and tags.`{TAG_RUN_KEY}` = {filter_literal(run_key, 'run key')}"
    )
    if not versions:
        return None
    return str(min(int(v.version) for v in versions))


def register_candidate(use_case: UseCase | str, candidate: CandidateResult | dict[str, Any], run_key: str) -> str:
    """Register the candidate's model once per run key; returns the version."""
    import mlflow

    from mlops.training.runs import CandidateResult

    uc = resolve_use_case(use_case)
    cand = candidate if isinstance(candidate, CandidateResult) else CandidateResult.from_dict(candidate)
    mlflow_client = _client()
    _ensure_registered_model(mlflow_client, uc)
    existing = find_version_by_run_key(uc.model_name, run_key)
    if existing is not None:
        log.info("%s v%s was already registered for %s", uc.model_name, existing, run_key)
        return existing
    # Tags go in with the version, atomically: the run-key lookup above can always find it.
    mv = mlflow.register_model(
        cand.model_uri,
        uc.model_name,
        tags={
            TAG_RUN_KEY: run_key,
            "mlops.candidate_key": cand.key,
            "mlops.run_id": cand.run_id,
            **{f"mlops.metric.{k}": repr(v) for k, v in cand.metrics.items()},
        },
    )
    return str(mv.version)


def _decided_earlier(tags: Mapping[str, str], version: str, run_key: str) -> str | None:
    """Why a decision of `run_key` on this version must not be applied again, or None.

    A cleared or re-run promotion replays its DAG run's decision; by then a later run
    may have moved the aliases on, and replaying would move them back.
    """
    if tags.get(TAG_PROMOTED_BY) == run_key:
        return f"v{version} was already promoted to @champion by {run_key}; a re-run moves no alias"
    if tags.get(TAG_REJECTED_BY) == run_key:
        return (
            f"v{version} was already kept as @challenger by {run_key}; a re-run moves no alias "
            "(to promote it anyway, run rollback_model with this version)"
        )
    return None


def apply_decision(
    use_case: UseCase | str, version: str, decision: GateDecision | dict[str, Any], run_key: str
) -> PromotionResult:
    """Record the gate decision on the version and move aliases accordingly.

    Passed: `@champion` moves to the version and the old champion becomes
    `@previous`. Failed: the version becomes `@challenger`, tagged with the
    reason. Idempotent per run key: once this run key has promoted the version or
    kept it as challenger, applying its decision again moves nothing and rewrites
    no tag (action "unchanged"), even if later runs have moved the aliases since.
    """
    uc = resolve_use_case(use_case)
    gate = decision if isinstance(decision, GateDecision) else GateDecision.from_dict(decision)
    version = str(version)
    name = uc.model_name
    mlflow_client = _client()
    reasons = list(gate.reasons)
    champion = alias_version(name, CHAMPION)
    previous = alias_version(name, PREVIOUS)
    earlier = _decided_earlier(mlflow_client.get_model_version(name, version).tags, version, run_key)
    if earlier is not None:
        log.info("%s: %s", name, earlier)
        return PromotionResult("unchanged", version, champion, previous, [*reasons, earlier])
    _set_tags(mlflow_client, name, version, _gate_tags(gate, run_key))

    if gate.passed:
        if champion == version:
            # This run key moved @champion here but died before its mark below (nothing else
            # points @champion at a version this run registered and has not marked): finish
            # the promotion, so the version says when and by whom and the Asset event goes out.
            done = {"mlops.replaced": previous or "none", "mlops.promoted_at": _now(), TAG_PROMOTED_BY: run_key}
            _set_tags(mlflow_client, name, version, done)
            log.info("%s v%s: finished an interrupted promotion to @champion", name, version)
            note = f"v{version} was already @champion: finished the interrupted promotion"
            return PromotionResult("promoted", version, version, previous, [*reasons, note])
        if champion is not None:
            # @previous first: a crash between the two calls leaves @champion untouched,
            # and the re-run sets the same @previous again.
            mlflow_client.set_registered_model_alias(name, PREVIOUS, champion)
            previous = champion
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
        if alias_version(name, CHALLENGER) == version:
            mlflow_client.delete_registered_model_alias(name, CHALLENGER)
        # Written last: the run key's mark that this decision is applied (see _decided_earlier).
        done = {"mlops.replaced": champion or "none", "mlops.promoted_at": _now(), TAG_PROMOTED_BY: run_key}
        _set_tags(mlflow_client, name, version, done)
        log.info("%s v%s promoted to @champion (previous: %s)", name, version, champion)
        return PromotionResult("promoted", version, version, previous, reasons)

    if champion == version:
        # Only a rollback demotes a champion, deliberately and on the record.
        note = f"v{version} is @champion and stays so; use rollback to replace it"
        return PromotionResult("unchanged", version, champion, previous, [*reasons, note])
    action = _keep_as_challenger(mlflow_client, name, version, "; ".join(gate.reasons), run_key)
    log.info("%s v%s is @challenger: %s", name, version, "; ".join(reasons))
    return PromotionResult(action, version, champion, previous, reasons)


def _gate_tags(gate: GateDecision, run_key: str) -> dict[str, str]:
    """The gate's verdict as it wrote it; nothing after the gate (a person's answer) changes these."""
    return {
        "mlops.gate.passed": str(gate.passed).lower(),
        "mlops.gate.reasons": "; ".join(gate.reasons),
        "mlops.gate.checks": "; ".join(gate.checks),
        "mlops.gate.champion_version": gate.champion_version or "none",
        "mlops.gate.run_key": run_key,
    }


def _now() -> str:
    """When a registry decision was applied, to the second in UTC, as every `mlops.*_at` tag is written."""
    # The moment the alias moved, not the run's partition date: the page says when it happened.
    return datetime.now(UTC).isoformat(timespec="seconds")


def _keep_as_challenger(
    mlflow_client: MlflowClient, name: str, version: str, reason: str, run_key: str, at: str | None = None
) -> Literal["challenger", "unchanged"]:
    """Point `@challenger` at the version and tag why and when; "unchanged" if it already was."""
    action: Literal["challenger", "unchanged"] = "unchanged"
    if alias_version(name, CHALLENGER) != version:
        mlflow_client.set_registered_model_alias(name, CHALLENGER, version)
        action = "challenger"
    # Written last: the run key's mark that this decision is applied (see _decided_earlier).
    done = {"mlops.rejection_reason": reason, "mlops.rejected_at": at or _now(), TAG_REJECTED_BY: run_key}
    _set_tags(mlflow_client, name, version, done)
    return action


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
    version = str(version)
    name = uc.model_name
    mlflow_client = _client()
    champion = alias_version(name, CHAMPION)
    previous = alias_version(name, PREVIOUS)
    if outcome.decision == "not answered":
        return PromotionResult("unchanged", version, champion, previous, [outcome.reason])
    tags = mlflow_client.get_model_version(name, version).tags
    earlier = _decided_earlier(tags, version, run_key)
    # Approved after promote_candidate moved the alias: that is this run's own mark, not a replay.
    if earlier is not None and not (outcome.approved and tags.get(TAG_PROMOTED_BY) == run_key):
        return PromotionResult("unchanged", version, champion, previous, [outcome.reason, earlier])
    answer = {
        "mlops.approval.decision": outcome.decision,
        "mlops.approval.by": outcome.by,
        "mlops.approval.reason": outcome.reason,
        **({"mlops.approval.at": outcome.at} if outcome.at else {}),
    }
    _set_tags(mlflow_client, name, version, answer)
    if outcome.approved:
        return PromotionResult("unchanged", version, champion, previous, [outcome.reason])
    # The promotion was skipped, so apply_decision never wrote the gate's (passing) verdict here.
    _set_tags(mlflow_client, name, version, _gate_tags(gate, run_key))
    if champion == version:
        note = f"v{version} is @champion and stays so; use rollback to replace it"
        return PromotionResult("unchanged", version, champion, previous, [outcome.reason, note])
    action = _keep_as_challenger(mlflow_client, name, version, outcome.reason, run_key, at=outcome.at)
    log.info("%s v%s is @challenger: %s", name, version, outcome.reason)
    return PromotionResult(action, version, champion, previous, [outcome.reason])


def _version_exists(mlflow_client: MlflowClient, name: str, version: str) -> bool:
    try:
        mlflow_client.get_model_version(name, version)
    except Exception as exc:
        if is_missing(exc):
            return False
        raise
    return True


def _known_versions(mlflow_client: MlflowClient, name: str) -> list[str]:
    versions = mlflow_client.search_model_versions(f"name = {filter_literal(name, 'model name')}")
    return sorted((str(v.version) for v in versions), key=int)


def rollback(model_name: str, version: str | None, reason: str, requested_by: str) -> RollbackResult:
    """Move `@champion` to `@previous` (or to `version`); the replaced champion becomes `@previous`.

    Who asked and why are recorded as tags on both versions. Also the way to
    promote a `@challenger` by hand (pass its version).
    """
    mlflow_client = _client()
    current = alias_version(model_name, CHAMPION)
    target = str(version) if version is not None else alias_version(model_name, PREVIOUS)
    if target is None:
        raise RegistryError(
            f"model {model_name!r} has no @previous version to roll back to; pass the version to restore "
            f"(registered versions: {_known_versions(mlflow_client, model_name) or 'none'})"
        )
    if not _version_exists(mlflow_client, model_name, target):
        known = _known_versions(mlflow_client, model_name) if _model_exists(mlflow_client, model_name) else []
        raise RegistryError(f"model {model_name!r} has no version {target!r}; registered versions: {known or 'none'}")
    if target == current:
        previous = alias_version(model_name, PREVIOUS)
        return RollbackResult(model_name, "unchanged", target, previous, current, reason, requested_by)

    when = _now()
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, target)
    if current is not None:
        mlflow_client.set_registered_model_alias(model_name, PREVIOUS, current)
        _set_tags(
            mlflow_client,
            model_name,
            current,
            {"mlops.rolled_back.reason": reason, "mlops.rolled_back.by": requested_by,
             "mlops.rolled_back.to": target, "mlops.rolled_back.at": when},
        )  # fmt: skip
    if alias_version(model_name, CHALLENGER) == target:
        mlflow_client.delete_registered_model_alias(model_name, CHALLENGER)
    _set_tags(
        mlflow_client,
        model_name,
        target,
        {"mlops.rollback.reason": reason, "mlops.rollback.requested_by": requested_by,
         "mlops.rollback.from_version": current or "none", "mlops.rollback.at": when},
    )  # fmt: skip
    log.warning("%s: @champion v%s -> v%s by %s: %s", model_name, current, target, requested_by, reason)
    previous = current if current is not None else alias_version(model_name, PREVIOUS)
    return RollbackResult(model_name, "rolled_back", target, previous, current, reason, requested_by)


def _model_exists(mlflow_client: MlflowClient, name: str) -> bool:
    try:
        mlflow_client.get_registered_model(name)
    except Exception as exc:
        if is_missing(exc):
            return False
        raise
    return True


def version_info(model_name: str, version: str) -> ModelVersionInfo:
    """A version with its aliases, tags, and its training run's metrics and lineage."""
    mlflow_client = _client()
    mv = mlflow_client.get_model_version(model_name, version)
    metrics: dict[str, float] = {}
    lineage: dict[str, str] = {}
    if mv.run_id:
        try:
            run = mlflow_client.get_run(mv.run_id)
        except Exception as exc:
            if not is_missing(exc):
                raise
        else:
            metrics = {k: float(v) for k, v in run.data.metrics.items() if k in METRIC_DIRECTIONS}
            lineage = {k: v for k, v in run.data.tags.items() if not k.startswith(("mlflow.", "mlops."))}
    return ModelVersionInfo(
        name=model_name,
        version=str(mv.version),
        run_id=mv.run_id or None,
        metrics=metrics,
        tags=dict(mv.tags),
        aliases=sorted(getattr(mv, "aliases", []) or []),
        lineage=lineage,
    )


def champion(model_name: str) -> ModelVersionInfo | None:
    """The `@champion` version, or None before the first promotion."""
    version = alias_version(model_name, CHAMPION)
    return version_info(model_name, version) if version is not None else None
