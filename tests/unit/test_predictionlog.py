"""The prediction log and labels store, on Parquet folders and on SQLite."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from mlops.predictionlog.frames import META_COLUMNS, PredictionBatch, build_frame
from mlops.predictionlog.labels import write_labels
from mlops.predictionlog.predictions import append_predictions, read_predictions, replace_batch_partition
from mlops.predictionlog.stores import PredictionLogError


def _batch(ids: list[str], days: list[str], version: str = "1", source: str = "online", partition: str | None = None):
    return PredictionBatch(
        use_case="bike",
        model_name="bike_model",
        model_version=version,
        source=source,
        request_ids=ids,
        event_times=[datetime.fromisoformat(d) for d in days],
        predictions=[float(i) for i in range(len(ids))],
        features={"temp": [10.0 + i for i in range(len(ids))], "season": ["spring", None, "fall"][: len(ids)]},
        batch_partition=partition,
    )


@pytest.fixture(params=["parquet", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "parquet":
        return str(tmp_path / "predictions"), str(tmp_path / "labels")
    url = f"sqlite:///{tmp_path / 'log.db'}"
    return url, url


def test_append_and_read_window_on_event_time(stores: tuple[str, str]) -> None:
    uri, _ = stores
    append_predictions("bike", [_batch(["a", "b"], ["2011-05-01T08:00", "2011-05-02T09:00"])], uri=uri)
    append_predictions("bike", [_batch(["c"], ["2011-05-03T10:00"], version="2")], uri=uri)

    everything = read_predictions("bike", None, None, uri=uri)
    assert list(everything["request_id"]) == ["a", "b", "c"]
    assert set(META_COLUMNS) <= set(everything.columns)
    assert {"temp", "season"} <= set(everything.columns)
    assert list(everything["model_version"]) == ["1", "1", "2"]
    assert everything["season"].iloc[1] is None or pd.isna(everything["season"].iloc[1])

    # [start, end) on event time, whatever the logging time was.
    window = read_predictions("bike", "2011-05-02", "2011-05-03", uri=uri)
    assert list(window["request_id"]) == ["b"]
    assert read_predictions("bike", "2012-01-01", "2012-02-01", uri=uri).empty
    assert read_predictions("unknown_use_case", None, None, uri=uri).empty


def test_parquet_layout_is_partitioned_by_event_date(tmp_path: Path) -> None:
    uri = str(tmp_path / "log")
    append_predictions("bike", [_batch(["a", "b"], ["2011-05-01T08:00", "2011-05-02T09:00"])], uri=uri)
    folders = sorted(p.name for p in (tmp_path / "log" / "bike").iterdir())
    # `_schema` holds the types each model version logged (one small JSON per version).
    assert folders == ["_schema", "date=2011-05-01", "date=2011-05-02"]
    assert [p.name for p in (tmp_path / "log" / "bike" / "_schema").iterdir()][0].endswith(".json")
    assert not list((tmp_path / "log").rglob(".tmp-*"))


def test_a_file_still_being_written_is_not_read(tmp_path: Path) -> None:
    """A write in progress (hidden `.tmp-` name, half its bytes) is invisible to readers, not an error."""
    from mlops.predictionlog.lookup import find_prediction

    uri = str(tmp_path / "log")
    append_predictions("bike", [_batch(["a"], ["2011-05-01T08:00"])], uri=uri)
    half = tmp_path / "log" / "bike" / "date=2011-05-01" / ".tmp-online__1__abc.parquet"
    half.write_bytes(b"PAR1 half a file")
    assert list(read_predictions("bike", "2011-05-01", "2011-05-02", uri=uri)["request_id"]) == ["a"]
    found = find_prediction("a", ["bike"], uri=uri)
    assert found is not None and found["request_id"] == "a"


def test_batch_partition_rerun_replaces_instead_of_appending(stores: tuple[str, str]) -> None:
    uri, _ = stores
    days = ["2011-05-01T00:00", "2011-05-01T01:00", "2011-05-02T00:00"]
    first = _batch(["x1", "x2", "x3"], days, source="batch", partition="2011-05-01")
    assert replace_batch_partition("bike", "2011-05-01", first, uri=uri) == 0
    other = _batch(["y1"], ["2011-05-01T05:00"], source="batch", partition="2011-05-01-other")
    replace_batch_partition("bike", "2011-05-01-other", other, uri=uri)
    append_predictions("bike", [_batch(["o1"], ["2011-05-01T03:00"])], uri=uri)

    again = _batch(["x1", "x2", "x3"], days, version="2", source="batch", partition="2011-05-01")
    assert replace_batch_partition("bike", "2011-05-01", again, uri=uri) == 3

    frame = read_predictions("bike", None, None, uri=uri)
    assert sorted(frame["request_id"]) == ["o1", "x1", "x2", "x3", "y1"]
    assert set(frame.loc[frame["batch_partition"] == "2011-05-01", "model_version"]) == {"2"}


def test_labels_join_by_id_and_latest_arrival_wins(stores: tuple[str, str], tmp_path: Path, monkeypatch) -> None:
    uri, labels_uri = stores
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))  # settings.labels_dir for the Parquet case
    append_predictions("bike", [_batch(["a", "b", "c"], ["2011-05-01T08:00"] * 3)], uri=uri)
    write_labels("bike", ["a", "b"], [5, 7], ["2011-05-01T08:00"] * 2, uri=labels_uri, arrived_at=datetime(2011, 5, 2))
    write_labels("bike", ["b"], [8], ["2011-05-01T08:00"], uri=labels_uri, arrived_at=datetime(2011, 5, 3))

    frame = read_predictions("bike", "2011-05-01", "2011-05-02", with_labels=True, uri=uri, labels_uri=labels_uri)
    labels = dict(zip(frame["request_id"], frame["label"], strict=True))
    assert labels["a"] == 5 and labels["b"] == 8 and math.isnan(labels["c"])
    assert frame["label"].dtype.kind == "f"


def test_labels_default_to_settings_labels_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLOPS_PREDICTION_LOG_URI", raising=False)
    append_predictions("bike", [_batch(["a"], ["2011-05-01T08:00"])])
    write_labels("bike", ["a"], [3.0], ["2011-05-01T08:00"])
    assert (tmp_path / "home" / "labels" / "bike" / "date=2011-05-01").is_dir()
    assert (tmp_path / "home" / "predictions" / "bike" / "date=2011-05-01").is_dir()
    assert read_predictions("bike", "2011-05-01", "2011-05-02", with_labels=True)["label"].tolist() == [3.0]


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        write_labels("bike", ["a", "b"], [1], ["2011-05-01"], uri=str(tmp_path))
    with pytest.raises(ValueError, match="source must be one of"):
        append_predictions("bike", [_batch(["a"], ["2011-05-01"], source="nightly")], uri=str(tmp_path))
    with pytest.raises(ValueError, match="ISO date"):
        read_predictions("bike", "yesterday", None, uri=str(tmp_path))


def test_unwritable_store_raises_prediction_log_error(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log folder should be")
    with pytest.raises(PredictionLogError, match="cannot write 1 predictions of bike"):
        append_predictions("bike", [_batch(["a"], ["2011-05-01"])], uri=str(blocker))


def test_log_columns_keep_their_types_whatever_each_batch_holds(tmp_path: Path) -> None:
    """Without declared types: integers stay integers (nullable `Int64` once padded), booleans stay
    booleans, other numbers become float64 (None as NaN), text stays text; a feature a batch lacks is padded."""

    def batch(features: dict[str, list], predictions: list, hour: int) -> PredictionBatch:
        return PredictionBatch(
            use_case="uc", model_name="m", model_version="1", source="online",
            request_ids=[f"r{hour}-{i}" for i in range(3)],
            event_times=[datetime(2011, 3, 1, hour, i) for i in range(3)],
            predictions=predictions, features=features,
        )  # fmt: skip

    first = batch(
        {
            "temp": [1.5, None, 3.0],
            "count": [1, 2, 3],
            "flag": [True, False, True],
            "empty": [None, None, None],
            "season": ["spring", None, "fall"],
            "code": ["01", "02", "03"],
            "mixed": ["1.5", 2.0, None],
            "messy": ["x", 2.0, None],
        },
        [0, 1, 1],
        hour=8,
    )
    second = batch({"temp": [4.0, 5.0, 6.0]}, [1, 0, 1], hour=9)
    frame = build_frame([first, second], datetime(2026, 11, 23))

    assert list(frame.columns[: len(META_COLUMNS)]) == list(META_COLUMNS)
    dtypes = {name: str(frame[name].dtype) for name in frame.columns}
    assert {name: dtypes[name] for name in ("temp", "mixed")} == dict.fromkeys(("temp", "mixed"), "float64")
    assert (dtypes["count"], dtypes["flag"], dtypes["prediction"]) == ("Int64", "boolean", "int64")
    assert {name: dtypes[name] for name in ("empty", "season", "code", "messy", "request_id")} == dict.fromkeys(
        ("empty", "season", "code", "messy", "request_id"), "object"
    )
    assert dtypes["event_time"].startswith("datetime64") and dtypes["logged_at"].startswith("datetime64")
    temp = frame["temp"].tolist()
    assert temp[0] == 1.5 and math.isnan(temp[1]) and temp[2] == 3.0
    assert frame["flag"].tolist()[:3] == [True, False, True]
    assert frame["count"].tolist()[:3] == [1, 2, 3] and frame["count"].isna().sum() == 3
    assert frame["code"].tolist()[:3] == ["01", "02", "03"]  # identifiers that look like numbers stay text
    assert frame["mixed"].tolist()[:2] == [1.5, 2.0]
    assert frame["messy"].tolist()[:2] == ["x", 2.0]
    # The second batch has no such features: padded with missing values, rows stay aligned.
    assert frame["season"].tolist() == ["spring", None, "fall", None, None, None]
    assert frame["temp"].tolist()[3:] == [4.0, 5.0, 6.0]

    labels = batch({"temp": [1.0, 2.0, 3.0]}, ["yes", "no", "yes"], hour=10)
    assert build_frame([labels], datetime(2026, 11, 23))["prediction"].tolist() == ["yes", "no", "yes"]

    # Two appends of the same shape read back as one table with these types.
    uri = str(tmp_path / "predictions")
    append_predictions("uc", [second], uri=uri)
    append_predictions("uc", [batch({"temp": [None, 8.0, 9.0]}, [1, 1, 0], hour=11)], uri=uri)
    back = read_predictions("uc", None, None, uri=uri)
    assert len(back) == 6 and str(back["temp"].dtype) == "float64" and back["temp"].isna().sum() == 1


def _replace_slowly(uri: str, partition: str, ids: list[str]) -> None:
    replace_batch_partition("bike", partition, _batch(ids, ["2011-05-01"] * len(ids), source="batch",
                                                         partition=partition), uri=uri)  # fmt: skip


@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_overlapping_replacements_of_one_partition_leave_it_once(
    runner: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call builds its own store (as every caller does through prediction_store()), so only a
    lock on the folder can serialise them. A slow listing of the old files opens the window
    in which both replacements find nothing to delete and both rename their files in."""
    import multiprocessing
    import threading
    import time

    original = Path.glob

    def slow_glob(self: Path, pattern: str, *args: object, **kwargs: object) -> object:
        found = list(original(self, pattern, *args, **kwargs))  # type: ignore[arg-type]
        if pattern.startswith("date=*/batch__"):
            time.sleep(0.5)
        return iter(found)

    monkeypatch.setattr(Path, "glob", slow_glob)
    uri = str(tmp_path / "log")
    jobs = [(uri, "2011-05-01", ["a", "b"]), (uri, "2011-05-01", ["c", "d"])]
    if runner == "threads":
        workers: list = [threading.Thread(target=_replace_slowly, args=job) for job in jobs]
    else:
        workers = [multiprocessing.get_context("fork").Process(target=_replace_slowly, args=job) for job in jobs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    if runner == "processes":
        assert [w.exitcode for w in workers] == [0, 0]

    logged = read_predictions("bike", None, None, uri=uri)
    assert sorted(logged["request_id"]) in (["a", "b"], ["c", "d"]), sorted(logged["request_id"])
