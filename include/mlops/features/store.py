"""The one module that imports Feast (docs/features.md).

The RepoConfig is built in code rather than read from a feature_store.yaml, so
MLOPS_HOME decides where the registry, the Parquet offline store and the SQLite
online store live: `<home>/features/{registry.db,offline/,online.db}`. The
definitions come from the project's `features/` directory, loaded by path.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.settings import get_settings

PROJECT = "mlops"


class FeatureStoreError(RuntimeError):
    """The store cannot answer; the message says what to run."""


@dataclass(frozen=True)
class FeatureRepo:
    """Where one feature store lives: its definitions and its data."""

    definitions_dir: Path
    home: Path

    @property
    def offline_dir(self) -> Path:
        return self.home / "offline"

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.db"

    @property
    def online_path(self) -> Path:
        return self.home / "online.db"

    @classmethod
    def default(cls) -> FeatureRepo:
        settings = get_settings()
        return cls(definitions_dir=settings.project_root / "features", home=settings.home / "features")


def _load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"mlops_feature_repo_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FeatureStoreError(f"cannot load feature definitions from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _modules(repo: FeatureRepo) -> list[Any]:
    return [_load_module(p) for p in sorted(repo.definitions_dir.glob("*.py")) if not p.name.startswith("_")]


def load_definitions(repo: FeatureRepo) -> list[Any]:
    """Every `definitions(offline_dir)` of the repository's modules, in file order."""
    objects: list[Any] = []
    for module in _modules(repo):
        if hasattr(module, "definitions"):
            objects += module.definitions(repo.offline_dir)
    return objects


def ingest_offline(repo: FeatureRepo, project_root: Path) -> dict[str, int]:
    """Run the repository's feature pipelines (`offline_frames(project_root)`): `{view: rows}` written offline.

    Each view's table is replaced whole and atomically; the same source gives the same bytes,
    so a re-run changes nothing.
    """
    written: dict[str, int] = {}
    for module in _modules(repo):
        if hasattr(module, "offline_frames"):
            for view, frame in module.offline_frames(project_root).items():
                write_offline(repo, view, frame)
                written[view] = len(frame)
    return written


def offline_version(repo: FeatureRepo, view: str) -> str:
    """The md5 of the view's offline table: the version of the values a training snapshot joined."""
    return hashlib.md5((repo.offline_dir / f"{view}.parquet").read_bytes(), usedforsecurity=False).hexdigest()


def offline_span(repo: FeatureRepo, view: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The oldest and newest event timestamp the view's offline table holds."""
    _check_offline(repo, [f"{view}:_"])
    times = pd.read_parquet(repo.offline_dir / f"{view}.parquet", columns=["event_timestamp"])["event_timestamp"]
    return times.min(), times.max()


def stale_definitions(repo: FeatureRepo) -> list[str]:
    """What differs between the definitions in `features/` and the registry (`feast apply` not run since)."""
    from feast import FeatureView

    store = open_store(repo)
    try:
        registered = {v.name: v for v in store.list_feature_views()}
    except Exception as exc:
        return [f"the registry cannot be read ({type(exc).__name__}: {exc}); run `mlops features apply`"]
    defined = {o.name: o for o in load_definitions(repo) if isinstance(o, FeatureView)}
    problems = [f"feature view {n!r} is defined but not registered" for n in sorted(set(defined) - set(registered))]
    problems += [
        f"feature view {n!r} is registered but no longer defined" for n in sorted(set(registered) - set(defined))
    ]
    for name in sorted(set(defined) & set(registered)):
        want, have = _shape(defined[name]), _shape(registered[name])
        if want != have:
            changed = sorted(k for k in want if want[k] != have.get(k))
            problems.append(f"feature view {name!r} changed since it was registered ({', '.join(changed)})")
    return [f"{p}: run `mlops features apply`" for p in problems]


def _shape(view: Any) -> dict[str, Any]:
    """What of a feature view the platform relies on: its features and their types, entities, ttl."""
    return {
        "features": [(f.name, str(f.dtype)) for f in view.features],
        "entities": sorted(view.entities),
        "ttl": view.ttl,
    }


def known_features(repo: FeatureRepo) -> dict[str, dict[str, Any]]:
    """`{view: {"entities": [join keys], "features": [names]}}` from the definitions (no registry read)."""
    from feast import FeatureView

    views: dict[str, dict[str, Any]] = {}
    for obj in load_definitions(repo):
        if isinstance(obj, FeatureView):
            views[obj.name] = {"entities": sorted(obj.entities), "features": [f.name for f in obj.features]}
    return views


def open_store(repo: FeatureRepo) -> Any:
    """A FeatureStore on the embedded deployment: local provider, Parquet offline, SQLite online."""
    from feast import FeatureStore, RepoConfig

    repo.home.mkdir(parents=True, exist_ok=True)
    repo.offline_dir.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=PROJECT,
        provider="local",
        registry=str(repo.registry_path),
        offline_store={"type": "file"},
        online_store={"type": "sqlite", "path": str(repo.online_path)},
        entity_key_serialization_version=3,
    )
    return FeatureStore(config=config)


