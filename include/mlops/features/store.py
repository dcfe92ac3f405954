"""The one module that imports Feast (docs/features.md).

The RepoConfig is built in code rather than read from a feature_store.yaml, so the
settings decide where the store lives:

- embedded (the default): MLOPS_HOME holds the registry, the Parquet offline store and the
  SQLite online store, `<home>/features/{registry.db,offline/,online.db}`;
- scale-out: MLOPS_FEATURE_POSTGRES_URL puts the registry (Feast's SQL registry) and the
  offline store (one table per feature view) in PostgreSQL, MLOPS_FEATURE_REDIS_URL the
  online store in Redis. Each is chosen on its own.

The definitions come from the project's `features/` directory, loaded by path; they name a
Parquet source, which the scale-out deployment swaps for the view's PostgreSQL table.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

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
    redis_url: str | None = None
    """The online store on Redis (`redis://[:password@]host:port/db`); None: SQLite under `home`."""
    postgres_url: str | None = None
    """The registry and offline store on PostgreSQL (`postgresql://user[:password]@host:port/database`);
    None: a registry file and Parquet under `home`."""
    project: str = PROJECT
    """Feast's project: it names the registry's rows and ends every Redis key of the online store."""

    @property
    def offline_dir(self) -> Path:
        return self.home / "offline"

    @property
    def registry_location(self) -> str:
        """Where the registry is, for messages (no password)."""
        return _without_password(self.postgres_url) if self.postgres_url else str(self.registry_path)

    def offline_location(self, view: str) -> str:
        """Where a view's offline table is, for messages (no password)."""
        if self.postgres_url:
            return f"table {view!r} in {_without_password(self.postgres_url)}"
        return str(self.offline_dir / f"{view}.parquet")

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.db"

    @property
    def online_path(self) -> Path:
        return self.home / "online.db"

    @classmethod
    def default(cls) -> FeatureRepo:
        settings = get_settings()
        return cls(
            definitions_dir=settings.project_root / "features",
            home=settings.home / "features",
            redis_url=settings.feature_redis_url,
            postgres_url=settings.feature_postgres_url,
            project=settings.feature_project,
        )


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _postgres_parts(url: str) -> dict[str, Any]:
    """host, port, database, user, password and sslmode of a `postgresql://` URL (Feast's offline store config)."""
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
        raise FeatureStoreError(
            f"MLOPS_FEATURE_POSTGRES_URL must look like postgresql://user:password@host:5432/database; got "
            f"{_without_password(url)!r}"
        )
    query = parse_qs(parts.query)
    return {
        "host": parts.hostname,
        "port": parts.port or 5432,
        "database": parts.path.strip("/"),
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
        # libpq's own default: TLS when the server offers it (Feast's default, "require", refuses a local server).
        "sslmode": query.get("sslmode", ["prefer"])[0],
    }


