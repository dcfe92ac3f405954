"""Where prediction rows and labels are stored: a Parquet folder or an SQL database, chosen by the URI.

* a folder (the default, `settings.prediction_log_uri`): Parquet files partitioned
  by the *event* date, `<uri>/<use_case>/date=YYYY-MM-DD/<source>__*.parquet`;
  labels use the same layout under `settings.labels_dir`;
* an SQLAlchemy URL (`sqlite:///...`, `postgresql://...`): tables
  `predictions_<use_case>` and `labels_<use_case>` in that database.

Partitions follow the event time (the business time of the record), not the time
of logging, so monitoring windows on event time read only the partitions they need.
Files are written under a hidden temporary name and renamed into place, so a
reader never sees half a file.

Heavy imports sit inside the functions: DAG files import this module at parse time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlops._io import atomic_path, file_lock
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from mlops.config import UseCase


class PredictionLogError(RuntimeError):
    """The log store could not be read or written; the message says which store and why."""


class LogSchemaError(PredictionLogError, ValueError):
    """A write would change the type of a column the log already holds: a data error, never retried."""


# The prediction log's schema: per use case and model version, column -> kind
# (frames.KINDS). Written with a version's first rows, checked on every write, and used
# to cast a window back to its types on read (SQL hands back 0/1 for booleans and floats
# for integer columns with nulls).
SCHEMA_FOLDER = "_schema"
SQL_SCHEMA_TABLE = "prediction_log_schema"
SQL_BATCHES_TABLE = "prediction_log_batches"
"""The ids of the batches the service's log writer appended (serving/spool.py): a replay skips them."""
Schemas = dict[str, dict[str, str]]
"""model version -> {column: kind}."""


def use_case_name(use_case: UseCase | str) -> str:
    return use_case if isinstance(use_case, str) else use_case.name


def is_sql_uri(uri: str) -> bool:
    """An SQLAlchemy URL (`dialect[+driver]://...`) rather than a folder path."""
    return re.match(r"^[a-z][a-z0-9+]*://", uri) is not None and not uri.startswith("file://")


class Store(Protocol):
    """What the log and the labels need of a backend: append, replace a batch partition, read a window."""

    def append(self, use_case: str, frame: pd.DataFrame, batch_id: str | None = None) -> None:
        """Add rows; with a `batch_id`, writing the same batch again leaves it in the store once."""
        ...

    def replace_partition(self, use_case: str, partition: str, frame: pd.DataFrame) -> int: ...

    def read(self, use_case: str, start: datetime | None, end: datetime | None) -> pd.DataFrame: ...

    def describe(self) -> str: ...

    def read_schemas(self, use_case: str) -> Schemas: ...

    def write_schema(self, use_case: str, version: str, columns: dict[str, str]) -> None: ...


def finished_files(paths: Iterable[Path]) -> list[Path]:
    """The Parquet files a reader may open, sorted.

    Why: a file still being written has a hidden `.tmp-` name (`ParquetStore._write`) and
    `Path.glob("*.parquet")` matches hidden names too, so a read racing a write opened a half
    file ("Parquet magic bytes not found"), seen when a window was read while the service logged.
    """
    return sorted(p for p in paths if not p.name.startswith("."))


def _partition_tag(partition: str) -> str:
    # A hash keeps file names unambiguous whatever characters the label holds;
    # the readable slug is only there for humans browsing the folder.
    digest = hashlib.sha1(partition.encode()).hexdigest()[:10]
    return digest


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text)[:40] or "x"


def _replace_lock(folder: Path) -> AbstractContextManager[None]:
    """Hold one use case's folder for a partition replacement, against threads and processes alike.

    Why: a replacement lists the partition's old files, deletes them and renames the new
    ones in; two replacements of one partition that overlap both find nothing old and the
    partition ends up twice. A lock held by the store object would serialise nothing, since
    `prediction_store()` builds a new store per call; the lock belongs to the folder. The
    in-process lock keeps threads from queueing on the file lock; the file lock (flock on
    `<folder>/.replace.lock`) covers the separate processes Airflow runs tasks in, e.g. a
    retry racing a manual re-run of the same partition.
    """
    return file_lock(folder / ".replace.lock")


