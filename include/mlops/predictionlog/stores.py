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
import os
import re
import threading
import uuid
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlops._io import file_lock
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from mlops.config import UseCase


class PredictionLogError(RuntimeError):
    """The log store could not be read or written; the message says which store and why."""


def use_case_name(use_case: UseCase | str) -> str:
    return use_case if isinstance(use_case, str) else use_case.name


def is_sql_uri(uri: str) -> bool:
    """An SQLAlchemy URL (`dialect[+driver]://...`) rather than a folder path."""
    return re.match(r"^[a-z][a-z0-9+]*://", uri) is not None and not uri.startswith("file://")


class Store(Protocol):
    """What the log and the labels need of a backend: append, replace a batch partition, read a window."""

    def append(self, use_case: str, frame: pd.DataFrame) -> None: ...

    def replace_partition(self, use_case: str, partition: str, frame: pd.DataFrame) -> int: ...

    def read(self, use_case: str, start: datetime | None, end: datetime | None) -> pd.DataFrame: ...

    def describe(self) -> str: ...


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

    def _write(self, use_case: str, frame: pd.DataFrame, prefix: str) -> list[tuple[Path, Path]]:
        """Write one temporary file per event date; returns (temporary, final) pairs."""
        import pandas as pd

        pending: list[tuple[Path, Path]] = []
        # floor, not strftime: formatting every row is a Python call per row.
        days = pd.to_datetime(frame["event_time"], cache=False).dt.floor("D")
        try:
            for day, part in frame.groupby(days, sort=True):
                folder = self.root / use_case / f"date={day:%Y-%m-%d}"
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{prefix}__{uuid.uuid4().hex[:12]}.parquet"
                tmp = folder / f".tmp-{name}"
                part.to_parquet(tmp, index=False)
                pending.append((tmp, folder / name))
        except OSError:
            for tmp, _ in pending:
                tmp.unlink(missing_ok=True)
            raise
        return pending

    def append(self, use_case: str, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        source = str(frame["source"].iloc[0]) if "source" in frame else "rows"
        for tmp, final in self._write(use_case, frame, f"{source}__{os.getpid()}"):
            os.replace(tmp, final)

    def replace_partition(self, use_case: str, partition: str, frame: pd.DataFrame) -> int:
        import pyarrow.parquet as pq

        tag = _partition_tag(partition)
        with _replace_lock(self.root / use_case):
            pending = self._write(use_case, frame, f"batch__{tag}__{_slug(partition)}") if not frame.empty else []
            old = sorted((self.root / use_case).glob(f"date=*/batch__{tag}__*.parquet"))
            replaced = 0
            for path in old:
                replaced += pq.ParquetFile(path).metadata.num_rows
                path.unlink()
            for tmp, final in pending:
                os.replace(tmp, final)
        return replaced

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
            files.extend(sorted(folder.glob("*.parquet")))
        return files

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
            kind = frame[column].dtype.kind
            sql_type = "DOUBLE PRECISION" if kind in "fiu" else "TIMESTAMP" if kind == "M" else "TEXT"
            if conn.dialect.name == "sqlite" and sql_type == "DOUBLE PRECISION":
                sql_type = "FLOAT"
            conn.execute(sa.text(f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column)} {sql_type}"))

    def _insert(self, conn: sa.Connection, table: str, frame: pd.DataFrame) -> None:
        self._ensure_columns(conn, table, frame)
        frame.to_sql(table, conn, if_exists="append", index=False)

    def append(self, use_case: str, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        with self.engine.begin() as conn:
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
