"""The rollout panel of the MLOps page: a shadow or canary in progress, read from the registry.

Pure: the use case's config, the aliases (alias -> version) and the rollout version's tags
in, a `RolloutView` out. What it reads is the contract the rollout side writes
(`@shadow`/`@canary`, `mlops.rollout.*` tags, and the `mlops.rollout.progress` JSON every
`rollout_<use case>` run leaves, a wait included). The page shows what the tags say and
nothing it guesses: before the first rollout run there is no progress to show, and a
progress tag that cannot be parsed is shown as unreadable, not as a failed page.

Imported by the plugin in every Airflow process, so it stays on the standard library and
mlops.naming: not mlops.rollout, whose evidence module pulls in pandas and numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops.lineage.history import parse_time
from mlops.naming import (
    CANARY,
    CHAMPION,
    ROLLOUT_ALIASES,
    SHADOW,
    TAG_CANARY_AT,
    TAG_CANARY_BREACH,
    TAG_CANARY_STEP,
    TAG_CANARY_STEP_AT,
    TAG_ROLLOUT_PROGRESS,
    TAG_SHADOW_AT,
    rollout_dag_id,
)
from mlops.ui import urls

if TYPE_CHECKING:
    from mlops.config import UseCase

STARTED_AT_TAG = {SHADOW: TAG_SHADOW_AT, CANARY: TAG_CANARY_AT}
"""Where each strategy records when its alias was set: the rollout's window and deadline start there."""


@dataclass(frozen=True)
class Breach:
    """A guard breach the service saw on the canary (TAG_CANARY_BREACH): from then on it answers 0 %."""

    reason: str
    check: str | None
    at: datetime | None
    by: str | None


@dataclass(frozen=True)
class Progress:
    """The last rollout run's decision and evidence (TAG_ROLLOUT_PROGRESS), as recorded."""

    action: str
    """`wait`, `advance`, `promote` or `reject`."""
    reasons: list[str]
    decided_at: datetime | None
    metric: str | None
    direction: str | None
    """`min` or `max`: which way the metric is better."""
    rows: int | None
    """Labelled rows compared: scored by both (shadow), the fewer of the two sides' (canary)."""
    candidate_rows: int | None
    """Requests the candidate scored (shadow) or answered (canary) so far, labelled or not."""
    candidate_labelled: int | None
    """The candidate's labelled requests compared (equal to `rows` when paired)."""
    champion_rows: int | None
    """The champion's labelled requests compared (equal to `rows` when paired)."""
    candidate_metric: float | None
    champion_metric: float | None
    gain: float | None
    """The candidate's relative gain on the metric: positive is better, 0.02 is 2 % better."""
    interval: tuple[float, float] | None
    """The bootstrap interval of `gain` at `confidence`."""
    confidence: float | None
    paired: bool | None
    """True when both sides scored the same requests (shadow), False for disjoint traffic (canary)."""
    note: str | None
    """Why there is no metric or interval, when the evidence says."""
    ends_when: list[str]
    """What would promote, reject or advance it, in the rollout run's own words."""
    champion_only_right: int | None = None
    """Paired classification: requests only the champion predicted right (McNemar's b)."""
    candidate_only_right: int | None = None
    """Paired classification: requests only the candidate predicted right (McNemar's c)."""
    mcnemar_p: float | None = None
    """McNemar's exact p-value; None where it does not apply (regression, canary) or was not recorded."""


