"""Monitoring run (Evidently reports on real files), the retraining decision and the reference lineage.

Evidently runs are the slow part: the module-scoped fixtures run each monitoring
scenario once and the tests read their results.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_frames import bike_frame

from mlops.config import find_use_case
from mlops.monitoring.decision import Guards, decide
from mlops.monitoring.drift import DriftResult
from mlops.monitoring.reference import LineageError, read_reference, reference_from_lineage
from mlops.monitoring.reports import ReportWriteError, write_atomic
from mlops.monitoring.run import MonitoringSummary, run_monitoring
from mlops.monitoring.window import validate_window
from mlops.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIKE = find_use_case("bike_sharing", PROJECT_ROOT / "configs")
CANCER = find_use_case("breast_cancer", PROJECT_ROOT / "configs")
NOW = datetime(2011, 6, 1, tzinfo=UTC)
CHAMPION = {"rmse": 42.0}  # the holdout of a model with noise 30 on a target with noise 30


def prediction_log(frame: pd.DataFrame, label_share: float, noise: float, seed: int) -> pd.DataFrame:
    """A frame shaped like mlops.predictionlog.read_predictions(with_labels=True)."""
    rng = np.random.default_rng(seed)
    rows = len(frame)
    log = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(rows)],
            "use_case": "bike_sharing",
            "model_name": "bike_sharing_cnt",
            "model_version": "1",
            "event_time": pd.date_range("2011-05-01", periods=rows, freq="min", tz="UTC"),
            "logged_at": pd.Timestamp("2011-05-20", tz="UTC"),
            "source": "batch",
        }
    )
    log["prediction"] = 200 + 400 * frame["temp"].to_numpy() + rng.normal(0, noise, rows)
    log = pd.concat([log, frame.drop(columns=["cnt"]).reset_index(drop=True)], axis=1)
    label = frame["cnt"].to_numpy(dtype=float)
    label[rng.random(rows) > label_share] = np.nan
    log["label"] = label
    return log


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return bike_frame(3000, seed=1)


@pytest.fixture(scope="module")
def runs(reference: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, MonitoringSummary]:
    root = tmp_path_factory.mktemp("reports")
    stable = prediction_log(bike_frame(2500, seed=2), label_share=0.8, noise=30, seed=3)
    drifted = prediction_log(bike_frame(2500, seed=4, shift=0.3), label_share=0.8, noise=150, seed=5)
    awkward = drifted.copy()
    awkward["windspeed"] = np.nan  # all-null column
    awkward["weathersit"] = awkward["weathersit"].where(awkward.index % 3 > 0, 9)  # a new category
    reference_missing = reference.drop(columns=["hum"])  # a column the reference lacks
    return {
        "stable": run_monitoring(BIKE, stable, reference, "stable", CHAMPION, root),
        "drifted": run_monitoring(BIKE, drifted, reference, "2011-05-01_2011-05-15", CHAMPION, root),
        "drifted_fast": run_monitoring(
            BIKE, drifted, reference, "fast", CHAMPION, root, fast_path_rows=1000, report_sample_rows=800
        ),  # fmt: skip
        "awkward": run_monitoring(BIKE, awkward, reference_missing, "awkward", CHAMPION, root),
        "empty": run_monitoring(BIKE, drifted.iloc[0:0], reference, "empty", CHAMPION, root),
    }


def test_reports_are_written_per_run(runs: dict[str, MonitoringSummary]) -> None:
    summary = runs["drifted"]
    assert summary.report_dir is not None and summary.report_dir.name == "2011-05-01_2011-05-15"
    assert summary.report_dir.parent.name == "bike_sharing"
    names = sorted(p.name for p in summary.report_dir.iterdir())
    assert names == sorted(
        ["drift.html", "drift.json", "data_quality.html", "data_quality.json", "performance.html",
         "performance.json", "summary.json"]
    )  # fmt: skip
    assert "<html" in (summary.report_dir / "drift.html").read_text()[:2000].lower()
    drift_json = json.loads((summary.report_dir / "drift.json").read_text())
    assert any("DriftedColumnsCount" in m["metric_name"] for m in drift_json["metrics"])
    saved = json.loads((summary.report_dir / "summary.json").read_text())
    assert saved["drift"]["share_of_drifted_columns"] == summary.drift.share_of_drifted_columns
    assert saved["drift_engine"] == "evidently" and saved["rows"] == 2500


def test_drift_prediction_drift_and_performance(runs: dict[str, MonitoringSummary]) -> None:
    stable, drifted = runs["stable"], runs["drifted"]
    assert stable.drift.drifted_columns == [] and not stable.drift.dataset_drift
    assert {"temp", "atemp", "hum", "windspeed", "season"} <= set(drifted.drift.drifted_columns)
    assert drifted.drift.share_of_drifted_columns >= 0.5
    assert drifted.prediction_reference == "target"
    assert drifted.prediction_drift is not None and drifted.prediction_drift.drifted
    assert 1800 < drifted.labelled_rows < 2200  # 80 % of the labels have arrived
    assert stable.performance["rmse"] == pytest.approx(42, abs=8)  # noise 30 on the prediction + 30 on cnt
    assert drifted.performance["rmse"] > 140
    assert set(drifted.performance) == {"rmse", "mae", "r2", "mape"}


def test_fast_path_reaches_the_same_decision(runs: dict[str, MonitoringSummary]) -> None:
    full, fast = runs["drifted"], runs["drifted_fast"]
    assert fast.drift_engine == "fast" and fast.report_sample_rows == 800
    assert fast.drift.drifted_columns == full.drift.drifted_columns
    assert fast.drift.share_of_drifted_columns == full.drift.share_of_drifted_columns
    assert fast.prediction_drift is not None and full.prediction_drift is not None
    assert fast.prediction_drift.score == pytest.approx(full.prediction_drift.score, rel=1e-6)
    assert fast.report_dir is not None and (fast.report_dir / "drift.html").exists()


def test_awkward_window_is_reported_not_fatal(runs: dict[str, MonitoringSummary]) -> None:
    awkward = runs["awkward"]
    skipped = {s.column: s.reason for s in awkward.drift.skipped}
    assert skipped == {"hum": "absent from the reference data", "windspeed": "all values missing in the window"}
    assert "weathersit" in awkward.drift.drifted_columns  # the new category 9 on a third of the rows
    assert len(awkward.drift.columns) == 8
    assert any("windspeed skipped" in note for note in awkward.notes)
    assert awkward.report_dir is not None and (awkward.report_dir / "drift.html").exists()
    assert (awkward.report_dir / "data_quality.html").exists()
    assert not any("failed" in note for note in awkward.notes)


def test_empty_window(runs: dict[str, MonitoringSummary]) -> None:
    empty = runs["empty"]
    assert empty.rows == 0 and empty.drift_engine == "none" and empty.drift.columns == []
    assert empty.report_dir is not None and [p.name for p in empty.report_dir.iterdir()] == ["summary.json"]
    decision = decide(BIKE, empty, Guards(now=NOW))
    assert decision.action == "insufficient_data" and "only 0 rows" in decision.reasons[0]


# --------------------------------------------------------------------------- decide (pure)


def test_decide_on_the_runs(runs: dict[str, MonitoringSummary]) -> None:
    stable = decide(BIKE, runs["stable"], Guards(now=NOW))
    assert stable.action == "none" and not stable.alert
    drifted = decide(BIKE, runs["drifted"], Guards(now=NOW))
    assert drifted.action == "retrain" and drifted.alert
    assert drifted.reasons[0].startswith("drift share")
    assert any(r.startswith("rmse") and "> allowed 30%" in r for r in drifted.reasons)
    assert drifted.degradation is not None and drifted.degradation > 2  # rmse ~150 vs 42


def summary_with(share_drifted: int, performance: dict[str, float], champion: dict[str, float],
                 rows: int = 1000, labelled: int = 1000) -> MonitoringSummary:  # fmt: skip
    from mlops.monitoring.drift import ColumnDrift

    columns = [ColumnDrift(f"c{i}", "numeric", "wasserstein", 0.5 if i < share_drifted else 0.0, 0.1,
                           i < share_drifted) for i in range(10)]  # fmt: skip
    return MonitoringSummary("x", "k", rows, labelled, DriftResult(columns), "fast", performance=performance,
                             champion_metrics=champion)  # fmt: skip


@pytest.mark.parametrize(
    ("drifted", "rmse", "expected"),
    [(5, 30.0, "retrain"), (4, 30.0, "none"), (0, 39.1, "retrain"), (0, 38.9, "none")],
)
def test_drift_share_and_degradation_triggers(drifted: int, rmse: float, expected: str) -> None:
    # bike_sharing: drift_share_threshold 0.5, performance_degradation 0.3 on rmse (lower is better)
    decision = decide(BIKE, summary_with(drifted, {"rmse": rmse}, {"rmse": 30.0}), Guards(now=NOW))
    assert decision.action == expected
    assert decision.drift_share == drifted / 10


def test_degradation_follows_the_metric_direction() -> None:
    # breast_cancer: f1 is higher-is-better; default degradation allowance 0.25
    worse = decide(CANCER, summary_with(0, {"f1": 0.6}, {"f1": 0.95}), Guards(now=NOW))
    better = decide(CANCER, summary_with(0, {"f1": 0.99}, {"f1": 0.95}), Guards(now=NOW))
    assert worse.action == "retrain" and worse.degradation == pytest.approx(0.35 / 0.95)
    assert better.action == "none" and better.degradation is not None and better.degradation < 0


# One test per guard (issue: "each guard has its own test"). The window below would trigger on
# drift alone (8 of 10 columns), so every non-"retrain" outcome is the guard's doing.
DRIFTED = summary_with(8, {"rmse": 30.0}, {"rmse": 30.0})


def test_no_guard_lets_a_drifted_window_retrain() -> None:
    decision = decide(BIKE, DRIFTED, Guards(now=NOW))
    assert decision.action == "retrain" and decision.reasons[0].startswith("drift share 0.80 >= 0.5")


def test_data_bug_guard() -> None:
    bug = decide(BIKE, DRIFTED, Guards(now=NOW, validation_passed=False, validation_details="hum > 1 in 40 rows"))
    assert bug.action == "data_bug" and bug.alert
    assert "hum > 1 in 40 rows" in bug.reasons[0] and "not drift" in bug.reasons[0]
    # It wins over every other guard: a broken feed must not read as "too little data" or a cooldown.
    small_and_busy = Guards(now=NOW, validation_passed=False, training_active=True)
    assert decide(BIKE, replace(DRIFTED, rows=10), small_and_busy).action == "data_bug"


def test_too_little_data_guard() -> None:
    few = decide(BIKE, replace(DRIFTED, rows=150), Guards(now=NOW))
    assert few.action == "insufficient_data" and not few.alert
    assert few.reasons == ["only 150 rows in the window (< monitoring.min_rows = 200): nothing decided"]
    assert decide(BIKE, replace(DRIFTED, rows=200), Guards(now=NOW)).action == "retrain"  # the minimum is enough


def test_active_training_run_guard() -> None:
    running = decide(BIKE, DRIFTED, Guards(now=NOW, training_active=True))
    assert running.action == "cooldown" and running.alert
    assert running.reasons[-1] == "a training run is already queued or running: not triggering another"
    # The guard only matters when something would trigger.
    quiet = decide(BIKE, summary_with(0, {}, {"rmse": 30.0}, labelled=0), Guards(now=NOW, training_active=True))
    assert quiet.action == "none"


@pytest.mark.parametrize(
    ("hours_ago", "expected"),
    [(0.0, "cooldown"), (2.0, "cooldown"), (5.9, "cooldown"), (6.0, "retrain"), (7.0, "retrain")],
)
def test_cooldown_guard_by_hours(hours_ago: float, expected: str) -> None:
    # bike_sharing: cooldown_hours 6
    decision = decide(BIKE, DRIFTED, Guards(now=NOW, last_triggered_at=NOW - timedelta(hours=hours_ago)))
    assert decision.action == expected
    if expected == "cooldown":
        assert decision.reasons[-1] == (
            f"last retraining triggered {hours_ago:.1f} h ago (< monitoring.cooldown_hours = 6.0): not triggering again"
        )


def test_a_trigger_after_the_window_is_no_cooldown() -> None:
    """A backfill, or a second demo on the same MLOPS_HOME, decides a window that ends before the
    recorded trigger. That negative interval is not "inside the cooldown" (else nothing would
    retrain again); only a trigger in the cooldown hours before the window's end holds it back."""
    later = NOW + timedelta(days=45)
    decision = decide(BIKE, DRIFTED, Guards(now=NOW, last_triggered_at=later))
    assert decision.action == "retrain", decision.reasons
    assert decision.reasons[-1] == (
        "the last recorded trigger (2011-07-16 00:00:00+00:00) is 1080.0 h after this window's end "
        "(2011-06-01 00:00:00+00:00): not a cooldown for this window"
    )
    # A moment later still counts as after the window, not as "0.0 h ago".
    just_after = decide(BIKE, DRIFTED, Guards(now=NOW, last_triggered_at=NOW + timedelta(minutes=1)))
    assert just_after.action == "retrain"


