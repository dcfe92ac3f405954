"""A window too large to read whole: its log files, row counts from metadata, and a stratified sample.

Above `monitoring.exact_below_rows` rows, `window.collect_window` no longer copies the
window: it lists the window's log files (`window-files.json`) and writes a sample of
the served rows with their labels as `window.parquet`. The decision's numbers then
come from the files' summaries (`mlops.monitoring.summaries`: drift, null shares, row
counts, merged per file, so their cost grows with the number of files, not of rows)
and the sample carries what still needs rows: the Evidently HTML reports, the Great
Expectations validation, the skew check, the label lag and the performance metrics.

The sample is stratified by day partition: each day gets a quota proportional to its
rows (from the Parquet footers, no read). Within a day, row groups are drawn at random
until they hold four times the quota (at least 8 groups when the day has them), then
the quota's rows are drawn uniformly from them. Only the columns monitoring uses are
decoded, with pyarrow (already a dependency), never the whole window into pandas. The
labels are joined for the sampled request ids only, with the id filter pushed into the
label files' scan. The labelled-row count is the label files' row count from their
footers: labels are upserted by request id into their prediction's day folder, so a
day's label files hold each id once (the unmatched labels, whose prediction was not
logged when they came, are not counted).

Only the Parquet log has this path; an SQL log keeps the exact path (its window is read
through the database).
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

    @property
    def files(self) -> list[Path]:
        return [Path(f) for day in sorted(self.days) for f in self.days[day]]

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


def window_rows(use_case: str, start: datetime, end: datetime, log_uri: str | None = None) -> int | None:
    """Rows of the window's day folders (a bound: boundary days may hold rows outside it); None for an SQL log."""
    roots = parquet_roots(use_case, log_uri)
    if roots is None:
        return None
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
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    groups = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        groups += [(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    if not groups or quota <= 0:
        return None
    order = rng.permutation(len(groups))
    chosen, held = [], 0
    for index in order:
        chosen.append(groups[index])
        held += groups[index][2]
        if held >= OVERSAMPLE * quota and len(chosen) >= min(MIN_GROUPS_PER_DAY, len(groups)):
            break
    tables = []
    for path, group, _ in sorted(chosen, key=lambda g: (str(g[0]), g[1])):
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
    if len(table) > quota:
        table = table.take(pa.array(sorted(rng.choice(len(table), size=quota, replace=False))))
    return table


def _served(frame: pd.DataFrame) -> pd.DataFrame:
    if "role" not in frame.columns:
        return frame
    frame["role"] = frame["role"].fillna(ROLE_CHAMPION)
    return frame[frame["role"].astype(str) != ROLE_SHADOW].reset_index(drop=True)


def _join_sample_labels(sample: pd.DataFrame, label_days: Sequence[Path]) -> pd.DataFrame:
    """`label` and `label_arrived_at` of the sampled rows, the id filter pushed into the label files' scan."""
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    sample["label"] = np.nan
    sample["label_arrived_at"] = pd.Series(pd.NaT, index=sample.index, dtype="datetime64[ns]")
    files = [str(f) for d in label_days for f in _parquet_files(d)]
    if not files or sample.empty:
        return sample
    ids = sample["request_id"].astype(str)
    dataset = ds.dataset(files, format="parquet")
    wanted = [c for c in ("request_id", "label", "arrived_at") if c in dataset.schema.names]
    labels = dataset.to_table(columns=wanted, filter=pc.field("request_id").isin(ids.unique().tolist())).to_pandas()
    if labels.empty:
        return sample
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
        raise ValueError("the sample path needs the Parquet prediction log; an SQL log is read through the database")
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
