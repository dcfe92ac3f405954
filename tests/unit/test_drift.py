"""mlops.drift must reach Evidently's drift decisions on the same data.

One module-scoped fixture runs Evidently once per scenario (its import and runs
are the slow part); every test compares against those results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.monitoring import drift
from mlops.monitoring.drift import ParquetColumns, check_drift, column_drift

NUMERIC = [f"n{i}" for i in range(7)]
CATEGORICAL = [f"c{i}" for i in range(4)]
SCENARIOS = ["none", "one_column", "several_columns", "new_category"]


def make_frame(rows: int, seed: int, scenario: str = "none") -> pd.DataFrame:
    """11 columns like the benchmark: 6 continuous, 1 numeric with 4 values, 4 categorical (one with nulls)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"n{i}": rng.normal(10 * i, 1 + i, rows) for i in range(6)})
    frame["n6"] = rng.choice([0, 1, 2, 3], rows, p=[0.4, 0.3, 0.2, 0.1])
    frame["c0"] = rng.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2])
    frame["c1"] = rng.choice(["x", "y", "z", "w"], rows)
    frame["c2"] = rng.choice(["yes", "no"], rows, p=[0.7, 0.3])
    frame["c3"] = rng.choice(["p", "q", None], rows, p=[0.45, 0.45, 0.1])
    if scenario in ("one_column", "several_columns"):
        frame["n0"] += 0.5  # half a standard deviation: Wasserstein (normed) ~0.5 > 0.1
    if scenario == "several_columns":
        for i in range(1, 5):
            frame[f"n{i}"] += 0.5 * (1 + i)
        frame["c0"] = rng.choice(["a", "b", "c"], rows, p=[0.2, 0.3, 0.5])
    if scenario == "new_category":
        frame.loc[frame.sample(frac=0.3, random_state=seed).index, "c1"] = "brand_new"
    return frame


@pytest.fixture(scope="module")
def evidently_results() -> dict[tuple[int, str], Any]:
    from mlops.monitoring.reports import evidently_drift

    results = {}
    for rows in (5000, 600):  # 5000: Wasserstein / Jensen-Shannon; 600 (<= 1000): K-S / chi-square / Z
        reference = make_frame(rows, seed=1)
        for scenario in SCENARIOS:
            current = make_frame(rows, seed=2, scenario=scenario)
            result = evidently_drift(reference, current, NUMERIC, CATEGORICAL, 0.5).drift
            results[(rows, scenario)] = (reference, current, result)
    return results


@pytest.mark.parametrize("rows", [5000, 600])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_decisions_match_evidently(evidently_results: dict[tuple[int, str], Any], rows: int, scenario: str) -> None:
    reference, current, expected = evidently_results[(rows, scenario)]
    fast = check_drift(reference, current, NUMERIC, CATEGORICAL, 0.5)
    assert {c.column: c.drifted for c in fast.columns} == {c.column: c.drifted for c in expected.columns}
    assert {c.column: c.stattest for c in fast.columns} == {c.column: c.stattest for c in expected.columns}
    for ours, theirs in zip(fast.columns, expected.columns, strict=True):
        assert ours.score == pytest.approx(theirs.score, rel=1e-6, abs=1e-9), ours.column
    assert fast.share_of_drifted_columns == pytest.approx(expected.share_of_drifted_columns)
    assert fast.dataset_drift == expected.dataset_drift


def test_scenarios_drift_where_they_should(evidently_results: dict[tuple[int, str], Any]) -> None:
    by_scenario = {s: evidently_results[(5000, s)][2] for s in SCENARIOS}
    assert by_scenario["none"].drifted_columns == []
    assert by_scenario["one_column"].drifted_columns == ["n0"]
    assert by_scenario["several_columns"].dataset_drift
    assert by_scenario["new_category"].drifted_columns == ["c1"]
    assert {c.stattest for c in evidently_results[(5000, "none")][2].columns} == {"wasserstein", "jensenshannon"}
    assert {c.stattest for c in evidently_results[(600, "none")][2].columns} == {"ks", "chisquare", "z"}


def test_robust_to_missing_null_and_unknown_columns() -> None:
    reference = make_frame(2000, seed=1).drop(columns=["c2"])
    current = make_frame(2000, seed=2)
    current["n5"] = np.nan
    current["n4"] = "text"
    result = check_drift(reference, current.drop(columns=["c3"]), NUMERIC, CATEGORICAL)
    reasons = {s.column: s.reason for s in result.skipped}
    assert reasons == {
        "c2": "absent from the reference data",
        "c3": "absent from the window",
        "n5": "all values missing in the window",
        "n4": "declared numeric but the window holds object",
    }
    assert len(result.columns) == 7


def test_empty_and_constant_inputs() -> None:
    with pytest.raises(ValueError, match="no non-missing values in the window"):
        column_drift(pd.Series([1.0, 2.0]), pd.Series([np.nan]), "numeric", "x")
    constant = column_drift(pd.Series(np.ones(3000)), pd.Series(np.ones(10)), "numeric", "x")
    assert not constant.drifted and constant.score == 0.0
    empty = check_drift(make_frame(10, 1), make_frame(10, 1).iloc[0:0], NUMERIC, [])
    assert empty.columns == [] and len(empty.skipped) == len(NUMERIC)
    assert empty.share_of_drifted_columns == 0.0 and not empty.dataset_drift


def test_wasserstein_matches_scipy_with_ties() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(3)
    u, v = rng.integers(0, 50, 4000).astype(float), rng.normal(25, 10, 7000).round(1)
    uv, uc = np.unique(u, return_counts=True)
    vv, vc = np.unique(v, return_counts=True)
    assert drift._wasserstein(uv, uc, vv, vc) == pytest.approx(wasserstein_distance(u, v), rel=1e-9)


def test_parquet_columns_give_the_same_result(tmp_path: Path) -> None:
    reference = make_frame(3000, seed=1)
    current = make_frame(3000, seed=2, scenario="new_category")
    current.iloc[:1500].to_parquet(tmp_path / "part-0.parquet")
    current.iloc[1500:].to_parquet(tmp_path / "part-1.parquet")
    source = ParquetColumns(tmp_path)
    assert len(source) == 3000
    from_parquet = check_drift(reference, source, NUMERIC, CATEGORICAL)
    in_memory = check_drift(reference, current, NUMERIC, CATEGORICAL)
    assert [(c.column, c.drifted) for c in from_parquet.columns] == [(c.column, c.drifted) for c in in_memory.columns]
    for a, b in zip(from_parquet.columns, in_memory.columns, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-9)
