"""Monitoring reads the prediction log right: every metric (or why not), per model version,
probability drift, null shares and label lag, on hand-built frames with the log's columns.

The frames carry the contract's columns (`role`, `model_version`, `proba__<label>`,
`label_arrived_at`, `logged_at`) or lack them, as a log written before them does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mlops.config import find_use_case
from mlops.monitoring.assessment import headline_metrics
from mlops.monitoring.decision import Guards, decide
from mlops.monitoring.drift import ColumnDrift, DriftResult
from mlops.monitoring.performance import measure_performance, performance_by_version
from mlops.monitoring.run import MonitoringSummary, label_lag, run_monitoring
from mlops.monitoring.window import validate_window
from mlops.naming import proba_column
from mlops.platform.alerts import data_quality_alert
from mlops.ui import files

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FLIGHTS = find_use_case("flight_delays", PROJECT_ROOT / "configs")  # binary, roc_auc, min_rows 500
BIKE = find_use_case("bike_sharing", PROJECT_ROOT / "configs")
NOW = datetime(2023, 7, 1, tzinfo=UTC)
CLASSIFICATION = ["roc_auc", "log_loss", "f1", "precision", "recall", "accuracy"]


def flights(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Flight features in the model-signature types (ints stay int64, categoricals str)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "dep_hour": rng.integers(5, 23, rows),
            "day_of_week": rng.integers(0, 7, rows),
            "distance": rng.integers(200, 2500, rows),
            "seats": rng.integers(50, 200, rows),
            "temperature": rng.normal(5 + 20 * shift, 5, rows),
            "wind_speed": rng.gamma(2, 3, rows),
            "precipitation": rng.exponential(1 + shift, rows),
            "visibility": rng.uniform(5, 10, rows),
            "carrier": rng.choice(["AA", "DL", "UA"], rows),
            "origin": rng.choice(["JFK", "ORD"], rows),
        }
    )


def scored(features: pd.DataFrame, seed: int, skill: float = 3.0, positive_shift: float = 0.0) -> pd.DataFrame:
    """The features with a label drawn from a true probability, and a model's `proba__0/1` and class.

    `skill` scales how much the model's probability follows the true one (0: noise);
    `positive_shift` moves every probability towards the positive class.
    """
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 1, len(features))
    truth = rng.random(len(features)) < 1 / (1 + np.exp(-2 * signal))
    logit = skill * signal + rng.normal(0, 1, len(features)) + positive_shift
    p1 = 1 / (1 + np.exp(-logit))
    frame = features.reset_index(drop=True).copy()
    frame[proba_column(0)], frame[proba_column(1)] = 1 - p1, p1
    frame["prediction"] = (p1 >= 0.5).astype("int64")
    frame["label"] = truth.astype(float)
    return frame


def log_frame(frame: pd.DataFrame, version: str = "1", role: str | None = "champion") -> pd.DataFrame:
    """The contract's meta columns in front of a scored frame, label lag 2 h for every row."""
    rows = len(frame)
    meta = pd.DataFrame(
        {
            "request_id": [f"v{version}-{role}-{i}" for i in range(rows)],
            "model_version": version,
            "event_time": pd.date_range("2023-06-15", periods=rows, freq="min", tz="UTC"),
        }
    )
    if role is not None:
        meta["role"] = role
    meta["logged_at"] = meta["event_time"] + pd.Timedelta(seconds=1)
    out = pd.concat([meta, frame.reset_index(drop=True)], axis=1)
    out["label_arrived_at"] = (out["logged_at"] + pd.Timedelta(hours=2)).where(out["label"].notna())
    return out


# --------------------------------------------------------------------------- every metric, or why not


def test_a_binary_window_with_probabilities_has_every_metric() -> None:
    window = scored(flights(400, seed=1), seed=2)
    performance = measure_performance("classification", window)
    assert sorted(performance.metrics) == sorted(CLASSIFICATION) and performance.unavailable == {}
    # roc_auc and log_loss come from the positive class's proba column, as the holdout's did.
    truth = window["label"].astype(int)
    assert performance.metrics["roc_auc"] == pytest.approx(roc_auc_score(truth, window["proba__1"]))
    assert performance.metrics["log_loss"] == pytest.approx(log_loss(truth, window[["proba__0", "proba__1"]]))
    assert performance.metrics["accuracy"] == pytest.approx(float((truth == window["prediction"]).mean()))


