"""Per-partition summaries of the prediction log, merged into drift scores without reading the window's rows.

A log file, once renamed into place, never changes (`stores.ParquetStore`). A day folder's
summary is computed once for a given reference (the *bins* come from the reference) and
cached beside its files as `<date folder>/_summaries/day.<bins key>.json`, with the names of
the files it covers; a later run adds only the files that landed since. So a window of 1.2
billion rows costs a merge of 14 day summaries, not a read of its rows, and the service's
file a second costs one summary per day, not one per file. Days are summarised as their rows
land (`mlops.monitoring.landing`, from the scoring and log-summary DAGs); a folder without a
summary for the run's bins (an old log, or a new champion's reference) is summarised the first
time a window includes it.
An SQL log's summary is computed by the database (`SqlWindow`).

A summary holds, for the rows answered to clients (a shadow's rows left out):

- numerics: counts and sums over fixed bins between the reference's min and max (plus one
  bin below and one above, with their extreme values), nulls and infinite values, and,
  for a column whose reference has at most 5 values, the exact value counts;
- categoricals: exact value counts and nulls;
- the row count per model version and role, and the labelled rows.

Drift from a merged summary. Jensen-Shannon (categoricals, few-valued numerics) is
exact. The normed Wasserstein distance places each bin's rows at the bin's mean; by the
triangle inequality the score then differs from the exact one by at most
`sum(share of bin * bin width / 2) / norm` (`error_bound`, reported per column). A column
whose score is within that bound of the threshold is ambiguous: the caller recomputes it
exactly from the column's rows (`window_drift` does), so decisions always agree with the
exact path. Summaries need a reference of more than 1000 rows (Evidently's switch to
Wasserstein and Jensen-Shannon); with a smaller one use the exact path.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops._io import atomic_path
from mlops.monitoring import drift
from mlops.monitoring.drift import ColumnDrift, DriftResult, SkippedColumn

if TYPE_CHECKING:
    import pandas as pd

BINS = 4096
SUMMARY_FOLDER = "_summaries"
SUMMARY_VERSION = 1


@dataclass(frozen=True)
class Bins:
    """The reference's bins: per numeric column (lo, hi) split in BINS equal bins; the few-valued ones; categoricals."""

    numeric: dict[str, tuple[float, float]]
    few_valued: tuple[str, ...]
    categorical: tuple[str, ...]
    bins: int = BINS

    @property
    def key(self) -> str:
        text = json.dumps([SUMMARY_VERSION, self.bins, sorted(self.numeric.items()), self.few_valued, self.categorical])
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def reference_bins(reference: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> Bins:
    """Bins over each numeric column's reference range; columns of at most 5 reference values are kept exactly."""
    ranges: dict[str, tuple[float, float]] = {}
    few: list[str] = []
    for name in numeric:
        values = drift.usable_values(reference[name]).to_numpy(dtype="float64")
        if values.size == 0:
            continue
        ranges[name] = (float(values.min()), float(values.max()))
        if np.unique(values).size <= drift.FEW_NUMERIC_VALUES:
            few.append(name)
    return Bins(ranges, tuple(few), tuple(c for c in categorical if c in reference.columns))


def _key(value: Any) -> str:
    """One spelling per value: 1 and 1.0 are one class, as they are one key of the exact path's counts."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


def _value_counts(values: Any) -> dict[str, int]:
    counts = values.value_counts(dropna=True, sort=False)
    counts = counts[counts > 0]
    merged: dict[str, int] = {}
    for k, v in counts.items():
        merged[_key(k)] = merged.get(_key(k), 0) + int(v)
    return merged


def summarize_frame(frame: pd.DataFrame, bins: Bins) -> dict[str, Any]:
    """The summary of one partition's rows (a JSON-able dict); `merge` adds summaries up."""
    from mlops.monitoring.performance import LABEL, MODEL_VERSION, ROLE, served_rows

    groups: dict[str, int] = {}
    if ROLE in frame.columns or MODEL_VERSION in frame.columns:
        keys = [frame[c].astype("string").fillna("") if c in frame.columns else "" for c in (MODEL_VERSION, ROLE)]
        for (version, role), n in frame.groupby(keys, sort=True).size().items():  # type: ignore[misc]
            groups[f"{version}|{role}"] = int(n)
    served = served_rows(frame)
    out: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "bins_key": bins.key,
        "rows": len(served),
        "labelled": int(served[LABEL].notna().sum()) if LABEL in served.columns else 0,
        "by_version_role": groups,
        "numeric": {},
        "categorical": {},
    }
    for name, (lo, hi) in bins.numeric.items():
        if name not in served.columns:
            continue
        x = served[name].to_numpy(dtype="float64", na_value=np.nan)
        finite = np.isfinite(x)
        v = x[finite]
        width = (hi - lo) / bins.bins
        index = (
            np.clip(np.floor((v - lo) / width) + 1, 1, bins.bins).astype(np.int64)
            if width > 0
            else np.ones(v.size, dtype=np.int64)
        )
        index[v < lo] = 0
        index[v > hi] = bins.bins + 1
        column: dict[str, Any] = {
            "nulls": int(np.isnan(x).sum()),
            "infinite": int((~finite).sum() - np.isnan(x).sum()),
            "counts": np.bincount(index, minlength=bins.bins + 2).tolist(),
            "sums": np.bincount(index, weights=v, minlength=bins.bins + 2).tolist(),
            "below_min": float(v[v < lo].min()) if (v < lo).any() else None,
            "above_max": float(v[v > hi].max()) if (v > hi).any() else None,
        }
        if name in bins.few_valued:
            import pandas as pd

            column["values"] = _value_counts(pd.Series(v))
        out["numeric"][name] = column
    for name in bins.categorical:
        if name in served.columns:
            values = served[name]
            out["categorical"][name] = {"nulls": int(values.isna().sum()), "values": _value_counts(values)}
    return out


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    merged = dict(a)
    for k, v in b.items():
        merged[k] = merged.get(k, 0) + v
    return merged