def _sqlalchemy_url(url: str) -> str:
    """The same database for SQLAlchemy on psycopg 3 (what Feast's PostgreSQL code uses too)."""
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def _redis_connection_string(url: str) -> str:
    """`redis://[:password@]host:port/db` as Feast's `host:port,db=N,password=...` (rediss:// adds ssl=true)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise FeatureStoreError(
            f"MLOPS_FEATURE_REDIS_URL must look like redis://host:6379/1 (or rediss:// for TLS); got "
            f"{_without_password(url)!r}"
        )
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise FeatureStoreError(f"MLOPS_FEATURE_REDIS_URL names database {db!r}; Redis databases are numbers")
    options = [f"{parts.hostname}:{parts.port or 6379}", f"db={db}"]
    if "," in unquote(parts.password or "") + unquote(parts.username or ""):
        raise FeatureStoreError("MLOPS_FEATURE_REDIS_URL: Feast's connection string cannot hold a ',' in the password")
    if parts.password:
        options.append(f"password={unquote(parts.password)}")
    if parts.username and parts.username != "default":
        options.append(f"username={unquote(parts.username)}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


def repo_config(repo: FeatureRepo) -> dict[str, Any]:
    """What `feature_store.yaml` would hold for this deployment (passwords included: never log it)."""
    config: dict[str, Any] = {"project": repo.project, "provider": "local", "entity_key_serialization_version": 3}
    if repo.postgres_url:
        config["registry"] = {
            "registry_type": "sql",
            "path": _sqlalchemy_url(repo.postgres_url),
            # A reader sees a changed registry within a minute; `apply` and `materialize` write it directly.
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
        }
        config["offline_store"] = {"type": "postgres", **_postgres_parts(repo.postgres_url)}
    else:
        config["registry"] = str(repo.registry_path)
        config["offline_store"] = {"type": "file"}
    if repo.redis_url:
        config["online_store"] = {"type": "redis", "connection_string": _redis_connection_string(repo.redis_url)}
    else:
        config["online_store"] = {"type": "sqlite", "path": str(repo.online_path)}
    return config


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
    """Every `definitions(offline_dir)` of the repository's modules, in file order.

    On PostgreSQL each feature view reads its offline table of the same name instead of its Parquet file:
    the definitions say what the features are, the deployment where their history lives.
    """
    objects: list[Any] = []
    for module in _modules(repo):
        if hasattr(module, "definitions"):
            objects += module.definitions(repo.offline_dir)
    if repo.postgres_url:
        _read_views_from_postgres(objects)
    return objects


def _read_views_from_postgres(objects: list[Any]) -> None:
    from feast import FeatureView
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

    for view in objects:
        if isinstance(view, FeatureView) and view.batch_source is not None:
            file_source = view.batch_source
            source = PostgreSQLSource(
                name=file_source.name,
                table=view.name,
                timestamp_field=file_source.timestamp_field,
                created_timestamp_column=file_source.created_timestamp_column,
                field_mapping=file_source.field_mapping,
            )
            view.batch_source = source
            if view.data_source is file_source:
                view.data_source = source


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
    """The md5 of the view's offline table: the version of the values a training snapshot joined.

    Parquet: the file's bytes. PostgreSQL: every row as text, in one fixed order (the same rows, the same md5).
    """
    if repo.postgres_url:
        with _engine(repo).connect() as conn:
            digest = conn.exec_driver_sql(
                f"SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {_table(view)} t"
            ).scalar_one()
        return str(digest)
    return hashlib.md5((repo.offline_dir / f"{view}.parquet").read_bytes(), usedforsecurity=False).hexdigest()


def offline_span(repo: FeatureRepo, view: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The oldest and newest event timestamp the view's offline table holds."""
    _check_offline(repo, [f"{view}:_"])
    if repo.postgres_url:
        with _engine(repo).connect() as conn:
            oldest, newest = conn.exec_driver_sql(
                f"SELECT min(event_timestamp), max(event_timestamp) FROM {_table(view)}"
            ).one()
        return pd.Timestamp(oldest).tz_convert("UTC"), pd.Timestamp(newest).tz_convert("UTC")
    times = pd.read_parquet(repo.offline_dir / f"{view}.parquet", columns=["event_timestamp"])["event_timestamp"]
    return times.min(), times.max()


def _table(view: str) -> str:
    """A view's offline table as an SQL identifier (quoted: a view name is not trusted SQL)."""
    return '"' + view.replace('"', '""') + '"'


def _engine(repo: FeatureRepo) -> Any:
    """The offline store's database (one engine per URL and process: its pool is reused)."""
    assert repo.postgres_url is not None
    return _engine_for(_sqlalchemy_url(repo.postgres_url))


_ENGINES: dict[str, Any] = {}


def _engine_for(url: str) -> Any:
    if url not in _ENGINES:
        import sqlalchemy

        _ENGINES[url] = sqlalchemy.create_engine(url, pool_pre_ping=True)
    return _ENGINES[url]


def dispose_engines() -> None:
    """Close the offline store's pooled connections (before its database is dropped, at a process's end)."""
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


