"""Drift from merged per-file summaries against the exact computation (mlops.monitoring.summaries)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.monitoring import drift, summaries

NUMERIC = ["temp", "hum", "hr", "flag"]
CATEGORICAL = ["city"]


def _frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    temp = rng.normal(20 + shift, 5, rows)
    temp[rng.random(rows) < 0.01] = np.nan
    return pd.DataFrame(
        {
            "temp": temp,
            "hum": rng.gamma(2.0, 10.0 + shift, rows),
            "hr": rng.integers(0, 24, rows).astype("float64"),
            "flag": rng.integers(0, 2, rows).astype("float64"),
            "city": rng.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2] if shift == 0 else [0.2, 0.3, 0.5]),
            "role": rng.choice(["champion", "shadow"], rows, p=[0.9, 0.1]),
            "model_version": "3",
            "label": np.where(rng.random(rows) < 0.5, 1.0, np.nan),
        }
    )


def _write_log(root: Path, frames: list[pd.DataFrame]) -> list[Path]:
    files = []
    for i, frame in enumerate(frames):
        folder = root / f"date=2026-01-{i + 1:02d}"
        folder.mkdir(parents=True)
        files.append(folder / "online__1__abc.parquet")
        frame.to_parquet(files[-1], index=False)
    return files


def _exact(reference: pd.DataFrame, frames: list[pd.DataFrame]) -> drift.DriftResult:
    window = pd.concat(frames, ignore_index=True)
    window = window[window["role"] != "shadow"]
    return drift.check_drift(reference, window, NUMERIC, CATEGORICAL)


@pytest.mark.parametrize("shift", [0.0, 0.3, 0.5, 3.0])
def test_merged_summary_scores_equal_exact_within_bound_and_decisions_agree(tmp_path: Path, shift: float) -> None:
    reference = _frame(20_000, 1)
    frames = [_frame(30_000, 10 + i, shift) for i in range(4)]
    files = _write_log(tmp_path, frames)

    outcome = summaries.window_drift(reference, files, NUMERIC, CATEGORICAL)
    exact = {c.column: c for c in _exact(reference, frames).columns}

    for column in outcome.result.columns:
        truth = exact[column.column]
        assert column.stattest == truth.stattest
        assert column.drifted == truth.drifted, column.column
        bound = outcome.error_bounds.get(column.column, 0.0)
        assert abs(column.score - truth.score) <= bound + 1e-12, column.column
    assert outcome.result.dataset_drift == _exact(reference, frames).dataset_drift
    assert outcome.error_bounds["temp"] < 0.002  # the error written in docs/monitoring.md


def test_exact_tests_on_few_valued_and_categorical_columns(tmp_path: Path) -> None:
    reference = _frame(5_000, 2)
    frames = [_frame(5_000, 3, 3.0)]
    outcome = summaries.window_drift(reference, _write_log(tmp_path, frames), NUMERIC, CATEGORICAL)
    exact = {c.column: c for c in _exact(reference, frames).columns}
    for name in ("flag", "city"):
        got = next(c for c in outcome.result.columns if c.column == name)
        assert got.stattest == "jensenshannon"
        assert got.score == pytest.approx(exact[name].score, abs=1e-12)


def test_an_old_partition_is_summarised_lazily_once_and_cached(tmp_path: Path) -> None:
    reference = _frame(5_000, 4)
    files = _write_log(tmp_path, [_frame(2_000, 5), _frame(2_000, 6)])
    bins = summaries.reference_bins(reference, NUMERIC, CATEGORICAL)
    assert not any(summaries.summary_path(f.parent, bins).exists() for f in files)

    first = summaries.window_summary(files, bins)
    cached = [summaries.summary_path(f.parent, bins) for f in files]
    assert all(p.exists() for p in cached)
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert summaries.window_summary(files, bins) == first
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    # The log's own readers never see a summary: it is not a *.parquet file of the date folder.
    assert sorted(files[0].parent.glob("*.parquet")) == [files[0]]


def test_a_day_summary_grows_with_the_files_that_land_and_is_redone_when_one_goes(tmp_path: Path) -> None:
    reference = _frame(5_000, 4)
    bins = summaries.reference_bins(reference, NUMERIC, CATEGORICAL)
    first = _write_log(tmp_path, [_frame(2_000, 5)])[0]
    assert summaries.window_summary([first], bins)["rows"] == int((pd.read_parquet(first)["role"] != "shadow").sum())
    later = first.with_name("online__2__def.parquet")
    _frame(1_000, 6).to_parquet(later, index=False)
    files = [first, later]
    exact = summaries.summarize_frame(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True), bins)

    grown = summaries.window_summary(files, bins)
    assert grown["rows"] == exact["rows"]
    assert grown["numeric"]["temp"]["counts"] == exact["numeric"]["temp"]["counts"]
    assert json.loads(summaries.summary_path(first.parent, bins).read_text())["files"] == sorted(f.name for f in files)

    first.unlink()  # a replaced batch partition: the day is summarised afresh from what is left
    assert (
        summaries.window_summary([later], bins)["rows"]
        == summaries.summarize_frame(pd.read_parquet(later), bins)["rows"]
    )


def test_summary_counts_versions_roles_labels_and_nulls(tmp_path: Path) -> None:
    reference = _frame(5_000, 7)
    frame = _frame(3_000, 8)
    bins = summaries.reference_bins(reference, NUMERIC, CATEGORICAL)
    summary = summaries.summarize_frame(frame, bins)
    served = frame[frame["role"] != "shadow"]
    assert summary["rows"] == len(served)
    assert summary["labelled"] == int(served["label"].notna().sum())
    assert summary["numeric"]["temp"]["nulls"] == int(served["temp"].isna().sum())
    assert sum(summary["by_version_role"].values()) == len(frame)
    assert summary["by_version_role"]["3|shadow"] == int((frame["role"] == "shadow").sum())


def test_summaries_of_other_bins_do_not_merge() -> None:
    a = summaries.summarize_frame(_frame(100, 1), summaries.reference_bins(_frame(2_000, 1), NUMERIC, CATEGORICAL))
    b = summaries.summarize_frame(_frame(100, 1), summaries.reference_bins(_frame(2_000, 2), NUMERIC, CATEGORICAL))
    with pytest.raises(ValueError, match="different reference bins"):
        summaries.merge([a, b])