def apply_definitions(repo: FeatureRepo) -> list[str]:
    """`feast apply` in code: register the definitions; returns the feature views' names."""
    from feast import FeatureView

    objects = load_definitions(repo)
    open_store(repo).apply(objects)
    return sorted(o.name for o in objects if isinstance(o, FeatureView))


def write_offline(repo: FeatureRepo, view: str, frame: pd.DataFrame) -> Path:
    """Replace the offline Parquet of `view` with `frame` (atomic rename: readers never see half a file)."""
    repo.offline_dir.mkdir(parents=True, exist_ok=True)
    path = repo.offline_dir / f"{view}.parquet"
    tmp = path.with_name(f".tmp-{path.name}")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def _check_offline(repo: FeatureRepo, refs: list[str]) -> None:
    for view in sorted({ref.split(":", 1)[0] for ref in refs}):
        if not (repo.offline_dir / f"{view}.parquet").exists():
            raise FeatureStoreError(
                f"feature view {view!r} has no offline data in {repo.offline_dir}; "
                "run `mlops features ingest` (or trigger the materialize_features DAG) first"
            )


def historical_features(repo: FeatureRepo, entity_df: pd.DataFrame, refs: list[str]) -> pd.DataFrame:
    """Point-in-time join: each row gets the newest value at or before its `event_timestamp`."""
    _check_offline(repo, refs)
    store = open_store(repo)
    try:
        job = store.get_historical_features(entity_df=entity_df, features=refs)
    except Exception as exc:
        if type(exc).__name__ in {"FeatureViewNotFoundException", "FeatureNameCollisionError"}:
            raise FeatureStoreError(f"{exc}; run `mlops features apply`") from exc
        raise
    frame: pd.DataFrame = job.to_df()
    return frame


def materialize(repo: FeatureRepo, end: datetime) -> list[str]:
    """Load the online store up to `end`, from where the last run stopped (a re-run writes nothing twice)."""
    store = open_store(repo)
    views = store.list_feature_views()
    if not views:
        raise FeatureStoreError("no feature views are registered; run `mlops features apply`")
    for view in views:
        if view.most_recent_end_time is None:
            # materialize_incremental would start at now - ttl; the first load starts at the oldest row.
            _check_offline(repo, [view.name])
            start = pd.read_parquet(repo.offline_dir / f"{view.name}.parquet", columns=["event_timestamp"]).min()
            store.materialize(start_date=start.iloc[0].to_pydatetime(), end_date=end, feature_views=[view.name])
        else:
            store.materialize_incremental(end_date=end, feature_views=[view.name])
    return sorted(view.name for view in views)


def online_features(repo: FeatureRepo, entity_rows: list[dict[str, Any]], refs: list[str]) -> list[dict[str, Any]]:
    """The online values of `refs` per entity row; a key the store does not hold gives None values."""
    store = open_store(repo)
    try:
        result = store.get_online_features(features=refs, entity_rows=entity_rows).to_dict()
    except Exception as exc:
        raise FeatureStoreError(f"online store unavailable: {type(exc).__name__}: {exc}") from exc
    return [{key: values[i] for key, values in result.items()} for i in range(len(entity_rows))]


class OnlineReader:
    """One service's reader of the online store: the FeatureStore opened once, then a lookup per request.

    Opening a FeatureStore reads the registry; per request that would cost more than the lookup.
    """

    def __init__(self, repo: FeatureRepo, refs: list[str]) -> None:
        self.repo = repo
        self.refs = list(refs)
        self._store: Any = None

    def read(self, entity_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The values of `refs` per entity row (None where the store holds none); FeatureStoreError if it cannot."""
        try:
            if self._store is None:
                self._store = open_store(self.repo)
            result = self._store.get_online_features(features=self.refs, entity_rows=entity_rows).to_dict()
        except Exception as exc:
            self._store = None  # reopen next time: the store may be back, or replaced
            raise FeatureStoreError(f"online store unavailable: {type(exc).__name__}: {exc}") from exc
        return [{key: values[i] for key, values in result.items()} for i in range(len(entity_rows))]
