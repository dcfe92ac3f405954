"""Labels from production: validation, idempotent writes, unmatched ids, the join, on Parquet and on SQLite."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from mlops.config import Labels, UseCase, find_use_case
from mlops.predictionlog.frames import PredictionBatch
from mlops.predictionlog.labels import LabelError, read_labels, validate_labels, write_labels
from mlops.predictionlog.predictions import append_predictions, read_predictions


@pytest.fixture(params=["parquet", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(log uri, labels uri); the Parquet log is also the default one, as the service and the DAG use it."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    if request.param == "parquet":
        log = str(tmp_path / "predictions")
        monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", log)
        return log, str(tmp_path / "labels")
    url = f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", url)
    return url, url


@pytest.fixture(scope="module")
def bike() -> UseCase:
    return find_use_case("bike_sharing")


@pytest.fixture(scope="module")
def cancer() -> UseCase:
    return find_use_case("breast_cancer")


def _log(use_case: str, ids: list[str], times: list[str], uri: str, proba: bool = False) -> None:
    features: dict[str, list[float]] = {"temp": [10.0] * len(ids)}
    if proba:  # what the service logs for a classifier: one probability column per class
        features |= {"proba__0": [0.3] * len(ids), "proba__1": [0.7] * len(ids)}
    batch = PredictionBatch(
        use_case=use_case,
        model_name="m",
        model_version="1",
        source="online",
        request_ids=ids,
        event_times=[datetime.fromisoformat(t) for t in times],
        predictions=[1 if proba else 5.0] * len(ids),
        features=features,
    )
    append_predictions(use_case, [batch], uri=uri)


def _labels(frame: pd.DataFrame) -> dict[str, object]:
    return dict(zip(frame["request_id"], frame["label"], strict=True))


def test_a_resent_label_replaces_and_is_never_doubled(stores: tuple[str, str], bike: UseCase) -> None:
    log, labels = stores
    _log("bike_sharing", ["a", "b", "c"], ["2011-05-01T08:00"] * 3, log)
    first = write_labels(bike, ["a", "b"], [5, 7], uri=labels, arrived_at=datetime(2011, 5, 2))
    assert first.to_dict() == {"written": 2, "replaced": 0, "unknown_ids": []}
    again = write_labels(bike, ["b", "a"], [8, 5], uri=labels, arrived_at=datetime(2011, 5, 3))
    assert (again.written, again.replaced) == (2, 2)
    assert write_labels(bike, ["b"], [9], uri=labels, arrived_at=datetime(2011, 5, 4)).replaced == 1

    stored = read_labels(bike, None, None, uri=labels)
    assert sorted(stored["request_id"]) == ["a", "b"]  # one row per id, whatever was re-sent
    window = read_predictions(bike, "2011-05-01", "2011-05-02", with_labels=True, uri=log, labels_uri=labels)
    assert _labels(window)["a"] == 5 and _labels(window)["b"] == 9 and math.isnan(_labels(window)["c"])
    arrived = dict(zip(window["request_id"], window["label_arrived_at"], strict=True))
    assert arrived["b"] == pd.Timestamp("2011-05-04") and pd.isna(arrived["c"])
    assert window["label"].dtype.kind == "f" and window["label_arrived_at"].dtype.kind == "M"


def test_resending_does_not_grow_the_parquet_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bike: UseCase):
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", str(tmp_path / "log"))
    _log("bike_sharing", [f"r{i}" for i in range(50)], ["2011-05-01T08:00"] * 50, str(tmp_path / "log"))
    for round_ in range(5):
        write_labels(bike, [f"r{i}" for i in range(50)], [float(round_)] * 50, uri=str(tmp_path / "labels"))
    files = list((tmp_path / "labels" / "bike_sharing").rglob("*.parquet"))
    rows = sum(len(pd.read_parquet(f)) for f in files)
    assert rows == 50 and len(files) <= 2


def test_label_event_time_defaults_to_the_prediction_and_partitions_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bike: UseCase
) -> None:
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", str(tmp_path / "log"))
    _log("bike_sharing", ["a", "b"], ["2011-05-01T08:00", "2011-05-03T09:00"], str(tmp_path / "log"))
    # b's label is stamped days after its prediction (it was observed later): it still sits and joins beside it.
    write_labels(bike, ["a", "b"], [1.0, 2.0], [None, "2011-05-09T00:00"], uri=str(tmp_path / "labels"))
    base = tmp_path / "labels" / "bike_sharing"
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == ["date=2011-05-01", "date=2011-05-03"]
    stored = read_labels(bike, uri=str(tmp_path / "labels")).set_index("request_id")
    assert stored.loc["a", "event_time"] == pd.Timestamp("2011-05-01T08:00")
    assert stored.loc["b", "event_time"] == pd.Timestamp("2011-05-09")
    window = read_predictions(bike, "2011-05-03", "2011-05-04", with_labels=True, labels_uri=str(tmp_path / "labels"))
    assert _labels(window) == {"b": 2.0}


def test_unknown_ids_are_counted_kept_and_join_once_the_prediction_arrives(
    stores: tuple[str, str], bike: UseCase
) -> None:
    log, labels = stores
    _log("bike_sharing", ["a"], ["2011-05-01T08:00"], log)
    result = write_labels(bike, ["a", "late-1", "late-2"], [1.0, 2.0, 3.0], uri=labels)
    assert result.written == 3 and result.unknown_ids == ["late-1", "late-2"]
    window = read_predictions(bike, "2011-05-01", "2011-05-02", with_labels=True, uri=log, labels_uri=labels)
    assert _labels(window) == {"a": 1.0}

    _log("bike_sharing", ["late-1", "late-2"], ["2011-05-01T09:00", "2011-06-01T09:00"], log)
    window = read_predictions(bike, "2011-05-01", "2011-05-02", with_labels=True, uri=log, labels_uri=labels)
    assert _labels(window) == {"a": 1.0, "late-1": 2.0}
    # Re-sent now that its prediction is logged, the unmatched label moves beside it: still one label.
    again = write_labels(bike, ["late-2"], [4.0], uri=labels)
    assert again.unknown_ids == [] and again.replaced == 1
    june = read_predictions(bike, "2011-06-01", "2011-06-02", with_labels=True, uri=log, labels_uri=labels)
    assert _labels(june) == {"late-2": 4.0}
    assert read_labels(bike, None, None, uri=labels)["request_id"].tolist().count("late-2") == 1


def test_regression_labels_must_be_finite_numbers(stores: tuple[str, str], bike: UseCase) -> None:
    log, labels = stores
    _log("bike_sharing", ["a", "b", "c"], ["2011-05-01T08:00"] * 3, log)
    with pytest.raises(LabelError) as refused:
        write_labels(bike, ["a", "b", "c"], [1.0, "many", float("inf")], uri=labels)
    message = str(refused.value)
    assert "row 1 (id 'b') label: 'many' is not a number" in message
    assert "row 2 (id 'c') label: inf is not finite" in message
    assert "refused 2 of 3 labels (nothing of the batch was written)" in message
    assert read_labels(bike, None, None, uri=labels).empty  # a's good label was not written either


def test_class_labels_come_from_the_config_class_set(stores: tuple[str, str], cancer: UseCase) -> None:
    log, labels = stores
    use_case = cancer.model_copy(update={"labels": Labels(classes=[0, 1])})
    _log("breast_cancer", ["a", "b", "c"], ["2011-05-01T08:00"] * 3, log)
    with pytest.raises(LabelError, match=r"row 1 \(id 'b'\) label: 2 is not one of the classes \[0, 1\]"):
        write_labels(use_case, ["a", "b"], [1, 2], uri=labels)
    # 1.0 and "0" name the classes 1 and 0: stored as the model predicts them, integers.
    assert write_labels(use_case, ["a", "b"], [1.0, "0"], uri=labels).written == 2
    window = read_predictions(use_case, None, None, with_labels=True, uri=log, labels_uri=labels)
    assert _labels(window)["a"] == 1 and _labels(window)["b"] == 0


def test_class_set_defaults_to_the_logged_probability_columns(stores: tuple[str, str], cancer: UseCase) -> None:
    log, labels = stores
    _log("breast_cancer", ["a", "b"], ["2011-05-01T08:00"] * 2, log, proba=True)
    with pytest.raises(LabelError, match=r"'benign' is not one of the classes \[0, 1\]"):
        write_labels(cancer, ["a"], ["benign"], uri=labels)
    assert write_labels(cancer, ["a", "b"], [1, 0], uri=labels).written == 2


def test_a_label_before_its_prediction_is_refused_naming_the_id(stores: tuple[str, str], bike: UseCase) -> None:
    log, labels = stores
    _log("bike_sharing", ["a", "b"], ["2011-05-01T08:00"] * 2, log)
    with pytest.raises(LabelError) as refused:
        write_labels(bike, ["a", "b"], [1.0, 2.0], ["2011-05-01T08:00", "2011-05-01T07:59"], uri=labels)
    assert "row 1 (id 'b') event_time: 2011-05-01T07:59:00 is before its prediction's event time" in str(refused.value)
    assert "leave event_time out" in str(refused.value)


def test_duplicated_ids_in_one_batch_are_refused(stores: tuple[str, str], bike: UseCase) -> None:
    log, labels = stores
    _log("bike_sharing", ["a", "b"], ["2011-05-01T08:00"] * 2, log)
    with pytest.raises(LabelError, match=r"row 2 \(id 'a'\) id: appears in rows 0 and 2; send one label per id"):
        write_labels(bike, ["a", "b", "a"], [1.0, 2.0, 3.0], uri=labels)


def test_missing_columns_and_fields_are_named(bike: UseCase, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", str(tmp_path / "log"))
    with pytest.raises(LabelError, match=r"label: column missing; add a label column \(columns given: id, value\)"):
        validate_labels(bike, pd.DataFrame({"id": ["a"], "value": [1.0]}))
    with pytest.raises(LabelError, match=r"id: column missing; add an id \(or request_id\) column"):
        validate_labels(bike, pd.DataFrame({"label": [1.0]}))
    frame = pd.DataFrame({"request_id": ["a", None], "label": [None, 2.0], "event_time": ["2011-05-01", "soon"]})
    with pytest.raises(LabelError) as refused:
        validate_labels(bike, frame)
    message = str(refused.value)
    assert "row 0 (id 'a') label: missing" in message
    assert "row 1 id: missing; send the request id" in message
    assert "row 1 event_time: 'soon' is not an ISO date" in message


def test_validate_returns_the_rows_as_stored(tmp_path: Path, monkeypatch, bike: UseCase) -> None:
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", str(tmp_path / "log"))
    _log("bike_sharing", ["7"], ["2011-05-01T08:00"], str(tmp_path / "log"))
    frame = validate_labels(bike, pd.DataFrame({"id": [7, 8], "label": ["12", 3]}))
    assert frame["request_id"].tolist() == ["7", "8"]
    assert frame["label"].tolist() == [12.0, 3.0]
    assert frame["prediction_time"].iloc[0] == pd.Timestamp("2011-05-01T08:00") and pd.isna(
        frame["prediction_time"].iloc[1]
    )


def test_settling_moves_matched_labels_out_of_unmatched(stores: tuple[str, str], bike: UseCase) -> None:
    from mlops.predictionlog.labels import settle_unmatched

    log, labels = stores
    assert write_labels(bike, ["early", "never"], [1.0, 2.0], uri=labels).unknown_ids == ["early", "never"]
    _log("bike_sharing", ["early"], ["2011-05-01T08:00"], log)
    assert settle_unmatched(bike, uri=labels, log_uri=log) == 1
    assert settle_unmatched(bike, uri=labels, log_uri=log) == 0  # nothing left to move but "never"
    stored = read_labels(bike, None, None, uri=labels).set_index("request_id")
    assert stored.loc["early", "prediction_time"] == pd.Timestamp("2011-05-01T08:00")
    assert stored.loc["early", "event_time"] == pd.Timestamp("2011-05-01T08:00")
    assert pd.isna(stored.loc["never", "prediction_time"])
    # Moved, it is read by its window's partition; a re-send replaces it there.
    assert write_labels(bike, ["early"], [3.0], uri=labels).replaced == 1
    window = read_predictions(bike, "2011-05-01", "2011-05-02", with_labels=True, uri=log, labels_uri=labels)
    assert _labels(window) == {"early": 3.0}