def registry_written(repo: FeatureRepo) -> bool:
    """Whether `apply` has ever written this project's registry (a fresh stack's has not)."""
    if repo.postgres_url:
        with _engine(repo).connect() as conn:
            if not conn.exec_driver_sql("SELECT to_regclass('feature_views') IS NOT NULL").scalar_one():
                return False
            query = "SELECT EXISTS (SELECT 1 FROM feature_views WHERE project_id = %(p)s)"
            return bool(conn.exec_driver_sql(query, {"p": repo.project}).scalar_one())
    return repo.registry_path.exists()


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
    """A FeatureStore on the configured deployment (`repo_config`)."""
    from feast import FeatureStore, RepoConfig

    repo.home.mkdir(parents=True, exist_ok=True)
    repo.offline_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=RepoConfig(**repo_config(repo)))


def apply_definitions(repo: FeatureRepo) -> list[str]:
    """`feast apply` in code: register the definitions; returns the feature views' names."""
    from feast import FeatureView

    objects = load_definitions(repo)
    open_store(repo).apply(objects)
    return sorted(o.name for o in objects if isinstance(o, FeatureView))


def write_offline(repo: FeatureRepo, view: str, frame: pd.DataFrame) -> str:
    """Replace the offline table of `view` with `frame`; returns where it went.

    Readers never see half a table: Parquet is written aside and renamed; on PostgreSQL the new
    table is written and swapped for the old one in one transaction.
    """
    if repo.postgres_url:
        staging = f"{view}__staging"
        with _engine(repo).begin() as conn:
            frame.to_sql(staging, conn, index=False, if_exists="replace")
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_table(view)}")
            conn.exec_driver_sql(f"ALTER TABLE {_table(staging)} RENAME TO {_table(view)}")
        return repo.offline_location(view)
    repo.offline_dir.mkdir(parents=True, exist_ok=True)
    path = repo.offline_dir / f"{view}.parquet"
    tmp = path.with_name(f".tmp-{path.name}")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return str(path)


def _check_offline(repo: FeatureRepo, refs: list[str]) -> None:
    for view in sorted({ref.split(":", 1)[0] for ref in refs}):
        if not offline_exists(repo, view):
            where = _without_password(repo.postgres_url) if repo.postgres_url else repo.offline_dir
            raise FeatureStoreError(
                f"feature view {view!r} has no offline data in {where}; "
                "run `mlops features ingest` (or trigger the materialize_features DAG) first"
            )


