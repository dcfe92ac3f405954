"""A window too large to read whole: its log files, row counts from metadata, and a stratified sample.

Above `monitoring.exact_below_rows` rows, `window.collect_window` no longer copies the
window: it lists the window's log files (`window-files.json`) and writes a sample of
the served rows with their labels as `window.parquet`. The decision's numbers then
come from the files' summaries (`mlops.monitoring.summaries`: drift, null shares, row
counts, merged per file, so their cost grows with the number of files, not of rows)
and the sample carries what still needs rows: the Evidently HTML reports, the Great
Expectations validation, the skew check, the label lag and the performance metrics.

The sample is stratified by day partition: each day gets a quota proportional to its
rows (from the Parquet footers, no read). Within a day, row groups are drawn at random (by size)
until they hold four times the quota (at least 8 groups when the day has them), then
the quota's rows are drawn uniformly from them. Only the columns monitoring uses are
decoded, with pyarrow, never the whole window into pandas. The labels are joined for the
sampled request ids only, the id and time filters pushed into the label files' scan (with
Polars: `label_scan`; each engine chosen by measurement, docs/benchmarks.md). The
labelled-row count is the label files' row count from their footers: labels are upserted
by request id into their prediction's day folder, so a day's label files hold each id once
(the unmatched labels, whose prediction was not logged when they came, are not counted).

An SQL log takes the same path with the database doing the work: the row count is a
COUNT(*), the sample an `ORDER BY random() LIMIT n` (uniform, not stratified), the labelled
rows a COUNT(*) of the log joined with its labels table, and the summary GROUP BY queries
(`summaries.SqlWindow`); no row of the window leaves the database but the sample's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.naming import PROBA_COLUMN_PREFIX, ROLE_CHAMPION, ROLE_SHADOW
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# Rows drawn per window; the HTML reports render on at most run.REPORT_SAMPLE_ROWS of them.
SAMPLE_ROWS = 200_000
# Row groups drawn per day hold this many times the day's quota, so a day's sample spreads over several.
OVERSAMPLE = 4
MIN_GROUPS_PER_DAY = 8
LOG_READ_COLUMNS = ("request_id", "role", "model_version", "prediction", "logged_at", "event_time")


@dataclass(frozen=True)
class WindowFiles:
    """The Parquet log files of a window, by day folder, with their row counts (from the footers)."""

    days: dict[str, list[str]]
    rows: int
    """All rows of the window's files, a shadow's included (the summaries count served rows)."""
    labelled_rows: int
    sample_rows: int
    sampled_labelled_rows: int
    sql_url: str | None = None
    """An SQL log's URL: its window is summarised by the database (`days` is then empty)."""
    start: str | None = None
    end: str | None = None

    @property
    def files(self) -> list[Path]:
        return [Path(f) for day in sorted(self.days) for f in self.days[day]]

    def log_window(self, use_case: str | None = None) -> Any:
        """The window's rows where they are: `summaries.ServedColumns` (Parquet) or `summaries.SqlWindow`."""
        from mlops.monitoring import summaries

        if self.sql_url is None:
            return summaries.ServedColumns(self.files)
        assert self.start is not None and self.end is not None and use_case is not None
        return summaries.SqlWindow(
            self.sql_url, use_case, datetime.fromisoformat(self.start), datetime.fromisoformat(self.end)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> WindowFiles:
        return cls(**json.loads(Path(path).read_text()))


def parquet_roots(use_case: str, log_uri: str | None = None) -> tuple[Path, Path] | None:
    """The Parquet log's and labels' folders of a use case, or None when the log is in SQL."""
    from mlops.predictionlog.stores import ParquetStore, label_store, prediction_store

    log, labels = prediction_store(log_uri), label_store(None, log_uri)
    if not isinstance(log, ParquetStore) or not isinstance(labels, ParquetStore):
        return None
    return log.root / use_case, labels.root / use_case


def day_folders(base: Path, start: datetime, end: datetime) -> list[Path]:
    """The `date=YYYY-MM-DD` folders under `base` that overlap [start, end), oldest first."""
    folders = []
    for folder in sorted(base.glob("date=*")) if base.is_dir() else []:
        try:
            day = datetime.strptime(folder.name[5:], "%Y-%m-%d")
        except ValueError:
            continue
        if day + timedelta(days=1) > start and day < end:
            folders.append(folder)
    return folders


def _parquet_files(folder: Path) -> list[Path]:
    from mlops.predictionlog.stores import finished_files

    return finished_files(folder.glob("*.parquet"))


def count_rows(files: Sequence[Path]) -> int:
    """Rows of Parquet files, from their footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def window_rows(use_case: str, start: datetime, end: datetime, log_uri: str | None = None) -> int:
    """Rows of the window: a Parquet log's day folders (a bound: boundary days may hold rows outside it,
    counted from the footers), an SQL log's COUNT(*)."""
    roots = parquet_roots(use_case, log_uri)
    if roots is None:
        return _count_sql(use_case, start, end, log_uri or get_settings().prediction_log_uri)
    return count_rows([f for d in day_folders(roots[0], start, end) for f in _parquet_files(d)])


