"""A model's aliases over time, replayed from the tags the registry writes on each version.

MLflow keeps only where an alias points now. Each move is also recorded on a version when
it happens (`mlops.promoted_at` with `mlops.replaced`, `mlops.rejected_at`,
`mlops.rollback.at` with `mlops.rollback.from_version`), so replaying those records in time
order gives who held each alias when, and why it moved. Pure functions over plain records.

A version keeps the latest record of each kind: a version promoted, rolled back from and
promoted again shows its last promotion. The replay says what the tags say, no more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from mlops.naming import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_REJECTED_AT,
    TAG_REJECTED_BY,
    TAG_REJECTION_REASON,
    TAG_REPLACED,
    TAG_ROLLBACK_AT,
    TAG_ROLLBACK_BY,
    TAG_ROLLBACK_FROM,
    TAG_ROLLBACK_REASON,
)


@dataclass(frozen=True)
class AliasChange:
    """One version gaining or losing one alias."""

    at: str
    """When, as the tag recorded it (ISO 8601, UTC, to the second)."""
    alias: str
    version: str
    change: str
    """`gained` or `lost`."""
    cause: str


@dataclass(frozen=True)
class _Move:
    at: datetime
    version_order: int
    step: int
    alias: str
    to: str | None
    """The version the alias moves to; None removes it when `release` holds it."""
    release: str | None
    cause: str
    recorded_at: str


def parse_time(value: str | None) -> datetime | None:
    """An ISO time as an aware UTC datetime; naive times (the prediction log's) are UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _moves(version: str, tags: Mapping[str, str]) -> list[_Move]:
    """The alias moves the tags of one version record, in the order the registry made them."""
    order = int(version) if version.isdigit() else 0
    moves: list[_Move] = []
    promoted = parse_time(tags.get(TAG_PROMOTED_AT))
    if promoted is not None:
        at, cause = tags[TAG_PROMOTED_AT], f"promoted by {tags.get(TAG_PROMOTED_BY, 'an unrecorded run')}"
        replaced = tags.get(TAG_REPLACED)
        # promotion.decisions._promote: @previous first, then @champion, then @challenger released.
        if replaced and replaced != "none":
            moves.append(_Move(promoted, order, 0, PREVIOUS, replaced, None, cause, at))
        moves.append(_Move(promoted, order, 1, CHAMPION, version, None, cause, at))
        moves.append(_Move(promoted, order, 2, CHALLENGER, None, version, cause, at))
    rejected = parse_time(tags.get(TAG_REJECTED_AT))
    if rejected is not None:
        reason = tags.get(TAG_REJECTION_REASON, "")
        cause = f"kept as challenger by {tags.get(TAG_REJECTED_BY, 'an unrecorded run')}" + (
            f": {reason}" if reason else ""
        )
        moves.append(_Move(rejected, order, 0, CHALLENGER, version, None, cause, tags[TAG_REJECTED_AT]))
    rolled = parse_time(tags.get(TAG_ROLLBACK_AT))
    if rolled is not None:
        at = tags[TAG_ROLLBACK_AT]
        reason = tags.get(TAG_ROLLBACK_REASON, "")
        cause = f"rollback requested by {tags.get(TAG_ROLLBACK_BY, 'unknown')}" + (f": {reason}" if reason else "")
        # promotion.rollback.rollback: @champion first, then @previous, then @challenger released.
        moves.append(_Move(rolled, order, 0, CHAMPION, version, None, cause, at))
        source = tags.get(TAG_ROLLBACK_FROM)
        if source and source != "none":
            moves.append(_Move(rolled, order, 1, PREVIOUS, source, None, cause, at))
        moves.append(_Move(rolled, order, 2, CHALLENGER, None, version, cause, at))
    return moves


def alias_history(versions: Iterable[tuple[str, Mapping[str, str]]]) -> list[AliasChange]:
    """Every alias change of a model, oldest first, from each version's (number, tags)."""
    moves = sorted(
        (move for version, tags in versions for move in _moves(version, tags)),
        key=lambda m: (m.at, m.version_order, m.step),
    )
    holders: dict[str, str] = {}
    changes: list[AliasChange] = []
    for move in moves:
        holder = holders.get(move.alias)
        if move.to is None:
            if holder is not None and holder == move.release:
                del holders[move.alias]
                changes.append(AliasChange(move.recorded_at, move.alias, holder, "lost", move.cause))
            continue
        if holder == move.to:
            continue
        if holder is not None:
            changes.append(AliasChange(move.recorded_at, move.alias, holder, "lost", move.cause))
        holders[move.alias] = move.to
        changes.append(AliasChange(move.recorded_at, move.alias, move.to, "gained", move.cause))
    return changes


def aliases_at(changes: Iterable[AliasChange], version: str, when: datetime) -> list[str]:
    """The aliases `version` held at `when`, by the replayed changes."""
    held: set[str] = set()
    for change in changes:
        at = parse_time(change.at)
        if at is None or at > when:
            break
        if change.version == version:
            held.add(change.alias) if change.change == "gained" else held.discard(change.alias)
    return sorted(held)
