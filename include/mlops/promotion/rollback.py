"""Rollback: move `@champion` by hand, to `@previous` or to a given version, recording who asked and why.

Also the way to promote a `@challenger` by hand (pass its version).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mlops.mlflow import registry
from mlops.naming import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    TAG_ROLLBACK_AT,
    TAG_ROLLBACK_BY,
    TAG_ROLLBACK_FROM,
    TAG_ROLLBACK_REASON,
    TAG_ROLLED_BACK_AT,
    TAG_ROLLED_BACK_BY,
    TAG_ROLLED_BACK_REASON,
    TAG_ROLLED_BACK_TO,
)
from mlops.promotion.decisions import applied_at

log = logging.getLogger(__name__)


class RollbackError(RuntimeError):
    """A rollback cannot be done as asked; the message says what to do instead."""


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


def rollback(model_name: str, version: str | None, reason: str, requested_by: str) -> RollbackResult:
    """Move `@champion` to `@previous` (or to `version`); the replaced champion becomes `@previous`.

    Who asked and why are recorded as tags on both versions.
    """
    current = registry.alias_version(model_name, CHAMPION)
    target = _target(model_name, version)
    if target == current:
        previous = registry.alias_version(model_name, PREVIOUS)
        return RollbackResult(model_name, "unchanged", target, previous, current, reason, requested_by)

    when = applied_at()
    registry.set_alias(model_name, CHAMPION, target)
    if current is not None:
        registry.set_alias(model_name, PREVIOUS, current)
        registry.set_version_tags(
            model_name,
            current,
            {TAG_ROLLED_BACK_REASON: reason, TAG_ROLLED_BACK_BY: requested_by,
             TAG_ROLLED_BACK_TO: target, TAG_ROLLED_BACK_AT: when},
        )  # fmt: skip
    if registry.alias_version(model_name, CHALLENGER) == target:
        registry.delete_alias(model_name, CHALLENGER)
    registry.set_version_tags(
        model_name,
        target,
        {TAG_ROLLBACK_REASON: reason, TAG_ROLLBACK_BY: requested_by,
         TAG_ROLLBACK_FROM: current or "none", TAG_ROLLBACK_AT: when},
    )  # fmt: skip
    log.warning("%s: @champion v%s -> v%s by %s: %s", model_name, current, target, requested_by, reason)
    previous = current if current is not None else registry.alias_version(model_name, PREVIOUS)
    return RollbackResult(model_name, "rolled_back", target, previous, current, reason, requested_by)


def _target(model_name: str, version: str | None) -> str:
    """The version to make `@champion`: `version`, else `@previous`; raises naming the versions there are."""
    target = str(version) if version is not None else registry.alias_version(model_name, PREVIOUS)
    if target is None:
        raise RollbackError(
            f"model {model_name!r} has no @previous version to roll back to; pass the version to restore "
            f"(registered versions: {registry.known_versions(model_name) or 'none'})"
        )
    if not registry.version_exists(model_name, target):
        known = registry.known_versions(model_name) if registry.model_exists(model_name) else []
        raise RollbackError(f"model {model_name!r} has no version {target!r}; registered versions: {known or 'none'}")
    return target
