"""The label scan of a window's sample (`mlops.monitoring.label_scan`) on real Parquet files written as the
label store writes them over time: the filters keep exactly the sampled ids in the sample's time ranges,
and files that disagree on a column's type or lack `prediction_time` are still read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlops.monitoring.label_scan import read_labels


def _labels(ids: list[str], label: object, times: list[str] | None, arrived: str = "2011-05-07") -> pd.DataFrame:
    frame = pd.DataFrame({"request_id": ids, "label": label})
    if times is not None:
        frame["event_time"] = pd.to_datetime(times)
        frame["prediction_time"] = pd.to_datetime(times)
    frame["arrived_at"] = pd.Timestamp(arrived)
    return frame


def _ranges(*spans: tuple[str, str]) -> list[tuple[np.datetime64, np.datetime64]]:
    return [(np.datetime64(a), np.datetime64(b)) for a, b in spans]


def test_only_the_sampled_ids_in_the_sampled_time_ranges(tmp_path: Path) -> None:
    times = [f"2011-05-01 {h:02d}:00" for h in range(6)]
    _labels([f"r{i}" for i in range(6)], [float(i) for i in range(6)], times).to_parquet(tmp_path / "a.parquet")
    found = read_labels(
        [tmp_path / "a.parquet"], ["r1", "r2", "r5", "unknown"], _ranges(("2011-05-01 01:00", "2011-05-01 02:00"))
    )
    # r5 is sampled but outside the ranges (the sample did not come from there), r0 in range but not sampled
    assert sorted(found["request_id"]) == ["r1", "r2"]
    assert sorted(found["label"]) == [1.0, 2.0]
    assert list(found.columns) == ["request_id", "label", "arrived_at"]


def test_files_that_disagree_on_types_or_lack_prediction_time_are_all_read(tmp_path: Path) -> None:
    # Written over time: integer labels, then labels with fractions, then one file from before prediction_time.
    _labels(["a", "b"], [1, 2], ["2011-05-01 01:00", "2011-05-01 02:00"]).to_parquet(tmp_path / "1.parquet")
    _labels(["c"], [2.5], ["2011-05-01 03:00"]).to_parquet(tmp_path / "2.parquet")
    _labels(["d"], [4.0], None).to_parquet(tmp_path / "3.parquet")
    files = [tmp_path / "1.parquet", tmp_path / "2.parquet", tmp_path / "3.parquet"]
    found = read_labels(files, ["a", "c", "d"], _ranges(("2011-05-01 00:00", "2011-05-01 04:00")))
    assert dict(zip(found["request_id"], found["label"], strict=True)) == {"a": 1.0, "c": 2.5, "d": 4.0}


def test_classes_as_text_beside_classes_as_numbers(tmp_path: Path) -> None:
    _labels(["a"], [1], ["2011-05-01 01:00"]).to_parquet(tmp_path / "1.parquet")
    _labels(["b"], ["yes"], ["2011-05-01 01:30"]).to_parquet(tmp_path / "2.parquet")
    found = read_labels([tmp_path / "1.parquet", tmp_path / "2.parquet"], ["a", "b"], [])
    assert dict(zip(found["request_id"], found["label"].astype(str), strict=True)) == {"a": "1", "b": "yes"}


def test_prediction_times_with_a_time_zone(tmp_path: Path) -> None:
    frame = _labels(["a", "b"], [1.0, 2.0], ["2011-05-01 01:00", "2011-05-01 09:00"])
    frame["prediction_time"] = frame["prediction_time"].dt.tz_localize("UTC")
    frame.to_parquet(tmp_path / "1.parquet")
    found = read_labels([tmp_path / "1.parquet"], ["a", "b"], _ranges(("2011-05-01 00:30", "2011-05-01 01:30")))
    assert list(found["request_id"]) == ["a"]
