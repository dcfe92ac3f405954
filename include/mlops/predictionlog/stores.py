"""The prediction log and the labels store: one place every prediction lands.

Batch scoring, the online service and the replay all write here, and monitoring
reads back with `read_predictions`. Two backends, chosen by the URI:

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
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlops._io import file_lock
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from mlops.config import UseCase

SOURCES = ("online", "batch", "replay")
# Columns every prediction row carries; feature columns follow them.
META_COLUMNS = (
    "request_id",
    "use_case",
    "model_name",
    "model_version",
    "event_time",
    "logged_at",
    "source",
    "batch_partition",
    "prediction",
)
LABEL_COLUMNS = ("request_id", "label", "event_time", "arrived_at")

TimeLike = date | datetime | str


class PredictionLogError(RuntimeError):
    """The log store could not be read or written; the message says which store and why."""


def use_case_name(use_case: UseCase | str) -> str:
    return use_case if isinstance(use_case, str) else use_case.name


def is_sql_uri(uri: str) -> bool:
    """An SQLAlchemy URL (`dialect[+driver]://...`) rather than a folder path."""
    return re.match(r"^[a-z][a-z0-9+]*://", uri) is not None and not uri.startswith("file://")


def to_timestamp(value: TimeLike) -> datetime:
    """A naive UTC datetime from a date, a datetime or an ISO string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not an ISO date or datetime such as 2011-05-01 or 2011-05-01T13:00"
            ) from exc
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            from datetime import UTC

            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    return datetime(value.year, value.month, value.day)


# --------------------------------------------------------------------------- stores


class _Store(Protocol):
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
    partition ends up twice. A lock held by the store object serialised nothing, since
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


def prediction_store(uri: str | None = None) -> _Store:
    """The prediction log named by `uri` (default `settings.prediction_log_uri`)."""
    uri = uri or get_settings().prediction_log_uri
    if is_sql_uri(uri):
        return SqlStore(uri, "predictions")
    return ParquetStore(Path(uri.removeprefix("file://")).expanduser())


def label_store(labels_uri: str | None = None, log_uri: str | None = None) -> _Store:
    """The labels store: `labels_uri` if given; the same database when the log is SQL; else settings.labels_dir."""
    if labels_uri:
        return SqlStore(labels_uri, "labels") if is_sql_uri(labels_uri) else ParquetStore(Path(labels_uri))
    log_uri = log_uri or get_settings().prediction_log_uri
    if is_sql_uri(log_uri):
        return SqlStore(log_uri, "labels")
    return ParquetStore(get_settings().labels_dir)


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class PredictionBatch:
    """Predictions of one model for a list of records, ready to become log rows."""

    use_case: str
    model_name: str
    model_version: str
    source: str
    request_ids: Sequence[str]
    event_times: Sequence[datetime]
    predictions: Sequence[Any]
    features: dict[str, Sequence[Any]]
    """Column name -> values, one value per record."""
    batch_partition: str | None = None


def build_frame(batches: Iterable[PredictionBatch], logged_at: datetime) -> pd.DataFrame:
    """Log rows (META_COLUMNS then one column per feature) for `batches` of one use case.

    Every column is converted once, straight from its Python list, and the frame is built
    in one call: the prediction service runs this in its writer thread under the GIL, and
    converting through intermediate frames column by column cost ~25 ms per 900 rows, long
    enough to show in the service's p99 (docs/serving.md).
    """
    import pandas as pd

    columns: dict[str, list[Any]] = {name: [] for name in META_COLUMNS}
    feature_values: dict[str, list[Any]] = {}
    total = 0
    for batch in batches:
        if batch.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {batch.source!r}")
        n = len(batch.request_ids)
        if not (len(batch.event_times) == len(batch.predictions) == n):
            raise ValueError("request_ids, event_times and predictions must have the same length")
        columns["request_id"].extend(str(i) for i in batch.request_ids)
        columns["use_case"].extend([batch.use_case] * n)
        columns["model_name"].extend([batch.model_name] * n)
        columns["model_version"].extend([str(batch.model_version)] * n)
        columns["event_time"].extend(batch.event_times)
        columns["logged_at"].extend([logged_at] * n)
        columns["source"].extend([batch.source] * n)
        columns["batch_partition"].extend([batch.batch_partition] * n)
        columns["prediction"].extend(batch.predictions)
        for name, values in batch.features.items():
            if name in columns:
                raise ValueError(f"feature {name!r} collides with a prediction-log column; rename the feature")
            # A feature missing from earlier batches is padded so every column stays aligned.
            feature_values.setdefault(name, [None] * total).extend(values)
        total += n
        for values in feature_values.values():
            if len(values) < total:
                values.extend([None] * (total - len(values)))
    data: dict[str, Any] = {name: _object_column(values) for name, values in columns.items()}
    # cache=False: deciding whether to cache walks every value in Python (~30 ms per 10k rows,
    # under the GIL, in the prediction service's writer thread); the conversion itself is C.
    data["event_time"] = pd.to_datetime(columns["event_time"], cache=False)
    data["logged_at"] = pd.to_datetime(columns["logged_at"], cache=False)
    data["prediction"] = _prediction_column(columns["prediction"])
    for name, values in feature_values.items():
        data[name] = _feature_column(values)
    return pd.DataFrame(data, index=pd.RangeIndex(total), copy=False)


