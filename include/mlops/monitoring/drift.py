"""Column drift with Evidently 0.7's default tests, computed fast enough for large windows.

Evidently's DataDriftPreset picks a test per column (evidently/legacy/calculations/
stattests/registry.py::_get_default_stattest) from the column type, the reference
size and the number of distinct values:

- reference > 1000 rows: numeric with > 5 distinct values -> normed Wasserstein
  distance (drift when >= 0.1); numeric with <= 5 values and categorical ->
  Jensen-Shannon distance on value shares (drift when >= 0.1);
- reference <= 1000 rows: numeric with > 5 values -> K-S p-value (drift when <= 0.05);
  3-5 values -> chi-square p-value, <= 2 values -> Z-test p-value (drift when < 0.05).

This module computes the same statistics from sorted unique values and counts
(exact, no sampling), so a 10M-row window costs one sort per numeric column and a
hash count per categorical one, instead of Evidently's per-column plots and
correlation tables. It never imports Evidently: its import alone takes ~9 s.
Decisions agree with a full Evidently run on the same data in tests/unit/test_drift.py
and in benchmarks/drift/ at 1M and 10M rows (every score to 1e-15, including scores
0.002 from the threshold; docs/monitoring.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

ColumnKind = Literal["numeric", "categorical"]

# Evidently's switch points and default thresholds (see the module docstring).
SMALL_REFERENCE_ROWS = 1000
FEW_NUMERIC_VALUES = 5
THRESHOLDS = {"wasserstein": 0.1, "jensenshannon": 0.1, "ks": 0.05, "chisquare": 0.05, "z": 0.05}
# Evidently floors the Wasserstein normaliser so a constant reference column does not divide by zero.
MIN_NORM = 0.001


class ColumnSource(Protocol):
    """Anything with `.columns` and `[name] -> Series`: a DataFrame or `ParquetColumns`."""

    @property
    def columns(self) -> Any: ...

    def __getitem__(self, name: str) -> Any: ...


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str
    stattest: str
    """Evidently's name of the test: wasserstein, jensenshannon, ks, chisquare or z."""
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class SkippedColumn:
    column: str
    reason: str


@dataclass(frozen=True)
class DriftResult:
    columns: list[ColumnDrift]
    skipped: list[SkippedColumn] = field(default_factory=list)
    drift_share_threshold: float = 0.5

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def number_of_drifted_columns(self) -> int:
        return len(self.drifted_columns)

    @property
    def share_of_drifted_columns(self) -> float:
        return self.number_of_drifted_columns / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        # Same rule as Evidently's get_dataset_drift: share >= threshold.
        return bool(self.columns) and self.share_of_drifted_columns >= self.drift_share_threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [asdict(c) for c in self.columns],
            "skipped": [asdict(s) for s in self.skipped],
            "drift_share_threshold": self.drift_share_threshold,
            "drifted_columns": self.drifted_columns,
            "number_of_drifted_columns": self.number_of_drifted_columns,
            "share_of_drifted_columns": self.share_of_drifted_columns,
            "dataset_drift": self.dataset_drift,
        }


class ParquetColumns:
    """Read a Parquet file or folder one column at a time, so a caller holding a window as
    Parquet need not load it as a whole frame. String columns come back dictionary-encoded
    (pandas Categorical), which keeps 10M strings at a few bytes a row. The monitoring DAG
    does not use it: `assess_window` reads the window into a DataFrame (docs/monitoring.md)."""

    def __init__(self, source: Path | str | Sequence[Path | str]) -> None:
        import pyarrow.dataset as ds

        paths = [str(p) for p in source] if isinstance(source, list | tuple) else str(source)
        self._dataset = ds.dataset(paths, format="parquet")

    @property
    def columns(self) -> list[str]:
        return list(self._dataset.schema.names)

    def __len__(self) -> int:
        return int(self._dataset.count_rows())

    def __getitem__(self, name: str) -> pd.Series:
        import pyarrow as pa

        column = self._dataset.to_table(columns=[name]).column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = column.dictionary_encode()
        return column.to_pandas().rename(name)