class ParquetStore:
    """Parquet files partitioned by event date under `root/<use_case>/date=YYYY-MM-DD/`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def _write(
        self, use_case: str, frame: pd.DataFrame, prefix: str, fixed_name: str | None = None
    ) -> list[tuple[Path, Path]]:
        """Write one temporary file per event date; returns (temporary, final) pairs.

        The final name is `<prefix>__<random>.parquet`, or `<fixed_name>.parquet` in every date folder.
        """
        import pandas as pd

        pending: list[tuple[Path, Path]] = []
        # floor, not strftime: formatting every row is a Python call per row.
        days = pd.to_datetime(frame["event_time"], cache=False).dt.floor("D")
        try:
            for day, part in frame.groupby(days, sort=True):
                folder = self.root / use_case / f"date={day:%Y-%m-%d}"
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{fixed_name}.parquet" if fixed_name else f"{prefix}__{uuid.uuid4().hex[:12]}.parquet"
                tmp = folder / f".tmp-{uuid.uuid4().hex[:8]}-{name}"
                part.to_parquet(tmp, index=False)
                pending.append((tmp, folder / name))
        except OSError:
            for tmp, _ in pending:
                tmp.unlink(missing_ok=True)
            raise
        return pending

    def append(self, use_case: str, frame: pd.DataFrame, batch_id: str | None = None) -> None:
        if frame.empty:
            return
        source = str(frame["source"].iloc[0]) if "source" in frame else "rows"
        # A batch id names the files (one per event date): a replay of the batch renames the same
        # rows over the same names, and a batch cut off between two of its dates is completed.
        names = f"{source}__{_slug(batch_id)}-{_partition_tag(batch_id)}" if batch_id else None
        for tmp, final in self._write(use_case, frame, f"{source}__{os.getpid()}", names):
            os.replace(tmp, final)

    def replace_partition(self, use_case: str, partition: str, frame: pd.DataFrame) -> int:
        import pyarrow.parquet as pq

        tag = _partition_tag(partition)
        with _replace_lock(self.root / use_case):
            pending = self._write(use_case, frame, f"batch__{tag}__{_slug(partition)}") if not frame.empty else []
            old = finished_files((self.root / use_case).glob(f"date=*/batch__{tag}__*.parquet"))
            replaced = 0
            for path in old:
                replaced += pq.ParquetFile(path).metadata.num_rows
                path.unlink()
            for tmp, final in pending:
                os.replace(tmp, final)
        return replaced

    def partition_folders(self, use_case: str, partition: str) -> list[Path]:
        """The day folders holding a batch partition's files (its rows are foldered by event date)."""
        found = (self.root / use_case).glob(f"date=*/batch__{_partition_tag(partition)}__*.parquet")
        return sorted({path.parent for path in finished_files(found)})

    def _files(self, use_case: str, start: datetime | None, end: datetime | None) -> list[Path]:
        files: list[Path] = []
        base = self.root / use_case
        if not base.is_dir():
            return files
        for folder in sorted(base.glob("date=*")):
            try:
                day = datetime.strptime(folder.name[5:], "%Y-%m-%d")
            except ValueError:
                continue
            if start is not None and day + timedelta(days=1) <= start:
                continue
            if end is not None and day >= end:
                continue
            files.extend(finished_files(folder.glob("*.parquet")))
        return files

    def read_schemas(self, use_case: str) -> Schemas:
        folder = self.root / use_case / SCHEMA_FOLDER
        schemas: Schemas = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            record = json.loads(path.read_text())
            schemas[str(record["model_version"])] = dict(record["columns"])
        return schemas

    def write_schema(self, use_case: str, version: str, columns: dict[str, str]) -> None:
        folder = self.root / use_case / SCHEMA_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        record = {"use_case": use_case, "model_version": version, "columns": columns}
        with atomic_path(folder / f"{_slug(version)}-{_partition_tag(version)}.json") as tmp:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))

    def read(self, use_case: str, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        import pandas as pd

        frames = []
        for path in self._files(use_case, start, end):
            try:
                frames.append(pd.read_parquet(path))
            except FileNotFoundError:
                continue  # replaced by a concurrent batch re-run between listing and reading
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame()
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return _filter_time(frame, start, end)


class SqlStore:
    """One table per use case (`<prefix>_<use_case>`) in an SQLAlchemy database."""

    _engines: dict[str, sa.Engine] = {}
    _engines_lock = threading.Lock()

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def describe(self) -> str:
        from sqlalchemy.engine import make_url

        return f"{make_url(self.url).render_as_string(hide_password=True)} (tables {self.prefix}_<use_case>)"

    @property
    def engine(self) -> sa.Engine:
        import sqlalchemy as sa

        with self._engines_lock:
            engine = self._engines.get(self.url)
            if engine is None:
                engine = sa.create_engine(self.url, pool_pre_ping=True)
                self._engines[self.url] = engine
            return engine

    def table_name(self, use_case: str) -> str:
        return f"{self.prefix}_{use_case}"

    def _schema_table(self) -> sa.Table:
        import sqlalchemy as sa

        return sa.Table(
            SQL_SCHEMA_TABLE,
            sa.MetaData(),
            sa.Column("use_case", sa.Text, primary_key=True),
            sa.Column("model_version", sa.Text, primary_key=True),
            sa.Column("columns", sa.Text, nullable=False),
        )

    def read_schemas(self, use_case: str) -> Schemas:
        import sqlalchemy as sa

        table = self._schema_table()
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(SQL_SCHEMA_TABLE):
                return {}
            rows = conn.execute(sa.select(table.c.model_version, table.c.columns).where(table.c.use_case == use_case))
            return {str(version): dict(json.loads(columns)) for version, columns in rows}

    def write_schema(self, use_case: str, version: str, columns: dict[str, str]) -> None:
        import sqlalchemy as sa

        table = self._schema_table()
        with self.engine.begin() as conn:
            table.create(conn, checkfirst=True)
            conn.execute(sa.delete(table).where((table.c.use_case == use_case) & (table.c.model_version == version)))
            conn.execute(sa.insert(table).values(use_case=use_case, model_version=version, columns=json.dumps(columns)))

    def _ensure_columns(self, conn: sa.Connection, table: str, frame: pd.DataFrame) -> None:
        # A feature added to a use case later must not break appends to an existing table.
        import sqlalchemy as sa

        inspector = sa.inspect(conn)
        if not inspector.has_table(table):
            return
        existing = {c["name"] for c in inspector.get_columns(table)}
        preparer = conn.dialect.identifier_preparer
        for column in frame.columns:
            if column in existing:
                continue
            sql_type = _sql_type(frame_kind(frame[column])).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column)} {sql_type}"))

    def _insert(self, conn: sa.Connection, table: str, frame: pd.DataFrame) -> None:
        self._ensure_columns(conn, table, frame)
        # Typed columns (BIGINT, DOUBLE, TEXT, BOOLEAN), not what pandas would guess from one chunk.
        types = {column: _sql_type(frame_kind(frame[column])) for column in frame.columns}
        frame.to_sql(table, conn, if_exists="append", index=False, dtype=types)  # type: ignore[arg-type]

    def _batches_table(self) -> sa.Table:
        import sqlalchemy as sa

        return sa.Table(
            SQL_BATCHES_TABLE,
            sa.MetaData(),
            sa.Column("batch_id", sa.String(255), primary_key=True),
            sa.Column("use_case", sa.Text, nullable=False),
            sa.Column("rows", sa.BigInteger, nullable=False),
        )

    def append(self, use_case: str, frame: pd.DataFrame, batch_id: str | None = None) -> None:
        import sqlalchemy as sa

        if frame.empty:
            return
        with self.engine.begin() as conn:
            if batch_id is not None:
                # The batch's id goes in with its rows, in one transaction: a replay finds it and writes nothing.
                batches = self._batches_table()
                batches.create(conn, checkfirst=True)
                if conn.execute(sa.select(batches.c.batch_id).where(batches.c.batch_id == batch_id)).first():
                    return
                conn.execute(sa.insert(batches).values(batch_id=batch_id, use_case=use_case, rows=len(frame)))
            self._insert(conn, self.table_name(use_case), frame)

    def replace_partition(self, use_case: str, partition: str, frame: pd.DataFrame) -> int:
        import sqlalchemy as sa

        table = self.table_name(use_case)
        # One transaction: readers see either the old partition or the new one.
        with self.engine.begin() as conn:
            replaced = 0
            if sa.inspect(conn).has_table(table):
                reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
                result = conn.execute(sa.delete(reflected).where(reflected.c.batch_partition == partition))
                replaced = int(result.rowcount or 0)
            if not frame.empty:
                self._insert(conn, table, frame)
        return replaced

    def read(self, use_case: str, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        import pandas as pd
        import sqlalchemy as sa

        table = self.table_name(use_case)
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return pd.DataFrame()
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            query = sa.select(reflected)
            if start is not None:
                query = query.where(reflected.c.event_time >= start)
            if end is not None:
                query = query.where(reflected.c.event_time < end)
            frame = pd.read_sql(query, conn)
        for column in ("event_time", "logged_at", "arrived_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], format="mixed")
        return frame


def frame_kind(column: pd.Series) -> str | None:
    """The log kind of a column (frames.KINDS), or None when it has no values to tell by."""
    import pandas as pd

    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "long"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    # infer_dtype looks at every value in C; a Python `isinstance` per value cost the service's
    # log writer ~3.5 µs per logged row (benchmarks/serving, docs/serving.md).
    if pd.api.types.infer_dtype(column, skipna=True) == "string":
        return "string"
    return None


def frame_schema(frame: pd.DataFrame) -> dict[str, str]:
    """{column: kind} of the columns of `frame` that have a kind (an all-null text column has none)."""
    schema = {}
    for column in frame.columns:
        kind = frame_kind(frame[column])
        if kind is not None:
            schema[str(column)] = kind
    return schema


def merged_schema(schemas: Schemas) -> dict[str, tuple[str, list[str]]]:
    """{column: (kind, the versions that wrote it so)} over every version's schema (the first kind wins)."""
    merged: dict[str, tuple[str, list[str]]] = {}
    for version, columns in schemas.items():
        for column, kind in columns.items():
            known = merged.setdefault(column, (kind, []))
            if known[0] == kind:
                known[1].append(version)
    return merged


def check_schema(use_case: str, schemas: Schemas, new: dict[str, str], versions: list[str]) -> None:
    """Raise LogSchemaError when `new` gives a logged column another kind than the log holds."""
    merged = merged_schema(schemas)
    problems = []
    for column, kind in new.items():
        known = merged.get(column)
        if known is not None and known[0] != kind:
            problems.append(
                f"column {column!r} is {known[0]} in the log (model version(s) {', '.join(known[1])}) "
                f"but {kind} in this write"
            )
    if problems:
        raise LogSchemaError(
            f"refusing to write predictions of {use_case} (model version(s) {', '.join(versions)}): "
            + "; ".join(problems)
            + ". A log column keeps one type, it is never silently converted: send the values with the type "
            "the model signature declares (e.g. integers as integers), or, if the type really changed, "
            "rename the feature or log to a new prediction_log_uri."
        )


def apply_schema(frame: pd.DataFrame, schemas: Schemas) -> pd.DataFrame:
    """Cast a window read back to the kinds the log recorded, the same from Parquet and SQL.

    Integers come back int64, or pandas `Int64` when the window holds a null; booleans
    bool or `boolean`; text object; numbers float64. A column whose values do not fit
    (rows from before the schema was kept) is left as read.
    """
    import pandas as pd

    for column, (kind, _) in merged_schema(schemas).items():
        if column not in frame.columns:
            continue
        values = frame[column]
        nulls = bool(values.isna().any())
        try:
            if kind == "long":
                frame[column] = values.astype("Int64") if nulls else values.astype("int64")
            elif kind == "bool":
                frame[column] = values.astype("boolean") if nulls else values.astype(bool)
            elif kind == "double":
                frame[column] = values.astype("float64")
            elif kind == "string":
                frame[column] = values.astype(object).where(values.notna(), None)
            elif kind == "datetime" and not pd.api.types.is_datetime64_any_dtype(values.dtype):
                frame[column] = pd.to_datetime(values, format="mixed")
        except (TypeError, ValueError):
            continue
    return frame


def _sql_type(kind: str | None) -> sa.types.TypeEngine[Any]:
    import sqlalchemy as sa

    types: dict[str | None, sa.types.TypeEngine[Any]] = {
        "long": sa.BigInteger(),
        "double": sa.Float(precision=53),
        "bool": sa.Boolean(),
        "datetime": sa.DateTime(),
    }
    return types.get(kind, sa.Text())


def _filter_time(frame: pd.DataFrame, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    import pandas as pd

    if frame.empty:
        return frame
    times = pd.to_datetime(frame["event_time"])
    mask = pd.Series(True, index=frame.index)
    if start is not None:
        mask &= times >= start
    if end is not None:
        mask &= times < end
    return frame.loc[mask].reset_index(drop=True)


def prediction_store(uri: str | None = None) -> Store:
    """The prediction log named by `uri` (default `settings.prediction_log_uri`)."""
    uri = uri or get_settings().prediction_log_uri
    if is_sql_uri(uri):
        return SqlStore(uri, "predictions")
    return ParquetStore(Path(uri.removeprefix("file://")).expanduser())


def label_store(labels_uri: str | None = None, log_uri: str | None = None) -> Store:
    """The labels store: `labels_uri` if given; the same database when the log is SQL; else settings.labels_dir."""
    if labels_uri:
        return SqlStore(labels_uri, "labels") if is_sql_uri(labels_uri) else ParquetStore(Path(labels_uri))
    log_uri = log_uri or get_settings().prediction_log_uri
    if is_sql_uri(log_uri):
        return SqlStore(log_uri, "labels")
    return ParquetStore(get_settings().labels_dir)