def test_string_classes_use_the_last_proba_column_as_positive() -> None:
    window = scored(flights(300, seed=3), seed=4)
    named = window.rename(columns={"proba__0": "proba__no", "proba__1": "proba__yes"})
    named["label"] = np.where(window["label"] == 1, "yes", "no")
    named["prediction"] = np.where(window["prediction"] == 1, "yes", "no")
    performance = measure_performance("classification", named)
    expected = measure_performance("classification", window).metrics
    assert performance.metrics == pytest.approx(expected)


def test_a_one_class_window_says_why_roc_auc_and_log_loss_are_missing() -> None:
    window = scored(flights(200, seed=5), seed=6)
    window["label"] = 0.0
    performance = measure_performance("classification", window)
    assert "roc_auc" not in performance.metrics and "accuracy" in performance.metrics
    assert performance.unavailable == {
        "roc_auc": "the window's labels hold one class (0): roc_auc needs both",
        "log_loss": "the window's labels hold one class (0): log_loss needs both",
    }


def test_a_log_without_probabilities_gives_the_label_metrics_and_says_why_not_the_others() -> None:
    window = scored(flights(200, seed=7), seed=8).drop(columns=["proba__0", "proba__1"])
    performance = measure_performance("classification", window)
    assert sorted(performance.metrics) == ["accuracy", "f1", "precision", "recall"]
    assert performance.unavailable["roc_auc"] == (
        "no class probabilities in the prediction log (only the class was logged): roc_auc needs them"
    )
    assert set(performance.unavailable) == {"roc_auc", "log_loss"}


def test_multiclass_roc_auc_is_one_vs_rest_and_needs_every_class() -> None:
    rng = np.random.default_rng(9)
    truth = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300)
    proba[np.arange(300), truth] += 1.0
    proba /= proba.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({proba_column(c): proba[:, c] for c in range(3)})
    frame["prediction"], frame["label"] = proba.argmax(axis=1), truth.astype(float)
    full = measure_performance("classification", frame)
    assert full.metrics["roc_auc"] == pytest.approx(roc_auc_score(truth, proba, multi_class="ovr"))
    two_classes = measure_performance("classification", frame[frame["label"] < 2])
    assert "log_loss" in two_classes.metrics
    assert two_classes.unavailable == {
        "roc_auc": "the window's labels hold 2 of the 3 classes: roc_auc (one-vs-rest) needs every class"
    }


def test_regression_has_every_metric_and_r2_needs_two_rows() -> None:
    frame = pd.DataFrame({"prediction": [10.0, 20.0, 31.0, 39.0], "label": [11.0, 19.0, 30.0, 40.0]})
    assert sorted(measure_performance("regression", frame).metrics) == ["mae", "mape", "r2", "rmse"]
    one = measure_performance("regression", frame.iloc[:1])
    assert one.unavailable == {"r2": "r2 needs at least two labelled rows"}
    none = measure_performance("regression", frame.iloc[0:0])
    assert none.unavailable["rmse"] == "no labels have arrived for this window"


# --------------------------------------------------------------------------- per model version


