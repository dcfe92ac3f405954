"""Summaries computed as log partitions land (`mlops.monitoring.landing`), on real Parquet files:
each file summarised once, a re-run writes nothing, the monitoring run reuses them under the same
reference and summarises afresh under another (a new champion's), deciding as the exact path."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from monitoring_frames import bike_frame

from mlops.config import UseCase, find_use_case
from mlops.monitoring import landing, summaries
from mlops.monitoring.decision import Guards, decide
from mlops.monitoring.run import MonitoringSummary, run_monitoring
from mlops.monitoring.volume import WindowFiles
from mlops.monitoring.window import collect_window, read_window
from mlops.predictionlog.stores import prediction_store

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIKE = find_use_case("bike_sharing", PROJECT_ROOT / "configs")
AT_VOLUME = BIKE.model_copy(
    update={"monitoring": BIKE.monitoring.model_copy(update={"exact_below_rows": 1000, "sample_rows": 2000})}
)
START, END = datetime(2011, 5, 1), datetime(2011, 5, 6)
GUARDS = Guards(now=datetime(2011, 5, 7, tzinfo=UTC), training_active=False, last_triggered_at=None,
                validation_passed=True, validation_details="")  # fmt: skip


@pytest.fixture
def log_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", str(tmp_path / "log"))
    return tmp_path / "log" / BIKE.name


def _log(rows: int, seed: int, shift: float, start: str = "2011-05-01") -> pd.DataFrame:
    frame = bike_frame(rows, seed=seed, shift=shift)
    log = frame.drop(columns=["cnt"])
    log.insert(0, "request_id", [f"{start}-{seed}-{i}" for i in range(rows)])
    log["event_time"] = pd.date_range(start, periods=rows, freq="min")
    log["logged_at"] = log["event_time"]
    log["model_version"], log["role"], log["source"] = "1", "champion", "online"
    log["prediction"] = frame["cnt"].to_numpy() + 5.0
    return log


def _append(log: pd.DataFrame, parts: int) -> None:
    store = prediction_store()
    for start in range(0, len(log), len(log) // parts):
        store.append(BIKE.name, log.iloc[start : start + len(log) // parts])


def _records(root: Path) -> dict[Path, tuple[int, dict[str, object]]]:
    """Every day summary under the log: its modification time and content."""
    return {p: (p.stat().st_mtime_ns, json.loads(p.read_text())) for p in root.glob("date=*/_summaries/day.*.json")}


def _monitor(use_case: UseCase, reference: pd.DataFrame, key: str, home: Path) -> MonitoringSummary:
    window = collect_window(use_case, START, END, key)
    return run_monitoring(
        use_case, read_window(use_case, window.path), reference, key, {"rmse": 40.0}, home, champion_version="1",
        at_volume=WindowFiles.load(window.files) if window.files else None,
    )  # fmt: skip


def _assert_same_verdicts(volume: MonitoringSummary, exact: MonitoringSummary) -> None:
    assert volume.drift_engine == "summaries" and exact.drift_engine != "summaries"
    assert volume.rows == exact.rows
    assert sorted(volume.drift.drifted_columns) == sorted(exact.drift.drifted_columns)
    assert volume.prediction_drift is not None and exact.prediction_drift is not None
    assert volume.prediction_drift.drifted == exact.prediction_drift.drifted
    assert decide(BIKE, volume, GUARDS).action == decide(BIKE, exact, GUARDS).action


def test_each_landed_file_is_summarised_once(log_root: Path) -> None:
    reference = bike_frame(3000, seed=1)
    _append(_log(6000, seed=4, shift=0.3), parts=6)  # about 1.2 days a file: 5 day folders
    folders = sorted(log_root.glob("date=*"))

    first = landing.summarize_landed(AT_VOLUME, folders, reference, {"model_version": "1"})
    assert first.skipped is None and first.bins_key is not None
    files = {d["folder"]: d["files"] for d in first.days}
    assert first.files_summarised == sum(files.values()) and all(d["afresh"] for d in first.days)
    written = _records(log_root)
    assert len(written) == len(folders)
    for path, (_, record) in written.items():
        assert record["built_against"] == {"by": "landing", "model_version": "1", "bins_key": first.bins_key}
        rows = sum(len(pd.read_parquet(f)) for f in path.parent.parent.glob("*.parquet"))
        assert record["summary"]["rows"] == rows > 0  # type: ignore[index]

    again = landing.summarize_landed(AT_VOLUME, folders, reference, {"model_version": "1"})
    assert again.files_summarised == 0 and again.bins_key == first.bins_key
    assert _records(log_root) == written  # nothing rewritten

    # The service logs more rows of the last day: only the new file is read, the rest kept.
    _append(_log(300, seed=9, shift=0.3, start="2011-05-05 06:00"), parts=1)
    later = landing.summarize_landed(AT_VOLUME, folders, reference, {"model_version": "1"})
    assert [(d["folder"], d["summarised"], d["afresh"]) for d in later.days if d["summarised"]] == [
        ("date=2011-05-05", 1, False)
    ]
    after = _records(log_root)
    changed = [p for p in after if after[p][0] != written[p][0]]
    assert [p.parent.parent.name for p in changed] == ["date=2011-05-05"]
    total = sum(len(pd.read_parquet(f)) for f in log_root.glob("date=*/*.parquet"))
    assert sum(r["summary"]["rows"] for _, r in after.values()) == total == 6300  # type: ignore[index]


def test_monitoring_reuses_landed_summaries_and_decides_as_the_exact_path(log_root: Path, tmp_path: Path) -> None:
    reference = bike_frame(3000, seed=1)
    _append(_log(6000, seed=4, shift=0.3), parts=6)
    landed = landing.summarize_landed(AT_VOLUME, sorted(log_root.glob("date=*")), reference, {"model_version": "1"})
    before = _records(log_root)

    volume = _monitor(AT_VOLUME, reference, "volume", tmp_path)
    exact = _monitor(BIKE, reference, "exact", tmp_path)

    assert _records(log_root) == before  # every day read as it landed: nothing summarised, nothing written
    assert {p.name for p in before} == {f"day.{landed.bins_key}.json"}
    _assert_same_verdicts(volume, exact)
    assert decide(BIKE, volume, GUARDS).action == "retrain"


def test_a_new_champion_makes_monitoring_summarise_afresh(log_root: Path, tmp_path: Path) -> None:
    """Summaries landed against the old champion's reference are not reused for the new one's bins."""
    old, new = bike_frame(3000, seed=1), bike_frame(3000, seed=2, shift=0.3)
    _append(_log(6000, seed=4, shift=0.3), parts=6)
    landed = landing.summarize_landed(AT_VOLUME, sorted(log_root.glob("date=*")), old, {"model_version": "1"})
    before = _records(log_root)

    volume = _monitor(AT_VOLUME, new, "volume-new", tmp_path)
    exact = _monitor(BIKE, new, "exact-new", tmp_path)

    after = _records(log_root)
    assert all(after[p] == before[p] for p in before)  # the landed ones untouched
    fresh = {p: r for p, (_, r) in after.items() if p not in before}
    assert len(fresh) == len(before) and landed.bins_key not in {p.name for p in fresh}
    assert all(r["built_against"] == {"by": "monitoring", "model_version": "1"} for r in fresh.values())
    _assert_same_verdicts(volume, exact)
    assert decide(BIKE, volume, GUARDS).action == "none"  # the new champion saw summer: no drift


def test_a_use_case_below_volume_is_not_summarised(log_root: Path) -> None:
    _append(_log(600, seed=4, shift=0.0), parts=2)
    small = BIKE.model_copy(update={"monitoring": BIKE.monitoring.model_copy(update={"exact_below_rows": 10**6})})
    result = landing.summarize_landed(small, sorted(log_root.glob("date=*")), bike_frame(3000, seed=1), {})
    assert result.skipped is not None and "exact_below_rows" in result.skipped
    assert not _records(log_root)


def test_bins_are_the_monitoring_runs_for_the_same_rows(log_root: Path) -> None:
    """The key the landing step writes is the key the monitoring run asks for."""
    from mlops.monitoring.run import summary_bins

    reference = bike_frame(3000, seed=1)
    log = _log(600, seed=4, shift=0.0)
    bins = summary_bins(BIKE, reference, log)
    assert set(bins.numeric) >= {"temp", "hum", "prediction"} and "prediction" not in bins.categorical
    assert (
        bins.key
        == summaries.reference_bins(
            reference.assign(prediction=reference["cnt"]), [*bins.numeric], list(bins.categorical)
        ).key
    )
