"""A training snapshot's features from the Feast store: a point-in-time join on each row's event time.

The source keeps the rows, their calendar (request-time) features and the target; the
values of every `feature_store.features` reference come from the store's offline table as
it stood at or before the row's event time, so no row sees a value from its future. The
source's own columns of those names, if any, are replaced: training then sees what
serving will read from the online store. What was joined, and which version of each
view's table, goes into the snapshot's lineage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.config import ConfigError, UseCase
from mlops.data.errors import IngestionError
from mlops.features import keys, store

if TYPE_CHECKING:
    import pandas as pd

EVENT_TIMESTAMP = "event_timestamp"
_ROW = "__mlops_row"


class StoreFeaturesError(IngestionError):
    """The store cannot give the window its features; the message says what to run (no retry helps)."""


@dataclass(frozen=True)
class JoinedFeatures:
    """What a snapshot took from the store."""

    views: dict[str, str]
    """`{view: md5 of its offline table}`: the versions joined."""
    references: list[str]
    rows: int
    rows_without_features: int
    """Rows the store had no value for at their time (left null; the pipeline imputes them)."""
    entity_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MATERIALIZE_HINT = (
    "trigger the materialize_features DAG (it registers features/, writes the offline tables and loads the "
    "online store; or run `mlops features apply` and `mlops features ingest`), then run this training again"
)


def check_store_ready(use_case: UseCase, repo: store.FeatureRepo | None = None) -> dict[str, dict[str, str]]:
    """Before a snapshot: the registry matches `features/` and every view the use case reads has its offline
    table. `{view: {version, oldest, newest}}`; StoreFeaturesError naming what to run otherwise."""
    section = use_case.feature_store
    assert section is not None
    repo = repo or store.FeatureRepo.default()
    if not store.registry_written(repo):
        raise StoreFeaturesError(
            f"use case {use_case.name!r} reads the feature store, which has no registry at {repo.registry_location} "
            f"yet: {MATERIALIZE_HINT}"
        )
    problems = store.stale_definitions(repo)
    problems += [
        f"feature view {view!r} has no offline table ({repo.offline_location(view)})"
        for view in section.views
        if not store.offline_exists(repo, view)
    ]
    if problems:
        raise StoreFeaturesError(f"the feature store is not ready for {use_case.name!r}: {'; '.join(problems)}; "
                                 f"{MATERIALIZE_HINT}")  # fmt: skip
    ready: dict[str, dict[str, str]] = {}
    for view in section.views:
        oldest, newest = store.offline_span(repo, view)
        ready[view] = {"version": store.offline_version(repo, view), "oldest": str(oldest), "newest": str(newest)}
    return ready


def event_times(use_case: UseCase, frame: pd.DataFrame) -> pd.Series:
    """Each row's event time (UTC): the time column, at `feature_store.hour_column`'s hour if set."""
    import pandas as pd

    section = use_case.feature_store
    if use_case.time_column is None:
        raise ConfigError(f"use case {use_case.name!r}: feature_store needs time_column (the join's clock)")
    if section is not None and section.hour_column:
        return keys.hour_timestamps(frame[use_case.time_column], frame[section.hour_column])
    return pd.to_datetime(frame[use_case.time_column], utc=True)


def entity_frame(use_case: UseCase, frame: pd.DataFrame, times: pd.Series) -> pd.DataFrame:
    """The entity rows Feast joins on: each key from the source column of its name, or (`hour`) from the time."""
    import pandas as pd

    section = use_case.feature_store
    assert section is not None
    entity = pd.DataFrame({EVENT_TIMESTAMP: times.to_numpy()})
    for key in section.entity_keys:
        if key in frame.columns:
            entity[key] = frame[key].astype(str).to_numpy()
        elif key == "hour":
            entity[key] = keys.hour_keys(times).to_numpy()
        else:
            raise ConfigError(
                f"use case {use_case.name!r}: feature_store.entity_keys: {key!r} is not a column of the source, "
                "and only `hour` can be derived from the time; add the column to the source"
            )
    return entity


def join_store_features(
    use_case: UseCase, frame: pd.DataFrame, repo: store.FeatureRepo | None = None
) -> tuple[pd.DataFrame, JoinedFeatures]:
    """`frame` with its store features joined as of each row's event time, and what was joined."""
    section = use_case.feature_store
    assert section is not None
    repo = repo or store.FeatureRepo.default()
    stale = store.stale_definitions(repo)
    if stale:
        raise StoreFeaturesError("the feature store is out of date with features/: " + "; ".join(stale))
    times = event_times(use_case, frame)
    entity = entity_frame(use_case, frame, times)
    entity[_ROW] = range(len(entity))
    try:
        joined = store.historical_features(repo, entity, section.features)
    except store.FeatureStoreError as exc:
        raise StoreFeaturesError(str(exc)) from exc
    # Feast's file store leaves out rows with no value at their time: reindex brings them back as nulls.
    values = joined.set_index(_ROW).reindex(range(len(entity)))
    names = section.feature_names
    empty = values[names].isna().all(axis=1)
    if bool(empty.all()):
        spans = {view: store.offline_span(repo, view) for view in section.views}
        held = "; ".join(f"{view} holds {low} to {high}" for view, (low, high) in spans.items())
        raise StoreFeaturesError(
            f"no row of the window ({times.min()} to {times.max()}) has values in the feature store ({held}); "
            "run `mlops features ingest` for newer data, then the materialize_features DAG"
        )
    out = frame.drop(columns=[n for n in names if n in frame.columns]).reset_index(drop=True)
    for key in section.entity_keys:
        out[key] = entity[key].to_numpy()
    for name in names:
        out[name] = values[name].to_numpy()
    record = JoinedFeatures(
        views={view: store.offline_version(repo, view) for view in section.views},
        references=list(section.features),
        rows=len(out),
        rows_without_features=int(empty.sum()),
        entity_keys=list(section.entity_keys),
    )
    return out, record