def _object_column(values: list[Any]) -> Any:
    import numpy as np

    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _prediction_column(values: list[Any]) -> Any:
    """float64 when every prediction is a number (class ids included), else as given (labels)."""
    import numpy as np
    import pandas as pd

    given = pd.Series(values)
    numeric = pd.to_numeric(given, errors="coerce")
    if numeric.notna().sum() == given.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    return given.to_numpy()


# Values a numeric feature holds; None is a missing value (NaN).
_NUMBER_TYPES = frozenset({float, int, bool, type(None)})


def _feature_column(values: list[Any]) -> Any:
    """float64 for numeric features (None becomes NaN); strings stay strings.

    The common case, numbers and None only, is one C conversion. Anything else takes the
    general rule: all strings (or None) stay as they are; otherwise numbers and numeric
    strings become float64 if every value converts, and the column is kept as given if not.
    """
    import numpy as np
    import pandas as pd

    types = set(map(type, values))
    if types <= _NUMBER_TYPES and types != {type(None)}:
        return np.asarray(values, dtype=np.float64)
    given = pd.Series(values)
    if given.dtype == object and all(isinstance(v, str) or v is None for v in values):
        return given.to_numpy()
    numeric = pd.to_numeric(given, errors="coerce")
    if numeric.notna().sum() == given.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    return given.to_numpy()


# --------------------------------------------------------------------------- public API


def append_predictions(
    use_case: UseCase | str,
    batches: Sequence[PredictionBatch],
    *,
    uri: str | None = None,
    logged_at: datetime | None = None,
) -> int:
    """Append prediction rows to the log; returns the number of rows written."""
    return append_frame(use_case, build_frame(batches, logged_at or _utcnow()), uri=uri)


def append_frame(use_case: UseCase | str, frame: pd.DataFrame, *, uri: str | None = None) -> int:
    """Append rows made by `build_frame`; a store failure raises PredictionLogError.

    Separate from `append_predictions` so that a caller holding rows (the service's log
    writer) can tell a batch that cannot become rows (`build_frame` raised: the data is
    wrong and retrying will not help) from a store that cannot take them now (retry).
    """
    name = use_case_name(use_case)
    store = prediction_store(uri)
    try:
        store.append(name, frame)
    except Exception as exc:
        raise PredictionLogError(
            f"cannot write {len(frame)} predictions of {name} to {store.describe()}: {exc}"
        ) from exc
    return len(frame)


def replace_batch_partition(
    use_case: UseCase | str,
    partition: str,
    batch: PredictionBatch,
    *,
    uri: str | None = None,
    logged_at: datetime | None = None,
) -> int:
    """Write a batch-scoring partition, replacing whatever an earlier run wrote for it; returns rows replaced."""
    if batch.batch_partition != partition:
        raise ValueError(f"batch.batch_partition {batch.batch_partition!r} must equal partition {partition!r}")
    frame = build_frame([batch], logged_at or _utcnow())
    name = use_case_name(use_case)
    store = prediction_store(uri)
    try:
        return store.replace_partition(name, partition, frame)
    except Exception as exc:
        raise PredictionLogError(
            f"cannot replace partition {partition!r} of {name} in {store.describe()}: {exc}"
        ) from exc