def _needed_columns(schema_names: Sequence[str], features: Sequence[str], keys: Sequence[str]) -> list[str]:
    proba = [c for c in schema_names if c.startswith(PROBA_COLUMN_PREFIX)]
    wanted = [*LOG_READ_COLUMNS, *features, *keys, *proba]
    present = set(schema_names)
    return [c for c in dict.fromkeys(wanted) if c in present]


def _sample_day(
    files: Sequence[Path], quota: int, columns: Sequence[str], rng: Any, start: datetime, end: datetime
) -> pa.Table | None:
    """`quota` rows of one day: random row groups holding OVERSAMPLE x quota rows, then rows among them."""
    chosen = _choose_row_groups(files, quota, rng)
    if not chosen:
        return None
    return _take_quota(_read_row_groups(chosen, columns, start, end), quota, rng)


def _choose_row_groups(files: Sequence[Path], quota: int, rng: Any) -> list[tuple[Path, int, int]]:
    """(file, row group, rows) of one day drawn until they hold OVERSAMPLE x quota rows, in file order."""
    import numpy as np
    import pyarrow.parquet as pq

    groups = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        groups += [(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    if not groups or quota <= 0:
        return []
    # Row groups drawn with probability by size (Efraimidis-Spirakis keys u^(1/size)), so a row's
    # chance of entering the sample does not depend on the size of the file that holds it.
    sizes = np.asarray([g[2] for g in groups], dtype="float64")
    order = np.argsort(-(rng.random(len(groups)) ** (1.0 / np.maximum(sizes, 1.0))))
    chosen, held = [], 0
    for index in order:
        chosen.append(groups[index])
        held += groups[index][2]
        if held >= OVERSAMPLE * quota and len(chosen) >= min(MIN_GROUPS_PER_DAY, len(groups)):
            break
    return sorted(chosen, key=lambda g: (str(g[0]), g[1]))


def _read_row_groups(
    groups: Sequence[tuple[Path, int, int]], columns: Sequence[str], start: datetime, end: datetime
) -> pa.Table:
    """The `columns` of the chosen row groups, in order, without the rows whose event_time is outside [start, end)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for path, group, _ in groups:
        parquet = pq.ParquetFile(path)
        names = [c for c in columns if c in parquet.schema_arrow.names]
        tables.append(parquet.read_row_group(group, columns=names))
    table = pa.concat_tables(tables, promote_options="default")
    if "event_time" in table.column_names:
        times = table.column("event_time")
        if pa.types.is_timestamp(times.type):
            lo, hi = pa.scalar(start, times.type), pa.scalar(end, times.type)
            if times.type.tz is not None:
                lo = pa.scalar(start.replace(tzinfo=None), pa.timestamp(times.type.unit)).cast(times.type)
                hi = pa.scalar(end.replace(tzinfo=None), pa.timestamp(times.type.unit)).cast(times.type)
            table = table.filter(pc.and_(pc.greater_equal(times, lo), pc.less(times, hi)))
    return table


def _take_quota(table: pa.Table, quota: int, rng: Any) -> pa.Table:
    """`quota` rows of `table` drawn uniformly, in their order (all of them when it holds no more)."""
    import pyarrow as pa

    if len(table) <= quota:
        return table
    return table.take(pa.array(sorted(rng.choice(len(table), size=quota, replace=False))))


def _served(frame: pd.DataFrame) -> pd.DataFrame:
    if "role" not in frame.columns:
        return frame
    frame["role"] = frame["role"].fillna(ROLE_CHAMPION)
    return frame[frame["role"].astype(str) != ROLE_SHADOW].reset_index(drop=True)


def _time_ranges(times: pd.Series, gap: Any) -> list[tuple[Any, Any]]:
    """The sampled event times as the few ranges they cluster in (a row group is a run of time)."""
    import numpy as np

    ordered = np.sort(times.dropna().to_numpy())
    if not len(ordered):
        return []
    cuts = np.flatnonzero(np.diff(ordered) > gap) + 1
    starts, ends = np.concatenate(([0], cuts)), np.concatenate((cuts, [len(ordered)])) - 1
    return [(ordered[a], ordered[b]) for a, b in zip(starts, ends, strict=True)]


def _join_sample_labels(sample: pd.DataFrame, label_days: Sequence[Path]) -> pd.DataFrame:
    """`label` and `label_arrived_at` of the sampled rows, read from the label files of `label_days` (`label_scan`)."""
    import pandas as pd

    files = [str(f) for d in label_days for f in _parquet_files(d)]
    if not files or sample.empty:
        return _attach_labels(sample, pd.DataFrame())
    ids = sample["request_id"].astype(str).unique().tolist()
    from mlops.monitoring.label_scan import read_labels

    return _attach_labels(sample, read_labels(files, ids, _label_time_ranges(sample)))


def _label_time_ranges(sample: pd.DataFrame) -> list[tuple[Any, Any]]:
    """The ranges of event time (naive UTC) the sample came from, to filter the labels' `prediction_time` by."""
    import pandas as pd

    if "event_time" not in sample.columns:
        return []
    times = pd.to_datetime(sample["event_time"])
    times = times.dt.tz_convert(None) if times.dt.tz is not None else times
    return _time_ranges(times, pd.Timedelta(minutes=10).to_numpy())


def _attach_labels(sample: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """`label` and `label_arrived_at` of each sampled row from `labels` (request_id, label, arrived_at)."""
    import numpy as np
    import pandas as pd

    sample["label"] = np.nan
    sample["label_arrived_at"] = pd.Series(pd.NaT, index=sample.index, dtype="datetime64[ns]")
    if labels.empty or sample.empty:
        return sample
    ids = sample["request_id"].astype(str)
    labels["arrived_at"] = pd.to_datetime(labels["arrived_at"], format="mixed")
    labels = labels.sort_values("arrived_at", kind="stable").drop_duplicates("request_id", keep="last")
    position = pd.Index(labels["request_id"].astype(str)).get_indexer(ids)
    found = position >= 0
    values = labels["label"].to_numpy(dtype=object)
    column = np.full(len(sample), np.nan, dtype=object)
    column[found] = values[position[found]]
    numeric = pd.to_numeric(pd.Series(column), errors="coerce")
    sample["label"] = numeric if numeric.notna().sum() == found.sum() else column
    arrived = pd.to_datetime(labels["arrived_at"]).dt.tz_localize(None) if labels["arrived_at"].dt.tz else None
    stamps = (arrived if arrived is not None else labels["arrived_at"]).to_numpy(dtype="datetime64[ns]")
    out = np.full(len(sample), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[found] = stamps[position[found]]
    sample["label_arrived_at"] = out
    return sample


def sample_window(
    use_case: Any,
    start: datetime,
    end: datetime,
    path: Path,
    sample_rows: int = SAMPLE_ROWS,
    seed: int = 0,
    log_uri: str | None = None,
) -> WindowFiles:
    """Write the stratified sample of the window's served rows (with labels) to `path`; list its files beside it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops._io import atomic_path

    roots = parquet_roots(use_case.name, log_uri)
    if roots is None:
        return _sample_sql(use_case, start, end, path, sample_rows, log_uri or get_settings().prediction_log_uri)
    log_root, labels_root = roots
    days = {d.name[5:]: _parquet_files(d) for d in day_folders(log_root, start, end)}
    days = {day: files for day, files in days.items() if files}
    rows_by_day = {day: count_rows(files) for day, files in days.items()}
    total = sum(rows_by_day.values())
    label_days = [*day_folders(labels_root, start, end)]
    labelled = count_rows([f for d in label_days for f in _parquet_files(d)])
    keys = list(use_case.feature_store.entity_keys) if use_case.feature_store is not None else []
    rng = np.random.default_rng(seed)
    tables = []
    for day, files in days.items():
        names = pq.read_schema(files[0]).names
        columns = _needed_columns(names, use_case.features.all, keys)
        quota = math.ceil(sample_rows * rows_by_day[day] / total) if total else 0
        table = _sample_day(files, quota, columns, rng, start, end)
        if table is not None and len(table):
            tables.append(table)
    frame = pa.concat_tables(tables, promote_options="default").to_pandas() if tables else None
    import pandas as pd

    sample = _served(frame) if frame is not None else pd.DataFrame({"request_id": pd.Series(dtype=object)})
    sample = _join_sample_labels(sample, label_days)
    with atomic_path(path) as tmp:
        sample.to_parquet(tmp, index=False)
    listing = WindowFiles(
        {day: [str(f) for f in files] for day, files in days.items()},
        total,
        labelled,
        len(sample),
        int(sample["label"].notna().sum()) if "label" in sample else 0,
    )
    with atomic_path(files_path(path)) as tmp:
        tmp.write_text(json.dumps(listing.to_dict()))
    return listing


def files_path(window_path: str | Path) -> Path:
    """`window-files.json` beside the window's sample."""
    return Path(window_path).with_name("window-files.json")


# --------------------------------------------------------------------------- an SQL log: the database counts and draws


def _window_where(table: Any, start: datetime, end: datetime) -> Any:
    import sqlalchemy as sa

    return sa.and_(table.c.event_time >= start, table.c.event_time < end)


def _count_sql(use_case: str, start: datetime, end: datetime, url: str) -> int:
    import sqlalchemy as sa

    from mlops.predictionlog.stores import SqlStore

    store = SqlStore(url, "predictions")
    with store.engine.connect() as conn:
        if not sa.inspect(conn).has_table(store.table_name(use_case)):
            return 0
        table = sa.Table(store.table_name(use_case), sa.MetaData(), autoload_with=conn)
        query = sa.select(sa.func.count()).select_from(table).where(_window_where(table, start, end))
        return int(conn.execute(query).scalar_one())


def _sample_sql(use_case: Any, start: datetime, end: datetime, path: Path, sample_rows: int, url: str) -> WindowFiles:
    """The SQL log's sample, drawn by the database, with its labels; the labelled rows counted by a join there."""
    import pandas as pd
    import sqlalchemy as sa

    from mlops._io import atomic_path
    from mlops.predictionlog.stores import SqlStore

    log, labels_store = SqlStore(url, "predictions"), SqlStore(url, "labels")
    keys = list(use_case.feature_store.entity_keys) if use_case.feature_store is not None else []
    with log.engine.connect() as conn:
        table = sa.Table(log.table_name(use_case.name), sa.MetaData(), autoload_with=conn)
        where = _window_where(table, start, end)
        total = int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())
        columns = _needed_columns([c.name for c in table.columns], use_case.features.all, keys)
        query = sa.select(*[table.c[c] for c in columns]).where(where).order_by(sa.func.random()).limit(sample_rows)
        sample = _served(pd.read_sql(query, conn))
        labelled, labels = 0, pd.DataFrame()
        if sa.inspect(conn).has_table(labels_store.table_name(use_case.name)):
            lab = sa.Table(labels_store.table_name(use_case.name), sa.MetaData(), autoload_with=conn)
            served = where if "role" not in table.c else sa.and_(
                where, sa.or_(table.c.role.is_(None), table.c.role != ROLE_SHADOW)
            )  # fmt: skip
            joined = table.join(lab, lab.c.request_id == table.c.request_id)
            labelled = int(conn.execute(sa.select(sa.func.count()).select_from(joined).where(served)).scalar_one())
            ids = sample["request_id"].astype(str).unique().tolist()
            parts = [
                pd.read_sql(
                    sa.select(lab.c.request_id, lab.c.label, lab.c.arrived_at).where(lab.c.request_id.in_(chunk)), conn
                )
                for chunk in (ids[i : i + 5000] for i in range(0, len(ids), 5000))
            ]
            labels = pd.concat(parts, ignore_index=True) if parts else labels
    for column in ("event_time", "logged_at"):
        if column in sample:
            sample[column] = pd.to_datetime(sample[column], format="mixed")
    sample = _attach_labels(sample, labels)
    with atomic_path(path) as tmp:
        sample.to_parquet(tmp, index=False)
    listing = WindowFiles(
        {}, total, labelled, len(sample), int(sample["label"].notna().sum()), url, start.isoformat(), end.isoformat()
    )
    with atomic_path(files_path(path)) as tmp:
        tmp.write_text(json.dumps(listing.to_dict()))
    return listing