def usable_values(values: pd.Series) -> pd.Series:
    """The values a drift test uses: missing and infinite ones dropped, as Evidently does before every test."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not isinstance(values.dtype, pd.CategoricalDtype):
        array = values.to_numpy(dtype="float64", na_value=np.nan)
        return pd.Series(array[np.isfinite(array)], name=values.name, copy=False)
    return values.dropna()


def _counts(values: pd.Series) -> pd.Series:
    counts = values.value_counts(dropna=True, sort=False)
    # A Categorical reports its unused categories with count 0; they are not values of this sample.
    return counts[counts > 0]


def _aligned_counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    ref_counts, cur_counts = _counts(reference), _counts(current)
    ref_counts.index = ref_counts.index.astype(object)
    cur_counts.index = cur_counts.index.astype(object)
    keys = ref_counts.index.union(cur_counts.index)
    return (
        ref_counts.reindex(keys, fill_value=0).to_numpy(dtype="float64"),
        cur_counts.reindex(keys, fill_value=0).to_numpy(dtype="float64"),
    )


def _sorted_unique(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(values.to_numpy(dtype="float64"), return_counts=True)  # type: ignore[no-any-return]


def _wasserstein(
    ref_values: np.ndarray, ref_counts: np.ndarray, cur_values: np.ndarray, cur_counts: np.ndarray
) -> float:
    """W1 between two empirical distributions given as sorted unique values and counts.

    The same integral of |F_ref - F_cur| as scipy.stats.wasserstein_distance, but over
    unique values, so a window of 10M rows costs one sort instead of an argsort of
    the concatenation.
    """
    grid = np.union1d(ref_values, cur_values)
    if grid.size < 2:
        return 0.0
    points = grid[:-1]
    ref_cdf = np.concatenate(([0.0], np.cumsum(ref_counts, dtype="float64")))
    cur_cdf = np.concatenate(([0.0], np.cumsum(cur_counts, dtype="float64")))
    ref_at = ref_cdf[np.searchsorted(ref_values, points, side="right")] / ref_cdf[-1]
    cur_at = cur_cdf[np.searchsorted(cur_values, points, side="right")] / cur_cdf[-1]
    return float(np.sum(np.abs(ref_at - cur_at) * np.diff(grid)))


def _z_test(reference: pd.Series, current: pd.Series) -> float:
    ref_unique, cur_unique = reference.unique(), current.unique()
    if len(ref_unique) == 1 and len(cur_unique) == 1 and ref_unique[0] == cur_unique[0]:
        return 1.0
    first = sorted(set(ref_unique) | set(cur_unique))[0]
    n1, n2 = len(reference), len(current)
    p1 = float((reference != first).sum()) / n1
    p2 = float((current != first).sum()) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def column_drift(reference: pd.Series, current: pd.Series, kind: ColumnKind, name: str | None = None) -> ColumnDrift:
    """Drift of one column with Evidently's default test for its kind and size.

    Raises ValueError when either side has no usable value (callers skip such
    columns; `check_drift` does so and reports why).
    """
    column = name or str(reference.name)
    ref, cur = usable_values(reference), usable_values(current)
    if ref.empty or cur.empty:
        side = "reference" if ref.empty else "window"
        raise ValueError(f"column {column!r} has no non-missing values in the {side}")
    small_reference = len(ref) <= SMALL_REFERENCE_ROWS

    if kind == "numeric":
        ref_values, ref_counts = _sorted_unique(ref)
        cur_values, cur_counts = _sorted_unique(cur)
        n_values = np.union1d(ref_values, cur_values).size
        if n_values > FEW_NUMERIC_VALUES:
            if small_reference:
                test, score = "ks", float(stats.ks_2samp(ref.to_numpy(), cur.to_numpy())[1])
            else:
                norm = max(float(np.std(ref.to_numpy(dtype="float64"))), MIN_NORM)
                test, score = "wasserstein", _wasserstein(ref_values, ref_counts, cur_values, cur_counts) / norm
            return _result(column, kind, test, score)
        # Few distinct numbers fall through: Evidently compares them like categories.
    if not small_reference:
        ref_counts_, cur_counts_ = _aligned_counts(ref, cur)
        score = float(distance.jensenshannon(ref_counts_ / len(ref), cur_counts_ / len(cur)))
        return _result(column, kind, "jensenshannon", score)
    ref_counts_, cur_counts_ = _aligned_counts(ref, cur)
    if len(ref_counts_) > 2:
        expected = ref_counts_ * (len(cur) / len(ref))
        return _result(column, kind, "chisquare", float(stats.chisquare(cur_counts_, expected)[1]))
    return _result(column, kind, "z", _z_test(ref, cur))


def _result(column: str, kind: str, test: str, score: float) -> ColumnDrift:
    threshold = THRESHOLDS[test]
    if test in ("wasserstein", "jensenshannon"):
        drifted = score >= threshold
    elif test == "ks":
        drifted = score <= threshold
    else:
        drifted = score < threshold
    return ColumnDrift(column=column, kind=kind, stattest=test, score=score, threshold=threshold, drifted=bool(drifted))


def usable_columns(
    reference: pd.DataFrame, current: ColumnSource, numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[dict[str, ColumnKind], list[SkippedColumn]]:
    """Columns both sides can be compared on, and why the others are skipped.

    Evidently raises on a column missing from either side or with no value left
    after dropping nulls; monitoring must report such columns, not crash.
    """
    kinds: dict[str, ColumnKind] = {}
    skipped: list[SkippedColumn] = []
    current_columns = set(current.columns)
    wanted: list[tuple[str, ColumnKind]] = [(c, "numeric") for c in numeric] + [(c, "categorical") for c in categorical]
    for name, kind in wanted:
        if name not in reference.columns:
            skipped.append(SkippedColumn(name, "absent from the reference data"))
        elif name not in current_columns:
            skipped.append(SkippedColumn(name, "absent from the window"))
        elif usable_values(reference[name]).empty:
            skipped.append(SkippedColumn(name, "all values missing in the reference data"))
        elif kind == "numeric" and not pd.api.types.is_numeric_dtype(reference[name].dtype):
            skipped.append(SkippedColumn(name, f"declared numeric but the reference holds {reference[name].dtype}"))
        else:
            kinds[name] = kind
    return kinds, skipped


def check_drift(
    reference: pd.DataFrame,
    current: ColumnSource,
    numeric: Sequence[str],
    categorical: Sequence[str],
    drift_share_threshold: float = 0.5,
) -> DriftResult:
    """Drift per column and the share of drifted columns, like Evidently's DataDriftPreset.

    `current` is a DataFrame or a `ParquetColumns`; columns are loaded one at a time.
    """
    kinds, skipped = usable_columns(reference, current, numeric, categorical)
    results: list[ColumnDrift] = []
    for name, kind in kinds.items():
        values = current[name]
        if kind == "numeric" and not pd.api.types.is_numeric_dtype(values.dtype):
            skipped.append(SkippedColumn(name, f"declared numeric but the window holds {values.dtype}"))
            continue
        if usable_values(values).empty:
            skipped.append(SkippedColumn(name, "all values missing in the window"))
            continue
        results.append(column_drift(reference[name], values, kind, name))
        del values
    return DriftResult(columns=results, skipped=skipped, drift_share_threshold=drift_share_threshold)