def offline_exists(repo: FeatureRepo, view: str) -> bool:
    """Whether the view's offline table has been written (Parquet file or PostgreSQL table)."""
    if repo.postgres_url:
        with _engine(repo).connect() as conn:
            return bool(conn.exec_driver_sql("SELECT to_regclass(%(t)s) IS NOT NULL", {"t": _table(view)}).scalar_one())
    return (repo.offline_dir / f"{view}.parquet").exists()


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
            start, _ = offline_span(repo, view.name)
            store.materialize(start_date=start.to_pydatetime(), end_date=end, feature_views=[view.name])
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
    """One service's reader of the online store: the FeatureStore opened once, then reads.

    Opening a FeatureStore reads the registry; per request that would cost more than the read.
    The service calls `read_async` once per prediction micro-batch, for every entity row of its
    requests (serving/microbatch.py).

    `read_async` reads Feast's online tables directly (`_DirectRead`): Feast's own entity-key
    serialization and value protos, one indexed SELECT on SQLite or one pipelined HMGET per key on
    Redis, the same bytes Feast's `get_online_features` reads. Why: that call's own Python (entity
    protos, registry look-ups, the response's protos and dict) cost 1.6 ms for one entity row against
    0.17 ms for the direct read (SQLite, 500 reads in one thread, docs/features.md): most of the 2 ms
    a store-backed request may add. A view whose keys are not all strings, or another kind of online
    store, is read through `get_online_features`.
    """

    def __init__(self, repo: FeatureRepo, refs: list[str]) -> None:
        self.repo = repo
        self.refs = list(refs)
        self._store: Any = None
        self._direct: _DirectRead | Literal[False] | None = None
        """The direct read once planned; False: Feast's own read is needed (OnlineReader's docstring)."""
        self.reads = 0
        """Reads sent to the store (one per micro-batch, whatever the number of requests in it)."""

    def read(self, entity_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The values of `refs` per entity row (None where the store holds none), through Feast's
        `get_online_features`; FeatureStoreError if it cannot."""
        try:
            if self._store is None:
                self._store = open_store(self.repo)
            result = self._store.get_online_features(features=self.refs, entity_rows=entity_rows).to_dict()
        except Exception as exc:
            self._store = None  # reopen next time: the store may be back, or replaced
            raise FeatureStoreError(f"online store unavailable: {type(exc).__name__}: {exc}") from exc
        return _rows(result, len(entity_rows))

    async def read_async(self, entity_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`read` for the event loop: one store read for all of `entity_rows`, the event loop never blocked
        for long (Redis: awaited; SQLite: an indexed read of a local file, on a thread if a writer holds it)."""
        self.reads += 1
        try:
            if self._store is None:
                self._store = open_store(self.repo)
            if self._direct is None:
                self._direct = _DirectRead.plan(self._store, self.repo, self.refs)
            if self._direct:
                return await self._direct.read(entity_rows)
            if not self.repo.redis_url:
                return await asyncio.to_thread(self.read, entity_rows)
            response = await self._store.get_online_features_async(features=self.refs, entity_rows=entity_rows)
            return _rows(response.to_dict(), len(entity_rows))
        except FeatureStoreError:
            raise
        except Exception as exc:
            self.close()
            raise FeatureStoreError(f"online store unavailable: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Drop the store and its connections: the next read opens them again (the store may be back, or replaced)."""
        if self._direct:
            self._direct.close()
        self._store, self._direct = None, None


@dataclass(frozen=True)
class _ViewRead:
    """What one feature view contributes to a read: its join keys, features and where Feast keeps them."""

    join_keys: list[str]
    features: list[str]
    table: str
    """SQLite: the view's online table. Redis: the view's name in its hash fields."""
    fields: list[bytes]
    """Redis: the hash fields of `features`, then the view's timestamp field (what Feast's HMGET asks for)."""


class _DirectRead:
    """Feast's online tables read without `get_online_features` (why: OnlineReader)."""

    def __init__(self, repo: FeatureRepo, views: list[_ViewRead], key_version: int) -> None:
        self.repo = repo
        self.views = views
        self.key_version = key_version
        self._sqlite: Any = None
        self._redis: Any = None
        self._redis_loop: Any = None
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._serialize, self._entity_key, self._value_proto = serialize_entity_key, EntityKey, Value
        self._keys: dict[tuple[str, tuple[str, ...]], bytes] = {}

    @classmethod
    def plan(cls, store: Any, repo: FeatureRepo, refs: list[str]) -> _DirectRead | Literal[False]:
        """The direct read of `refs`, from the registry's views; False when Feast's own read is needed."""
        from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name
        from feast.types import String

        config = store.config
        if config.online_store.type not in ("sqlite", "redis") or (repo.redis_url is None) != (
            config.online_store.type == "sqlite"
        ):
            return False
        versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
        by_view: dict[str, list[str]] = {}
        for ref in refs:
            view, _, feature = ref.partition(":")
            by_view.setdefault(view, []).append(feature)
        views = []
        for name, features in by_view.items():
            view = store.get_feature_view(name)
            unknown = sorted(set(features) - {f.name for f in view.features})
            if unknown:
                raise FeatureStoreError(f"feature view {name!r} has no features {unknown}; run `mlops features apply`")
            if view.projection.join_key_map or any(c.dtype != String for c in view.entity_columns):
                return False  # keys Feast converts or renames: its own read does that
            join_keys = [c.name for c in view.entity_columns]
            if repo.redis_url:
                versioned = compute_versioned_name(view, versioning)
                fields = [_mmh3(f"{versioned}:{f}") for f in features] + [f"_ts:{versioned}".encode()]
                views.append(_ViewRead(join_keys, features, versioned, fields))
            else:
                views.append(_ViewRead(join_keys, features, compute_table_id(config.project, view, versioning), []))
        return cls(repo, views, config.entity_key_serialization_version)

    def _key(self, view: _ViewRead, row: dict[str, Any]) -> bytes:
        """An entity's key as Feast stores it: its serialization (plus the project, on Redis). The encodings
        are kept (at most _KEYS_KEPT), never a value: each read still asks the store."""
        values = tuple(row[k] for k in view.join_keys)
        key = self._keys.get((view.table, values))
        if key is None:
            protos = [self._value_proto(string_val=v) for v in values]
            key = self._serialize(self._entity_key(join_keys=view.join_keys, entity_values=protos), self.key_version)
            key = key + self.repo.project.encode() if self.repo.redis_url else key
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            self._keys[(view.table, values)] = key
        return key

    def _value(self, raw: bytes | None) -> Any:
        """A stored Value proto as Python, as Feast's `to_dict` gives it (scalars directly; the rest through Feast)."""
        if not raw:
            return None
        proto = self._value_proto.FromString(raw)
        kind = proto.WhichOneof("val")
        if kind is None or kind == "null_val":
            return None
        if kind in _SCALARS:
            return getattr(proto, kind)
        from feast.type_map import feast_value_type_to_python_type

        return feast_value_type_to_python_type(proto)

    async def read(self, entity_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in entity_rows]
        for view in self.views:
            keys = [self._key(view, row) for row in entity_rows]
            if self.repo.redis_url:
                found = await self._read_redis(view, keys)
            else:
                found = await self._read_sqlite(view, keys)
            for row, values in zip(out, found, strict=True):
                for feature in view.features:
                    row[feature] = values.get(feature)  # None where the store holds none, as Feast's read gives
        return out

    async def _read_redis(self, view: _ViewRead, keys: list[bytes]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if self._redis is None or self._redis_loop is not loop:
            import redis.asyncio

            assert self.repo.redis_url is not None
            self._redis, self._redis_loop = redis.asyncio.Redis.from_url(self.repo.redis_url), loop
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, view.fields)
            replies = await pipe.execute()
        # Each reply ends with the view's timestamp field, which zip leaves out.
        return [{f: self._value(v) for f, v in zip(view.features, reply, strict=False)} for reply in replies]

    async def _read_sqlite(self, view: _ViewRead, keys: list[bytes]) -> list[dict[str, Any]]:
        import sqlite3

        query = (
            f"SELECT entity_key, feature_name, value FROM {_table(view.table)} "
            f"WHERE entity_key IN ({','.join('?' * len(keys))})"
        )
        try:
            if self._sqlite is None:
                self._sqlite = _open_sqlite(self.repo.online_path, wait=0.0)
            # An indexed read of a few rows of a local file: on the event loop, cheaper than a thread's hop.
            found = self._sqlite.execute(query, keys).fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            # A writer (materialize) is committing: wait for it on a thread, never on the event loop.
            found = await asyncio.to_thread(_select_waiting, self.repo.online_path, query, keys)
        wanted = set(view.features)
        by_key: dict[bytes, dict[str, Any]] = {}
        for key, feature, value in found:
            if feature in wanted:
                by_key.setdefault(key, {})[feature] = self._value(value)
        return [by_key.get(key, {}) for key in keys]

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        self._sqlite, self._redis = None, None


_KEYS_KEPT = 100_000
"""Entity key encodings a reader keeps (a few MB); past that it starts over."""


def _open_sqlite(path: Path, wait: float) -> Any:
    """Feast's SQLite online store, read-only (never created: a missing file is an unavailable store)."""
    import sqlite3

    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=wait, check_same_thread=False)


def _select_waiting(path: Path, query: str, keys: list[bytes]) -> list[Any]:
    conn = _open_sqlite(path, wait=5.0)
    try:
        return list(conn.execute(query, keys).fetchall())
    finally:
        conn.close()


_SCALARS = frozenset(("string_val", "double_val", "float_val", "int64_val", "int32_val", "bool_val", "bytes_val"))


def _rows(result: dict[str, list[Any]], count: int) -> list[dict[str, Any]]:
    return [{key: values[i] for key, values in result.items()} for i in range(count)]