def test_performance_by_version_uses_only_champion_rows() -> None:
    good, bad = scored(flights(300, seed=10), seed=11), scored(flights(300, seed=12), seed=13, skill=0.0)
    shadow = scored(flights(300, seed=14), seed=15)
    window = pd.concat([log_frame(bad, "1"), log_frame(good, "2"), log_frame(shadow, "3", role="shadow")])
    by_version = performance_by_version("classification", window)
    assert list(by_version) == ["1", "2"]  # the shadow version answered nobody
    assert by_version["2"].rows == 300 and by_version["2"].metrics["roc_auc"] > 0.75
    assert by_version["1"].metrics["roc_auc"] < 0.6
    # A log written before roles existed is all champion.
    old = pd.concat([log_frame(bad, "1", role=None), log_frame(good, "2", role=None)])
    assert list(performance_by_version("classification", old)) == ["1", "2"]


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MonitoringSummary]:
    """A window spanning a promotion: v1 (poor) before it, v2 (good, the champion) after, v3 shadowing."""
    root = tmp_path_factory.mktemp("reports")
    reference = scored(flights(1500, seed=20), seed=21).rename(columns={"label": "delayed"})
    before = log_frame(scored(flights(800, seed=22), seed=23, skill=0.0), "1")
    after = log_frame(scored(flights(800, seed=24), seed=25), "2")
    shadow = log_frame(scored(flights(800, seed=26), seed=27, skill=0.0), "3", role="shadow")
    window = pd.concat([before, after, shadow], ignore_index=True)
    champion = {"roc_auc": 0.85}
    steady = log_frame(scored(flights(1200, seed=34), seed=35), "2")
    confident = log_frame(scored(flights(1200, seed=28), seed=29, positive_shift=2.0), "2")
    return {
        "steady": run_monitoring(FLIGHTS, steady, reference, "steady", champion, root, champion_version="2"),
        "judged_v2": run_monitoring(FLIGHTS, window, reference, "v2", champion, root, champion_version="2"),
        "mixed": run_monitoring(FLIGHTS, window, reference, "mixed", champion, root),
        "confident": run_monitoring(FLIGHTS, confident, reference, "confident", champion, root, champion_version="2"),
        "unscored_reference": run_monitoring(
            FLIGHTS,
            confident,
            reference.drop(columns=["proba__0", "proba__1", "prediction"]),
            "unscored",
            champion,
            root,
        ),
    }


def test_shadow_rows_never_enter_the_champions_window(tmp_path: Path) -> None:
    reference = scored(flights(1500, seed=20), seed=21).rename(columns={"label": "delayed"})
    served = log_frame(scored(flights(1200, seed=34), seed=35), "2")
    # A shadow far more confident on every request: in the window it would be prediction drift.
    shadow = log_frame(scored(flights(1200, seed=34), seed=35, positive_shift=3.0), "3", role="shadow")
    alone = run_monitoring(FLIGHTS, served, reference, "alone", {"roc_auc": 0.85}, tmp_path, champion_version="2")
    with_shadow = run_monitoring(FLIGHTS, pd.concat([served, shadow], ignore_index=True), reference, "shadowed",
                                 {"roc_auc": 0.85}, tmp_path, champion_version="2")  # fmt: skip
    assert with_shadow.rows == alone.rows == 1200
    assert with_shadow.prediction_drift == alone.prediction_drift
    assert with_shadow.drift.to_dict() == alone.drift.to_dict()
    assert with_shadow.label_lag == alone.label_lag


def test_decay_is_judged_on_the_champion_versions_own_predictions(promoted: dict[str, MonitoringSummary]) -> None:
    judged, mixed = promoted["judged_v2"], promoted["mixed"]
    assert judged.performance_version == "2" and judged.performance_rows == 800
    assert judged.performance == judged.performance_by_version["2"].metrics
    assert sorted(judged.performance_by_version) == ["1", "2"]
    decision = decide(FLIGHTS, judged, Guards(now=NOW))
    assert decision.action == "none" and decision.performance_version == "2"
    assert any(r.startswith("roc_auc") and "champion v2 on its own 800 labelled rows" in r for r in decision.reasons)
    # Mixing in the old version's predictions would have called the champion decayed.
    assert decide(FLIGHTS, mixed, Guards(now=NOW)).action == "retrain"
    saved = json.loads((judged.report_dir / "summary.json").read_text())  # type: ignore[operator]
    assert saved["performance_by_version"]["1"]["rows"] == 800 and saved["performance_version"] == "2"


def test_a_champion_without_labelled_rows_is_not_judged_and_says_why(promoted: dict[str, MonitoringSummary]) -> None:
    root = promoted["judged_v2"].report_dir.parent.parent  # type: ignore[union-attr]
    window = log_frame(scored(flights(600, seed=30), seed=31), "1")
    reference = scored(flights(600, seed=32), seed=33).rename(columns={"label": "delayed"})
    summary = run_monitoring(FLIGHTS, window, reference, "new_champion", {"roc_auc": 0.85}, root, champion_version="2")
    decision = decide(FLIGHTS, summary, Guards(now=NOW))
    assert decision.degradation is None and decision.action == "none"
    assert decision.performance_unavailable["roc_auc"] == (
        "no labelled predictions of champion version 2 in the window (versions with labels: 1)"
    )
    assert any(
        r.startswith("decay not judged: roc_auc could not be computed for champion v2") for r in decision.reasons
    )


