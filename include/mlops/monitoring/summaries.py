"""Per-partition summaries of the prediction log, merged into drift scores without reading the window's rows.

A log file, once renamed into place, never changes (`stores.ParquetStore`). Its summary
is computed once for a given reference (the *bins* come from the reference) and cached
beside it as `<date folder>/_summaries/<file name>.<bins hash>.json`, so a window of
1.2 billion rows costs one merge of its files' summaries, not a read of its rows. A file
without a summary (an old log, or a new champion's reference) is summarised lazily the
first time a window includes it.

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

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
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
            total = json.loads(json.dumps(s))
            continue
        if s["bins_key"] != total["bins_key"]:
            raise ValueError("summaries of different reference bins cannot be merged; summarise with one Bins")
        total["rows"] += s["rows"]
        total["labelled"] += s["labelled"]
        total["by_version_role"] = _add_counts(total["by_version_role"], s["by_version_role"])
        for name, col in s["numeric"].items():
            if name not in total["numeric"]:
                total["numeric"][name] = json.loads(json.dumps(col))
                continue
            t = total["numeric"][name]
            t["nulls"] += col["nulls"]
            t["infinite"] += col["infinite"]
            t["counts"] = (np.asarray(t["counts"]) + np.asarray(col["counts"])).tolist()
            t["sums"] = (np.asarray(t["sums"]) + np.asarray(col["sums"])).tolist()
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


def summary_path(log_file: Path, bins: Bins) -> Path:
    """`<date folder>/_summaries/<file name>.<bins key>.json`: never matched by the log's `*.parquet` glob."""
    return log_file.parent / SUMMARY_FOLDER / f"{log_file.name}.{bins.key}.json"


def file_summary(log_file: Path, bins: Bins, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """The file's cached summary, computed (and cached) when it lacks one for these bins."""
    import pyarrow.parquet as pq

    path = summary_path(log_file, bins)
    if path.exists():
        return dict(json.loads(path.read_text()))
    import pyarrow as pa

    schema = pq.read_schema(log_file)
    wanted = [*bins.numeric, *bins.categorical, "label", "role", "model_version"]
    columns = [c for c in dict.fromkeys(wanted) if c in schema.names]
    # Category strings as dictionaries (pandas Categorical): counted per code, not per Python string.
    # Not role and version: served_rows fills their nulls with a value a Categorical may not hold.
    strings = [c for c in bins.categorical if c in schema.names and pa.types.is_string(schema.field(c).type)]
    frame = pq.read_table(log_file, columns=columns, read_dictionary=strings).to_pandas()
    summary = summarize_frame(frame, bins)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary))
    return summary


def window_summary(files: Sequence[Path], bins: Bins) -> dict[str, Any]:
    """The merged summary of a window's log files (each summarised lazily once and cached)."""
    return merge(file_summary(f, bins) for f in files)


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
    merged = window_summary(files, bins)
    outcome = summary_drift(reference, merged, bins, numeric, categorical, drift_share_threshold)
    if not outcome.ambiguous:
        return outcome
    read = read_column or _served_column
    columns = [
        drift.column_drift(reference[c.column], read(files, c.column), "numeric", c.column)
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
    """The window's served rows read one column at a time (`drift.ColumnSource`), for the exact column-wise path."""

    def __init__(self, files: Sequence[Path]) -> None:
        import pyarrow.dataset as ds

        self._files = list(files)
        self._names = list(ds.dataset([str(f) for f in self._files], format="parquet").schema.names)

    @property
    def columns(self) -> list[str]:
        return self._names

    def __getitem__(self, name: str) -> pd.Series:
        return _served_column(self._files, name)