def merge(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum of partition summaries (of one `Bins`): counts add, extremes take the extreme."""
    total: dict[str, Any] | None = None
    for s in summaries:
        if total is None:
            total = copy.deepcopy(s)
            continue
        if s["bins_key"] != total["bins_key"]:
            raise ValueError("summaries of different reference bins cannot be merged; summarise with one Bins")
        total["rows"] += s["rows"]
        total["labelled"] += s["labelled"]
        total["by_version_role"] = _add_counts(total["by_version_role"], s["by_version_role"])
        for name, col in s["numeric"].items():
            if name not in total["numeric"]:
                total["numeric"][name] = copy.deepcopy(col)
                continue
            t = total["numeric"][name]
            t["nulls"] += col["nulls"]
            t["infinite"] += col["infinite"]
            # Added up as arrays, turned back into lists once at the end (a 14-day window holds ~1,400 files).
            t["counts"] = np.asarray(t["counts"], dtype=np.int64) + np.asarray(col["counts"], dtype=np.int64)
            t["sums"] = np.asarray(t["sums"], dtype="float64") + np.asarray(col["sums"], dtype="float64")
            for key, pick in (("below_min", min), ("above_max", max)):
                both = [v for v in (t[key], col[key]) if v is not None]
                t[key] = pick(both) if both else None
            if "values" in col:
                t["values"] = _add_counts(t.get("values", {}), col["values"])
        for name, col in s["categorical"].items():
            t = total["categorical"].setdefault(name, {"nulls": 0, "values": {}})
            t["nulls"] += col["nulls"]
            t["values"] = _add_counts(t["values"], col["values"])
    if total is None:
        raise ValueError("no summaries to merge: the window has no log files")
    for column in total["numeric"].values():
        column["counts"], column["sums"] = np.asarray(column["counts"]).tolist(), np.asarray(column["sums"]).tolist()
    return total


@dataclass(frozen=True)
class SummaryDrift:
    """Drift from a merged summary: the result, each Wasserstein score's error bound, the columns left ambiguous."""

    result: DriftResult
    error_bounds: dict[str, float] = field(default_factory=dict)
    ambiguous: list[str] = field(default_factory=list)


def _js(ref: pd.Series, counts: dict[str, int], column: str) -> ColumnDrift:
    import pandas as pd
    from scipy.spatial import distance

    ref_counts = pd.Series(_value_counts(ref), dtype="float64")
    cur_counts = pd.Series(counts, dtype="float64")
    keys = ref_counts.index.union(cur_counts.index)
    p = ref_counts.reindex(keys, fill_value=0).to_numpy()
    q = cur_counts.reindex(keys, fill_value=0).to_numpy()
    score = float(distance.jensenshannon(p / p.sum(), q / q.sum()))
    return drift._result(column, "categorical", "jensenshannon", score)


def summary_drift(
    reference: pd.DataFrame,
    merged: dict[str, Any],
    bins: Bins,
    numeric: Sequence[str],
    categorical: Sequence[str],
    drift_share_threshold: float = 0.5,
) -> SummaryDrift:
    """Evidently's default tests for a large reference from a merged summary (see the module docstring)."""
    results: list[ColumnDrift] = []
    skipped: list[SkippedColumn] = []
    bounds: dict[str, float] = {}
    ambiguous: list[str] = []
    for name in numeric:
        col = merged["numeric"].get(name)
        if col is None or name not in bins.numeric:
            skipped.append(SkippedColumn(name, "absent from the window or the reference"))
            continue
        counts = np.asarray(col["counts"], dtype="float64")
        if counts.sum() == 0:
            skipped.append(SkippedColumn(name, "all values missing in the window"))
            continue
        ref = drift.usable_values(reference[name])
        if name in bins.few_valued and "values" in col:
            known = {json.loads(k) for k in _value_counts(ref)}
            union = known | {json.loads(k) for k in col["values"]}
            if len(union) <= drift.FEW_NUMERIC_VALUES:
                results.append(_js(ref.astype("float64"), col["values"], name))
                continue
        sums = np.asarray(col["sums"], dtype="float64")
        lo, hi = bins.numeric[name]
        width = (hi - lo) / bins.bins
        used = counts > 0
        points = sums[used] / counts[used]
        widths = np.full(counts.size, width)
        widths[0] = (lo - col["below_min"]) if col["below_min"] is not None else 0.0
        widths[-1] = (col["above_max"] - hi) if col["above_max"] is not None else 0.0
        order = np.argsort(points, kind="stable")
        ref_values, ref_counts = drift._sorted_unique(ref)
        norm = max(float(np.std(ref.to_numpy(dtype="float64"))), drift.MIN_NORM)
        score = drift._wasserstein(ref_values, ref_counts, points[order], counts[used][order]) / norm
        bound = float(np.sum(counts * widths / 2) / counts.sum() / norm)
        result = drift._result(name, "numeric", "wasserstein", score)
        bounds[name] = bound
        if abs(score - result.threshold) <= bound:
            ambiguous.append(name)
        results.append(result)
    for name in categorical:
        col = merged["categorical"].get(name)
        if col is None or not col["values"]:
            skipped.append(SkippedColumn(name, "absent from the window or all values missing"))
            continue
        results.append(_js(drift.usable_values(reference[name]), col["values"], name))
    return SummaryDrift(DriftResult(results, skipped, drift_share_threshold), bounds, ambiguous)


# --------------------------------------------------------------------------- cached beside the log files


def summary_path(folder: Path, bins: Bins) -> Path:
    """`<date folder>/_summaries/day.<bins key>.json`: never matched by the log's `*.parquet` glob."""
    return folder / SUMMARY_FOLDER / f"day.{bins.key}.json"


# Parquet bytes read per summarising job: one 1M-row file, or ~1,000 of the service's one-second files.
CHUNK_BYTES = 64 * 2**20


def summarize_files(files: Sequence[Path], bins: Bins) -> dict[str, Any]:
    """The summary of some log files, read as one Arrow dataset of the columns the summary needs."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    dataset = ds.dataset([str(f) for f in files], format="parquet")
    wanted = [*bins.numeric, *bins.categorical, "label", "role", "model_version"]
    table = dataset.to_table(columns=[c for c in dict.fromkeys(wanted) if c in dataset.schema.names])
    # Category strings as dictionaries (pandas Categorical): counted per code, not per Python string.
    # Not role and version: served_rows fills their nulls with a value a Categorical may not hold.
    for name in bins.categorical:
        if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
            index = table.column_names.index(name)
            table = table.set_column(index, name, table.column(name).dictionary_encode())
    return summarize_frame(table.to_pandas(), bins)


def _chunks(files: Sequence[Path]) -> list[list[Path]]:
    chunks: list[list[Path]] = [[]]
    held = 0
    for path in files:
        size = path.stat().st_size
        if chunks[-1] and held + size > CHUNK_BYTES:
            chunks.append([])
            held = 0
        chunks[-1].append(path)
        held += size
    return [c for c in chunks if c]


@dataclass(frozen=True)
class DayUpdate:
    """What bringing one day folder's summary up to date did."""

    folder: Path
    files: int
    """Log files the summary covers now."""
    summarised: int
    """Files read this time: 0 when the summary already covered every file (nothing written)."""
    afresh: bool
    """True when the folder was summarised from scratch (no summary for these bins, or a file gone)."""


def update_day_summaries(
    files: Sequence[Path], bins: Bins, origin: dict[str, Any] | None = None
) -> tuple[dict[Path, dict[str, Any]], list[DayUpdate]]:
    """Each day folder's summary of `files` for `bins`, cached beside them and extended as files land.

    A day folder's summary records the files it covers. A later call summarises only the files
    added since and merges them in (the service adds a file a second to today's folder); a file
    gone (a batch partition replaced) makes the folder summarised afresh; a folder already
    covered is read, not written. `origin` says who built a new summary and against which
    reference (`{"by": "landing", "model_version": "3", ...}`), recorded as `built_against` so
    a reader can tell; an extended summary keeps its first origin. The jobs run on a thread per
    core: the Parquet decoding and the counting run in Arrow and NumPy, which release the GIL.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    folders: dict[Path, list[Path]] = {}
    for path in files:
        folders.setdefault(path.parent, []).append(path)
    done: dict[Path, dict[str, Any]] = {}
    todo: dict[Path, list[dict[str, Any]]] = {}
    origins: dict[Path, Any] = {}
    jobs: list[tuple[Path, list[Path]]] = []
    updates: list[DayUpdate] = []
    for folder, held in folders.items():
        path = summary_path(folder, bins)
        cached = json.loads(path.read_text()) if path.exists() else None
        names = {f.name for f in held}
        covered = set(cached["files"]) if cached else set()
        if cached and covered == names:
            done[folder] = cached["summary"]
            updates.append(DayUpdate(folder, len(names), 0, False))
            continue
        extend = bool(cached) and covered <= names
        todo[folder] = [cached["summary"]] if cached and extend else []
        origins[folder] = cached.get("built_against") if cached and extend else origin
        new = [f for f in held if f.name not in covered or not extend]
        updates.append(DayUpdate(folder, len(names), len(new), not extend))
        jobs += [(folder, chunk) for chunk in _chunks(new)]
    if jobs:
        with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
            for (folder, _), part in zip(jobs, pool.map(lambda job: summarize_files(job[1], bins), jobs), strict=True):
                todo[folder].append(part)
    for folder, parts in todo.items():
        done[folder] = merge(parts)
        record = {
            "files": sorted(f.name for f in folders[folder]),
            "built_against": origins[folder],
            "bins": {"numeric": bins.numeric, "few_valued": bins.few_valued, "categorical": bins.categorical},
            "summary": done[folder],
        }
        target = summary_path(folder, bins)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(record))
    return done, updates


def window_summary(files: Sequence[Path], bins: Bins, origin: dict[str, Any] | None = None) -> dict[str, Any]:
    """The merged summary of a window's log files: each day folder's (`update_day_summaries`), added up.

    A day summarised as its files landed (`mlops.monitoring.landing`) for the same bins is
    read, and extended with the files that landed since; for other bins (a new champion's
    reference) the day is summarised afresh.
    """
    done, _ = update_day_summaries(files, bins, origin)
    return merge(done.values())


def window_drift(
    reference: pd.DataFrame,
    files: Sequence[Path],
    numeric: Sequence[str],
    categorical: Sequence[str],
    drift_share_threshold: float = 0.5,
    read_column: Callable[[Sequence[Path], str], pd.Series] | None = None,
) -> SummaryDrift:
    """Drift of the window made of `files` from their summaries; ambiguous columns recomputed exactly from rows."""
    bins = reference_bins(reference, numeric, categorical)
    read = read_column or _served_column
    return drift_from_summary(
        reference, window_summary(files, bins), bins, numeric, categorical, drift_share_threshold,
        lambda name: read(files, name),
    )  # fmt: skip


def drift_from_summary(
    reference: pd.DataFrame,
    merged: dict[str, Any],
    bins: Bins,
    numeric: Sequence[str],
    categorical: Sequence[str],
    drift_share_threshold: float,
    read_column: Callable[[str], pd.Series],
) -> SummaryDrift:
    """Drift from a merged summary; a column within its error bound of the threshold recomputed from its rows."""
    outcome = summary_drift(reference, merged, bins, numeric, categorical, drift_share_threshold)
    if not outcome.ambiguous:
        return outcome
    columns = [
        drift.column_drift(reference[c.column], read_column(c.column), "numeric", c.column)
        if c.column in outcome.ambiguous
        else c
        for c in outcome.result.columns
    ]
    result = DriftResult(columns, outcome.result.skipped, drift_share_threshold)
    return SummaryDrift(result, outcome.error_bounds, outcome.ambiguous)


def _served_column(files: Sequence[Path], name: str) -> pd.Series:
    """One column of the window's served rows, read column-wise with the role filter pushed into the scan."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from mlops.naming import ROLE_SHADOW

    dataset = ds.dataset([str(f) for f in files], format="parquet")
    keep = None
    if "role" in dataset.schema.names:
        keep = (pc.field("role") != ROLE_SHADOW) | pc.field("role").is_null()
    import pyarrow as pa

    column = dataset.to_table(columns=[name], filter=keep).column(name)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = column.dictionary_encode()  # a few bytes a row, not a Python string each
    return column.to_pandas().rename(name)


class ServedColumns:
    """A window of Parquet log files: its merged summary, and its served rows one column at a time
    (a `drift.ColumnSource`, for the exact column-wise path). `SqlWindow` is the same for an SQL log."""

    def __init__(self, files: Sequence[Path]) -> None:
        import pyarrow.dataset as ds

        self._files = list(files)
        self._names = list(ds.dataset([str(f) for f in self._files], format="parquet").schema.names)

    @property
    def columns(self) -> list[str]:
        return self._names

    def column(self, name: str) -> pd.Series:
        return _served_column(self._files, name)

    def __getitem__(self, name: str) -> pd.Series:
        return self.column(name)

    def summary(self, bins: Bins, origin: dict[str, Any] | None = None) -> dict[str, Any]:
        return window_summary(self._files, bins, origin)


# --------------------------------------------------------------------------- an SQL log: the database aggregates

# Finite doubles only: PostgreSQL orders NaN above every number and stores infinities.
_FINITE = 1e308


class SqlWindow:
    """A window of an SQL prediction log: its summary computed by GROUP BY queries, a column read on demand.

    The same summary `summarize_frame` computes from rows (served rows only: a shadow's left
    out), so `summary_drift` reads it alike; the rows never leave the database except for a
    column recomputed exactly (`column`).
    """

    def __init__(self, url: str, use_case: str, start: datetime, end: datetime) -> None:
        self.url, self.use_case, self.start, self.end = url, use_case, start, end

    def _table(self, conn: Any) -> Any:
        import sqlalchemy as sa

        from mlops.predictionlog.stores import SqlStore

        return sa.Table(SqlStore(self.url, "predictions").table_name(self.use_case), sa.MetaData(), autoload_with=conn)

    def _where(self, table: Any) -> Any:
        import sqlalchemy as sa

        from mlops.naming import ROLE_SHADOW

        clauses = [table.c.event_time >= self.start, table.c.event_time < self.end]
        if "role" in table.c:
            clauses.append(sa.or_(table.c.role.is_(None), table.c.role != ROLE_SHADOW))
        return sa.and_(*clauses)

    @property
    def engine(self) -> Any:
        from mlops.predictionlog.stores import SqlStore

        return SqlStore(self.url, "predictions").engine

    @property
    def columns(self) -> list[str]:
        with self.engine.connect() as conn:
            return [c.name for c in self._table(conn).columns]

    def column(self, name: str) -> pd.Series:
        import pandas as pd
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            table = self._table(conn)
            values = [row[0] for row in conn.execute(sa.select(table.c[name]).where(self._where(table)))]
        return pd.Series(values, name=name)

    def __getitem__(self, name: str) -> pd.Series:
        return self.column(name)

    def summary(self, bins: Bins, origin: dict[str, Any] | None = None) -> dict[str, Any]:
        """The window's summary for `bins`, each count and sum computed by the database (`origin` unused: nothing is
        cached)."""
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            table = self._table(conn)
            where = self._where(table)
            rows = int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())
            groups: dict[str, int] = {}
            keys = [sa.func.coalesce(sa.cast(table.c[c], sa.Text), "") if c in table.c else sa.literal("")
                    for c in ("model_version", "role")]  # fmt: skip
            for version, role, n in conn.execute(sa.select(*keys, sa.func.count()).where(where).group_by(*keys)):
                groups[f"{version}|{role}"] = int(n)
            out: dict[str, Any] = {
                "version": SUMMARY_VERSION, "bins_key": bins.key, "rows": rows, "labelled": 0,
                "by_version_role": groups, "numeric": {}, "categorical": {},
            }  # fmt: skip
            for name, (lo, hi) in bins.numeric.items():
                if name in table.c:
                    out["numeric"][name] = self._numeric(conn, table, where, name, lo, hi, bins, rows)
            for name in bins.categorical:
                if name in table.c:
                    x = table.c[name]
                    counts = conn.execute(sa.select(x, sa.func.count()).where(where, x.is_not(None)).group_by(x))
                    values = {_key(v): int(n) for v, n in counts}
                    out["categorical"][name] = {"nulls": rows - sum(values.values()), "values": values}
        return out

    def _numeric(
        self, conn: Any, table: Any, where: Any, name: str, lo: float, hi: float, bins: Bins, rows: int
    ) -> dict[str, Any]:
        import sqlalchemy as sa

        x = sa.cast(table.c[name], sa.Float)
        finite = sa.and_(x > -_FINITE, x < _FINITE)
        width = (hi - lo) / bins.bins
        # floor((x - lo) / width) + 1 clipped to [1, bins], as summarize_frame; x = hi is the top bin.
        # SQLite may lack floor(), but x >= lo here, so its integer cast (which truncates) is floor;
        # PostgreSQL's cast rounds, so it gets floor().
        scaled = (x - lo) / width
        floor = sa.cast(scaled, sa.Integer) if conn.dialect.name == "sqlite" else sa.func.floor(scaled)
        inside = floor + 1 if width > 0 else sa.literal(1)
        bucket = sa.case((x < lo, 0), (x > hi, bins.bins + 1), (x >= hi, bins.bins), else_=inside)
        counts = np.zeros(bins.bins + 2, dtype=np.int64)
        sums = np.zeros(bins.bins + 2)
        query = sa.select(bucket, sa.func.count(), sa.func.sum(x)).where(where, finite).group_by(bucket)
        for index, n, total in conn.execute(query):
            index = min(max(int(index), 0), bins.bins + 1)
            counts[index] += int(n)
            sums[index] += float(total)
        present = int(conn.execute(sa.select(sa.func.count(table.c[name])).where(where)).scalar_one())
        below = conn.execute(sa.select(sa.func.min(x)).where(where, finite, x < lo)).scalar_one()
        above = conn.execute(sa.select(sa.func.max(x)).where(where, finite, x > hi)).scalar_one()
        column: dict[str, Any] = {
            "nulls": rows - present,
            "infinite": present - int(counts.sum()),
            "counts": counts.tolist(),
            "sums": sums.tolist(),
            "below_min": float(below) if below is not None else None,
            "above_max": float(above) if above is not None else None,
        }
        if name in bins.few_valued:
            few = conn.execute(sa.select(x, sa.func.count()).where(where, finite).group_by(x))
            column["values"] = {_key(float(v)): int(n) for v, n in few}
        return column