def test_performance_needs_enough_labelled_rows() -> None:
    few_labels = decide(BIKE, summary_with(0, {"rmse": 99.0}, {"rmse": 30.0}, labelled=50), Guards(now=NOW))
    assert few_labels.action == "none" and any("50 labelled rows" in r for r in few_labels.reasons)


# --------------------------------------------------------------------------- lineage and files


def test_reference_from_lineage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: pd.DataFrame) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    snapshot = get_settings().data_dir / "snapshots" / "bike" / "run=1" / "train.parquet"
    snapshot.parent.mkdir(parents=True)
    reference.to_parquet(snapshot)
    path = reference_from_lineage({"snapshot_path": "snapshots/bike/run=1/train.parquet", "dvc_md5": "abc"})
    assert path == snapshot
    assert reference_from_lineage({"params.snapshot_path": str(snapshot)}) == snapshot
    frame = read_reference(path, columns=[*BIKE.features.all, "cnt", "not_there"])
    assert list(frame.columns) == [*BIKE.features.all, "cnt"] and len(frame) == 3000
    with pytest.raises(LineageError, match="no 'snapshot_path' tag or param"):
        reference_from_lineage({"run_id": "x"})
    with pytest.raises(LineageError, match="md5 abc"):
        reference_from_lineage({"snapshot_path": "snapshots/gone.parquet", "dvc_md5": "abc"})