@dataclass(frozen=True)
class RolloutView:
    """A rollout in progress for one use case, as the panel shows it."""

    use_case: str
    strategy: str
    """`shadow` or `canary`: the alias the version holds."""
    version: str
    champion_version: str | None
    since: datetime | None
    deadline: datetime | None
    version_url: str
    """The version's page in the MLflow UI: its tags hold the whole evidence."""
    dag_id: str
    dag_path: str
    """The rollout DAG's grid in the Airflow UI, from the UI root: every run that judged it."""
    step: int | None = None
    """Canary: the index into `steps` it is at."""
    steps: list[float] = field(default_factory=list)
    """Canary: the fractions of requests, step by step."""
    fraction: float | None = None
    """Canary: the fraction of requests its step gives it (0 while a breach stands, see `serving_fraction`)."""
    step_since: datetime | None = None
    breach: Breach | None = None
    progress: Progress | None = None
    progress_note: str | None = None
    """Why `progress` is missing: no rollout run yet, or a tag that cannot be read."""
    progress_unreadable: bool = False
    """The progress tag exists but cannot be read: a fault to look at, not a wait."""
    notes: list[str] = field(default_factory=list)
    """Anything in the registry that disagrees with the contract, said rather than hidden."""

    @property
    def serving_fraction(self) -> float | None:
        """The share of requests the canary answers now: its step's fraction, or 0 after a breach."""
        if self.strategy != CANARY:
            return None
        return 0.0 if self.breach is not None else self.fraction

    @property
    def step_label(self) -> str | None:
        """`step 2 of 3`, counted from one as people count, when the step is known."""
        if self.step is None:
            return None
        return f"step {self.step + 1} of {len(self.steps)}" if self.steps else f"step {self.step + 1}"


def rollout_alias(aliases: Mapping[str, str]) -> str | None:
    """The rollout alias among `aliases` (alias -> version), if a rollout is in progress."""
    return next((alias for alias in ROLLOUT_ALIASES if alias in aliases), None)


def rollout_view(
    use_case: UseCase, aliases: Mapping[str, str], tags: Mapping[str, str], mlflow_base: str
) -> RolloutView | None:
    """The rollout of `use_case` in progress, or None when no version holds @shadow or @canary.

    `aliases` maps each alias the model has to its version; `tags` are the rollout
    version's tags; `mlflow_base` is the MLflow UI as browsers reach it.
    """
    strategy = rollout_alias(aliases)
    if strategy is None:
        return None
    version = aliases[strategy]
    notes = [
        f"@{other} is on v{aliases[other]} too: a model has at most one rollout, so only @{strategy} is shown"
        for other in ROLLOUT_ALIASES
        if other != strategy and other in aliases
    ]
    progress, progress_note, recorded = _read_progress(tags.get(TAG_ROLLOUT_PROGRESS), use_case.name)
    notes += _disagreements(recorded, strategy, version)
    since = parse_time(tags.get(STARTED_AT_TAG[strategy])) or parse_time(_text(recorded.get("since")))
    steps = _steps(recorded, use_case) if strategy == CANARY else []
    step = _canary_step(tags, recorded) if strategy == CANARY else None
    breach = _read_breach(tags.get(TAG_CANARY_BREACH), notes) if strategy == CANARY else None
    champion = aliases.get(CHAMPION) or _text(recorded.get("champion_version"))
    dag_id = rollout_dag_id(use_case.name)
    return RolloutView(
        use_case=use_case.name,
        strategy=strategy,
        version=version,
        champion_version=champion,
        since=since,
        deadline=parse_time(_text(recorded.get("deadline"))) or _configured_deadline(since, use_case),
        version_url=urls.model_version_url(mlflow_base, use_case.model_name, version),
        dag_id=dag_id,
        dag_path=urls.dag_path(dag_id),
        step=step,
        steps=steps,
        fraction=_fraction(step, steps, recorded) if strategy == CANARY else None,
        step_since=parse_time(tags.get(TAG_CANARY_STEP_AT)) if strategy == CANARY else None,
        breach=breach,
        progress=progress,
        progress_note=progress_note,
        progress_unreadable=progress is None and bool(tags.get(TAG_ROLLOUT_PROGRESS)),
        notes=notes,
    )


# --------------------------------------------------------------------------- the progress JSON


def _read_progress(raw: str | None, use_case: str) -> tuple[Progress | None, str | None, dict[str, Any]]:
    """(progress, why there is none, the JSON as recorded) of TAG_ROLLOUT_PROGRESS."""
    if not raw:
        return None, f"No rollout run has judged it yet: the first run of {rollout_dag_id(use_case)} is pending.", {}
    try:
        recorded = json.loads(raw)
        if not isinstance(recorded, dict):
            raise ValueError(f"expected a JSON object, got {type(recorded).__name__}")
        return _progress(recorded), None, recorded
    except (ValueError, TypeError) as exc:
        # A tag written by another version of the rollout DAG must not take the page down.
        note = f"The progress tag {TAG_ROLLOUT_PROGRESS} is unreadable ({exc}); see the version's tags in MLflow."
        return None, note, {}