def test_a_one_class_window_cannot_judge_decay_and_the_decision_says_why() -> None:
    summary = MonitoringSummary(
        "flight_delays", "k", 1000, 1000, promoted_drift(), "fast", performance={"accuracy": 0.9},
        champion_metrics={"roc_auc": 0.85}, performance_version="2", performance_rows=1000,
        performance_unavailable={"roc_auc": "the window's labels hold one class (0): roc_auc needs both"},
    )  # fmt: skip
    decision = decide(FLIGHTS, summary, Guards(now=NOW))
    assert decision.degradation is None and decision.action == "none"
    assert decision.reasons[1] == (
        "decay not judged: roc_auc could not be computed for champion v2: "
        "the window's labels hold one class (0): roc_auc needs both"
    )
    assert decision.to_dict()["performance_unavailable"] == summary.performance_unavailable


def promoted_drift() -> DriftResult:
    return DriftResult([ColumnDrift(f"c{i}", "numeric", "wasserstein", 0.0, 0.1, False) for i in range(10)])


# --------------------------------------------------------------------------- probability drift


def test_classifier_prediction_drift_uses_the_positive_class_probability(
    promoted: dict[str, MonitoringSummary],
) -> None:
    steady, confident = promoted["steady"], promoted["confident"]
    assert steady.prediction_drift_on == "proba__1" and steady.prediction_reference == "prediction"
    assert steady.prediction_drift is not None and steady.prediction_drift.kind == "numeric"
    assert not steady.prediction_drift.drifted
    # The class report takes the float label column and the positive-class probability.
    assert steady.notes == [] and steady.report_dir is not None
    assert (steady.report_dir / "performance.html").is_file()
    # Every probability moved towards "delayed": the distribution shifts, whatever the classes do.
    assert confident.prediction_drift is not None and confident.prediction_drift.drifted
    assert confident.prediction_drift.column == "prediction" and confident.prediction_drift_on == "proba__1"


def test_without_a_scored_reference_the_predicted_class_is_compared(promoted: dict[str, MonitoringSummary]) -> None:
    summary = promoted["unscored_reference"]
    assert summary.prediction_drift_on == "prediction" and summary.prediction_reference == "target"
    assert summary.prediction_drift is not None and summary.prediction_drift.kind == "categorical"
    assert "prediction drift on the predicted class: the reference holds no proba__1" in " ".join(summary.notes)


# --------------------------------------------------------------------------- null shares


def test_a_rising_null_share_is_a_data_quality_finding_with_its_own_alert(tmp_path: Path) -> None:
    reference = scored(flights(1200, seed=40), seed=41).rename(columns={"label": "delayed"})
    window = log_frame(scored(flights(1200, seed=42), seed=43), "1")
    window.loc[window.index % 4 == 0, "temperature"] = np.nan  # 25 %, never missing in training
    window.loc[window.index % 20 == 0, "visibility"] = np.nan  # 5 %: within the 10-point margin
    summary = run_monitoring(FLIGHTS, window, reference, "nulls", {"roc_auc": 0.85}, tmp_path, champion_version="1")
    assert summary.null_shares["temperature"].window == pytest.approx(0.25)
    assert summary.null_shares["temperature"].reference == 0.0
    assert summary.null_share_findings == [
        "null share of temperature rose to 25.0% from 0.0% in the reference "
        "(> monitoring.max_null_share_increase = 10%)"
    ]
    decision = decide(FLIGHTS, summary, Guards(now=NOW))
    assert decision.action == "none" and not decision.alert  # not a retrain, not a data bug
    assert decision.data_quality_alert and decision.data_quality == summary.null_share_findings
    assert f"data quality: {summary.null_share_findings[0]}" in decision.reasons
    subject, body, severity = data_quality_alert(decision.to_dict(), str(summary.report_dir))
    assert subject == "flight_delays: 1 data-quality finding (null share rising)" and severity == "warning"
    assert "null share of temperature rose to 25.0%" in body and "never retrains" in body
    assert headline_metrics(summary, decision)["null_share_findings"] == 1.0