def write_labels(
    use_case: UseCase | str,
    ids: Sequence[Any],
    labels: Sequence[Any],
    event_times: Sequence[TimeLike],
    *,
    uri: str | None = None,
    arrived_at: datetime | None = None,
) -> int:
    """Store ground truth that arrived later; it joins the predictions by request id.

    Pass the same event time the prediction was logged with: both stores are
    partitioned by event date, so a window read finds the label next to its prediction.
    A label written twice for an id counts once (the latest arrival wins).
    """
    import pandas as pd

    if not (len(ids) == len(labels) == len(event_times)):
        raise ValueError(
            f"ids ({len(ids)}), labels ({len(labels)}) and event_times ({len(event_times)}) differ in length"
        )
    frame = pd.DataFrame(
        {
            "request_id": [str(i) for i in ids],
            "label": list(labels),
            "event_time": pd.to_datetime([to_timestamp(t) for t in event_times]),
            "arrived_at": pd.Timestamp(arrived_at or _utcnow()),
        }
    )
    numeric = pd.to_numeric(frame["label"], errors="coerce")
    if numeric.notna().sum() == frame["label"].notna().sum():
        frame["label"] = numeric.astype("float64")
    name = use_case_name(use_case)
    store = label_store(uri)
    try:
        store.append(name, frame)
    except Exception as exc:
        raise PredictionLogError(f"cannot write {len(frame)} labels of {name} to {store.describe()}: {exc}") from exc
    return len(frame)


def read_labels(
    use_case: UseCase | str, start: TimeLike | None = None, end: TimeLike | None = None, *, uri: str | None = None
) -> pd.DataFrame:
    """Labels with event time in [start, end), one row per request id (latest arrival)."""
    import pandas as pd

    frame = label_store(uri).read(
        use_case_name(use_case), to_timestamp(start) if start else None, to_timestamp(end) if end else None
    )
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LABEL_COLUMNS})
    frame = frame.sort_values("arrived_at", kind="stable").drop_duplicates("request_id", keep="last")
    return frame.reset_index(drop=True)


def read_predictions(
    use_case: UseCase | str,
    start: TimeLike | None,
    end: TimeLike | None,
    with_labels: bool = False,
    *,
    uri: str | None = None,
    labels_uri: str | None = None,
) -> pd.DataFrame:
    """Predictions whose event time lies in [start, end), oldest first.

    `start`/`end` take dates, datetimes or ISO strings; None leaves that side open.
    `with_labels` adds a `label` column (NaN where the label has not arrived yet).
    """
    import numpy as np
    import pandas as pd

    lo = to_timestamp(start) if start is not None else None
    hi = to_timestamp(end) if end is not None else None
    name = use_case_name(use_case)
    store = prediction_store(uri)
    try:
        frame = store.read(name, lo, hi)
    except Exception as exc:
        raise PredictionLogError(f"cannot read predictions of {name} from {store.describe()}: {exc}") from exc
    if frame.empty:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in META_COLUMNS})
        frame["event_time"] = pd.Series(dtype="datetime64[ns]")
    else:
        frame = frame.sort_values(["event_time", "logged_at"], kind="stable").reset_index(drop=True)
    if with_labels:
        labels = read_labels(name, lo, hi, uri=labels_uri or _default_labels_uri(uri))
        mapping = dict(zip(labels["request_id"], labels["label"], strict=True))
        frame["label"] = [mapping.get(i, np.nan) for i in frame["request_id"]]
        if frame["label"].dtype == object:
            numeric = pd.to_numeric(frame["label"], errors="coerce")
            if numeric.notna().sum() == frame["label"].notna().sum():
                frame["label"] = numeric
    return frame


def _default_labels_uri(log_uri: str | None) -> str | None:
    # With an explicit SQL log, labels live in the same database.
    if log_uri and is_sql_uri(log_uri):
        return log_uri
    return None


def _utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC).replace(tzinfo=None)