def test_atomic_write_names_the_path_on_failure(tmp_path: Path) -> None:
    target = write_atomic(tmp_path / "a" / "report.json", "{}")
    assert target.read_text() == "{}" and [p.name for p in target.parent.iterdir()] == ["report.json"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReportWriteError, match=str(blocker / "report.html")):
        write_atomic(blocker / "report.html", "<html>")


def test_classification_window_performance() -> None:
    from mlops.monitoring.performance import window_performance

    labels = [0, 1, 1, 0, 1, 1]
    as_labels = window_performance("classification", [float(v) for v in labels], [0, 1, 0, 0, 1, 1])
    assert as_labels["accuracy"] == pytest.approx(5 / 6) and "roc_auc" not in as_labels
    as_proba = window_performance("classification", labels, [0.1, 0.9, 0.4, 0.2, 0.8, 0.7])
    assert as_proba["accuracy"] == pytest.approx(5 / 6) and "roc_auc" in as_proba and "log_loss" in as_proba


# --------------------------------------------------------------------------- window validation (Great Expectations)


def logged_window(tmp_path: Path, run_key: str, frame: pd.DataFrame) -> str:
    """A window file as `collect_window` writes it: the prediction log's columns, in a run-keyed folder."""
    log = frame[BIKE.features.all].copy()
    log.insert(0, "request_id", [f"r{i}" for i in range(len(log))])
    log["prediction"] = 100.0
    log["label"] = frame[BIKE.target].astype(float)
    path = tmp_path / run_key / "window.parquet"
    path.parent.mkdir(parents=True)
    log.to_parquet(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def february() -> pd.DataFrame:
    raw = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
    return raw[(raw["dteday"] >= "2011-02-01") & (raw["dteday"] < "2011-02-15")].reset_index(drop=True)


def test_a_clean_window_passes_validation_with_a_data_docs_page(
    ge_dir: Path, tmp_path: Path, february: pd.DataFrame
) -> None:
    from mlops.data.validation import window_docs_dir
    from mlops.ui.files import relative_to_root

    result = validate_window(BIKE, logged_window(tmp_path, "monitor_bike_sharing__clean", february))
    assert result.passed is True and result.details == ""
    assert result.data_docs_page is not None
    page = Path(result.data_docs_page)
    assert page.is_file() and page.suffix == ".html"
    # Named after the run (the window's folder) and inside the folder the UI plugin serves,
    # which is what the task's "Data Docs" extra link needs.
    assert "monitor_bike_sharing__clean" in page.parts
    assert page.is_relative_to(window_docs_dir())
    assert relative_to_root(get_settings().data_docs_dir, page) is not None
    assert (window_docs_dir() / "index.html").is_file()
    # The training site's own index is not rebuilt by a window validation.
    assert not (get_settings().data_docs_dir / "index.html").exists()


def test_a_broken_window_fails_naming_the_expectation(ge_dir: Path, tmp_path: Path, february: pd.DataFrame) -> None:
    broken = february.copy()
    sentinel, snow = broken.index % 10 == 0, broken.index % 7 == 0
    broken.loc[sentinel, "hum"] = -999.0  # a feed that sends a sentinel for "unknown"
    broken.loc[snow, "weathersit"] = "Snow"  # a label the suite has never seen
    result = validate_window(BIKE, logged_window(tmp_path, "monitor_bike_sharing__broken", broken))
    assert result.passed is False
    assert f"expect_column_values_to_be_between(hum): {sentinel.sum()} unexpected values" in result.details
    assert f"expect_column_values_to_be_in_set(weathersit): {snow.sum()} unexpected values" in result.details
    assert result.data_docs_page is not None
    page = Path(result.data_docs_page).read_text()
    assert "-999.0" in page and "Snow" in page  # the page shows the unexpected values


def test_validate_features_checks_only_the_feature_expectations(ge_dir: Path, february: pd.DataFrame) -> None:
    from mlops.data.validation import validate_features

    # A path separator in the run id (the results store refuses it) becomes part of the folder name.
    outcome = validate_features(BIKE, february[BIKE.features.all], run_id="features/manual__2011-03-01T00:00:00")
    # The log has no target or time column: their expectations, and the table-level ones, do not apply.
    assert outcome.success and outcome.suite == "bike_sharing_features"
    assert outcome.statistics["evaluated_expectations"] == 3 * len(BIKE.features.all)
    assert outcome.data_docs_page is not None and Path(outcome.data_docs_page).is_file()
    assert "features_manual__2011-03-01T00:00:00" in Path(outcome.data_docs_page).parts


def test_window_without_the_features_or_rows(ge_dir: Path, tmp_path: Path, february: pd.DataFrame) -> None:
    path = logged_window(tmp_path, "no_hum", february)
    pd.read_parquet(path).drop(columns=["hum"]).to_parquet(path)
    lacking = validate_window(BIKE, path)
    assert lacking.passed is False and lacking.details == "the prediction log lacks feature columns ['hum']"
    empty_path = logged_window(tmp_path, "empty", february.iloc[0:0])
    empty = validate_window(BIKE, empty_path)
    assert empty.passed is None and empty.details == "empty window: nothing to validate"


def test_the_window_is_read_without_the_log_columns_no_report_uses(tmp_path: Path) -> None:
    from mlops.monitoring.window import read_window

    log = prediction_log(bike_frame(50, seed=7), label_share=0.5, noise=10, seed=8)
    path = tmp_path / "window.parquet"
    log.drop(columns=["windspeed"]).to_parquet(path)  # a feature the log lacks is not asked for
    window = read_window(BIKE, path)
    # The request ids, names and sources stay on disk; what per-version performance and the lag need is read.
    wanted = [*BIKE.features.all, "prediction", "label", "model_version", "logged_at", "event_time"]
    assert list(window.columns) == [c for c in wanted if c != "windspeed"]
    assert len(window) == 50 and window["label"].isna().sum() == log["label"].isna().sum()