def test_nulls_are_no_data_bug_when_the_service_imputes(
    ge_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
    february = raw[(raw["dteday"] >= "2011-02-01") & (raw["dteday"] < "2011-02-15")].reset_index(drop=True)
    log = february[BIKE.features.all].copy()
    log.loc[log.index % 5 == 0, "hum"] = np.nan  # complete in training: the suite expects no null
    log["prediction"], log["label"] = 100.0, february[BIKE.target].astype(float)
    path = tmp_path / "monitor_bike_sharing__nulls" / "window.parquet"
    path.parent.mkdir(parents=True)
    log.to_parquet(path, index=False)
    imputed = validate_window(BIKE, str(path))  # serving.missing defaults to impute
    assert imputed.passed is True, imputed.details
    monkeypatch.setattr("mlops.monitoring.window.missing_values_imputed", lambda use_case: False)
    refused = validate_window(BIKE, str(path), run_id="refuse")
    assert refused.passed is False and "expect_column_values_to_not_be_null(hum)" in refused.details


# --------------------------------------------------------------------------- label lag


def test_label_lag_is_the_labelled_share_and_the_median_delay() -> None:
    window = log_frame(scored(flights(100, seed=50), seed=51))
    window.loc[window.index >= 62, ["label", "label_arrived_at"]] = np.nan, pd.NaT
    window.loc[window.index < 31, "label_arrived_at"] = window["logged_at"] + pd.Timedelta(hours=4.2)
    lag = label_lag(window)
    assert lag is not None and lag.labelled_share == pytest.approx(0.62)
    assert lag.median_delay_hours == pytest.approx(3.1) and lag.delay_from == "logged_at"
    assert files.label_lag_line({"label_lag": {"labelled_share": 0.62, "median_delay_hours": 3.1}}) == (
        "labels: 62 % of the last window, median 3.1 h late"
    )
    # Without logged_at the delay runs from the event time; a naive arrival time is read as UTC.
    by_event = window.drop(columns=["logged_at"])
    by_event["label_arrived_at"] = by_event["label_arrived_at"].dt.tz_localize(None)
    lag_by_event = label_lag(by_event)
    assert lag_by_event is not None and lag_by_event.delay_from == "event_time"
    assert lag_by_event.median_delay_hours == pytest.approx(3.1 + 1 / 3600)
    # A log without arrival times: the share is known, the delay is not, and the summary says so.
    old = label_lag(window.drop(columns=["label_arrived_at"]))
    assert old is not None and old.median_delay_hours is None and "no label arrival time" in str(old.note)
    assert files.label_lag_line({"label_lag": {"labelled_share": 0.62, "median_delay_hours": None}}) == (
        "labels: 62 % of the last window, delay unknown"
    )


def test_the_label_lag_reaches_the_report_the_run_metrics_and_the_page(
    promoted: dict[str, MonitoringSummary],
) -> None:
    summary = promoted["judged_v2"]
    assert summary.label_lag is not None and summary.label_lag.median_delay_hours == pytest.approx(2.0)
    saved = json.loads((summary.report_dir / "summary.json").read_text())  # type: ignore[operator]
    assert saved["label_lag"]["labelled_share"] == pytest.approx(summary.label_lag.labelled_share)
    metrics = headline_metrics(summary, decide(FLIGHTS, summary, Guards(now=NOW)))
    assert metrics["labelled_share"] == summary.label_lag.labelled_share
    assert metrics["label_delay_median_hours"] == pytest.approx(2.0)
    # The page reads the newest complete run's summary.json.
    folder = summary.report_dir
    assert folder is not None
    latest = files.latest_summary(folder.parent.parent, "flight_delays")
    assert files.label_lag_line(latest) is not None and "median 2.0 h late" in str(files.label_lag_line(latest))
    assert files.latest_summary(folder.parent.parent, "nobody") is None