def _progress(recorded: dict[str, Any]) -> Progress:
    evidence = recorded.get("evidence") or {}
    if not isinstance(evidence, dict):
        raise ValueError(f"evidence is {type(evidence).__name__}, not an object")
    paired = evidence.get("paired") if isinstance(evidence.get("paired"), bool) else None
    rows = _int(evidence.get("rows"))
    # Paired rows are the same requests on both sides, so a run that records only `rows` still says both.
    both = rows if paired else None
    candidate_labelled = _int(evidence.get("candidate_labelled"))
    champion_rows = _int(evidence.get("champion_rows"))
    return Progress(
        action=str(recorded.get("action") or "unknown"),
        reasons=_texts(recorded.get("reasons")),
        decided_at=parse_time(_text(recorded.get("decided_at"))),
        metric=_text(evidence.get("metric")),
        direction=_text(evidence.get("direction")),
        rows=rows,
        candidate_rows=_int(evidence.get("candidate_rows")),
        candidate_labelled=candidate_labelled if candidate_labelled is not None else both,
        champion_rows=champion_rows if champion_rows is not None else both,
        candidate_metric=_float(evidence.get("candidate_metric")),
        champion_metric=_float(evidence.get("champion_metric")),
        gain=_float(evidence.get("gain")),
        interval=_interval(evidence.get("interval")),
        confidence=_float(evidence.get("confidence")),
        paired=paired,
        note=_text(evidence.get("note")),
        ends_when=_texts(recorded.get("ends_when")),
        champion_only_right=_int(evidence.get("champion_only_right")),
        candidate_only_right=_int(evidence.get("candidate_only_right")),
        mcnemar_p=_float(evidence.get("mcnemar_p")),
    )


def _disagreements(recorded: dict[str, Any], strategy: str, version: str) -> list[str]:
    """What the progress JSON says that the aliases do not: a stale tag shows as such."""
    notes = []
    if recorded.get("strategy") not in (None, strategy):
        notes.append(f"the progress was written for a {recorded['strategy']} rollout; the version holds @{strategy}")
    if recorded.get("version") not in (None, version):
        notes.append(f"the progress names v{recorded['version']}, not v{version}")
    return notes


def _read_breach(raw: str | None, notes: list[str]) -> Breach | None:
    """The breach the service recorded; an unreadable tag still counts as one, with a note added to `notes`."""
    if not raw:
        return None
    try:
        recorded = json.loads(raw)
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict):
        # Still a breach: the service set the tag, so the canary answers nothing.
        notes.append(f"the breach tag {TAG_CANARY_BREACH} is unreadable: {raw[:200]}")
        return Breach(reason="recorded, unreadable", check=None, at=None, by=None)
    return Breach(
        reason=_text(recorded.get("reason")) or "no reason recorded",
        check=_text(recorded.get("check")),
        at=parse_time(_text(recorded.get("at"))),
        by=_text(recorded.get("by")),
    )


# --------------------------------------------------------------------------- canary steps and deadline


def _steps(recorded: dict[str, Any], use_case: UseCase) -> list[float]:
    """The canary's steps as the rollout run recorded them, else as the config has them now."""
    steps = recorded.get("steps")
    if isinstance(steps, list) and all(_float(s) is not None for s in steps):
        return [float(s) for s in steps]
    return [float(s) for s in use_case.deployment.canary_steps]


def _canary_step(tags: Mapping[str, str], recorded: dict[str, Any]) -> int | None:
    """The step on the version's tag (what the service routes by), else the one the run recorded."""
    step = _int(tags.get(TAG_CANARY_STEP))
    return step if step is not None else _int(recorded.get("step"))


def _fraction(step: int | None, steps: list[float], recorded: dict[str, Any]) -> float | None:
    """The step's fraction from the steps (what the service reads), else the one the run recorded."""
    if step is not None and 0 <= step < len(steps):
        return steps[step]
    return _float(recorded.get("fraction"))


def _configured_deadline(since: datetime | None, use_case: UseCase) -> datetime | None:
    return since + timedelta(hours=use_case.deployment.deadline_hours) if since else None


# --------------------------------------------------------------------------- tolerant reads


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value] if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _interval(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    low, high = _float(value[0]), _float(value[1])
    return (low, high) if low is not None and high is not None else None
