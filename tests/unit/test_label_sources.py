"""Label files landed in a folder and labels returned by an SQL query, written with the same idempotency."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from mlops.config import Labels, LabelsQuery, UseCase, find_use_case
from mlops.predictionlog.frames import PredictionBatch
from mlops.predictionlog.label_sources import LabelSourceError, ingest_landing, ingest_query
from mlops.predictionlog.labels import read_labels
from mlops.predictionlog.predictions import append_predictions


@pytest.fixture
def bike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UseCase:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", str(tmp_path / "log"))
    batch = PredictionBatch(
        use_case="bike_sharing", model_name="m", model_version="1", source="online",
        request_ids=["007", "a", "b"], event_times=[datetime(2011, 5, 1, 8)] * 3,
        predictions=[1.0] * 3, features={},
    )  # fmt: skip
    append_predictions("bike_sharing", [batch])
    return find_use_case("bike_sharing")


def test_the_default_landing_folder_is_under_mlops_home(bike: UseCase, tmp_path: Path) -> None:
    assert bike.labels_landing_dir == tmp_path / "home" / "landing" / "labels" / "bike_sharing"
    assert bike.labels.schedule == "@hourly" and bike.labels.sql is None


def test_good_files_are_written_and_moved_to_done_bad_ones_rejected_with_the_reason(bike: UseCase) -> None:
    landing = bike.labels_landing_dir
    landing.mkdir(parents=True)
    (landing / "good.csv").write_text("id,label\n007,12\na,3.5\nghost,1\n")
    pd.DataFrame({"id": ["b"], "label": [4.0], "event_time": ["2011-05-01T09:00"]}).to_parquet(landing / "more.parquet")
    (landing / "no_label.csv").write_text("id,value\na,1\n")
    (landing / "bad_row.csv").write_text("id,label\na,1\nb,lots\n")
    (landing / "notes.txt").write_text("not a label file")

    report = ingest_landing(bike)
    totals = report.totals()
    assert (totals["written"], totals["replaced"], totals["unknown"]) == (4, 0, 1)
    assert totals["unknown_ids"] == ["ghost"] and totals["files_rejected"] == ["bad_row.csv", "no_label.csv"]
    assert sorted(p.name for p in (landing / "done").iterdir()) == ["good.csv", "more.parquet"]
    reason = (landing / "rejected" / "no_label.csv.reason.txt").read_text()
    assert "label: column missing; add a label column (columns given: id, value)" in reason
    bad = (landing / "rejected" / "bad_row.csv.reason.txt").read_text()
    assert "line 3 (id 'b') label: 'lots' is not a number" in bad  # line 1 is the header
    assert (landing / "notes.txt").exists()  # not a label file: left alone
    failure = report.failure()
    assert failure is not None and "2 label file(s) of bike_sharing rejected" in failure and "bad_row.csv" in failure
    stored = read_labels(bike).set_index("request_id")["label"].to_dict()
    assert stored == {"007": 12.0, "a": 3.5, "b": 4.0, "ghost": 1.0}  # the bad files wrote nothing

    # The same file landed again replaces its labels; done/ keeps both copies.
    (landing / "good.csv").write_text("id,label\n007,13\na,3.5\nghost,1\n")
    again = ingest_landing(bike).totals()
    assert (again["written"], again["replaced"], again["files_done"]) == (3, 3, 1)
    assert len(list((landing / "done").glob("good*.csv"))) == 2
    assert read_labels(bike).set_index("request_id")["label"]["007"] == 13.0


def test_an_unreadable_file_is_rejected(bike: UseCase) -> None:
    landing = bike.labels_landing_dir
    landing.mkdir(parents=True)
    (landing / "broken.parquet").write_bytes(b"not parquet")
    report = ingest_landing(bike)
    assert [Path(f.moved_to).name for f in report.rejected] == ["broken.parquet"]
    assert "cannot be read as parquet" in (landing / "rejected" / "broken.parquet.reason.txt").read_text()


def _with_query(use_case: UseCase, query: str) -> UseCase:
    return use_case.model_copy(update={"labels": Labels(sql=LabelsQuery(conn_id="labels_db", query=query))})


def test_an_sql_query_is_written_with_its_interval_bound(bike: UseCase, tmp_path: Path) -> None:
    db = tmp_path / "truth.sqlite"
    with closing(sqlite3.connect(db)) as connection:
        rows = pd.DataFrame({"request_id": ["a", "b", "zzz"], "label": [1.0, 2.0, 3.0],
                             "observed": ["2011-05-01 10:00", "2011-05-02 10:00", "2011-05-01 11:00"]})  # fmt: skip
        rows.to_sql("truth", connection, index=False)
    query = (
        "SELECT request_id AS id, label, observed AS event_time FROM truth WHERE observed >= :start AND observed < :end"
    )
    use_case = _with_query(bike, query)
    result = ingest_query(use_case, f"sqlite:///{db}", start=datetime(2011, 5, 1), end=datetime(2011, 5, 2))
    assert (result.written, result.replaced, result.unknown_ids) == (2, 0, ["zzz"])
    again = ingest_query(use_case, f"sqlite:///{db}", start=datetime(2011, 5, 1), end=datetime(2011, 5, 3))
    assert (again.written, again.replaced) == (3, 2)
    assert sorted(read_labels(bike)["request_id"]) == ["a", "b", "zzz"]

    with pytest.raises(LabelSourceError, match="uses :end, :start, which this run has no value for"):
        ingest_query(use_case, f"sqlite:///{db}")
    with pytest.raises(LabelSourceError, match="returned bad labels, none written: .*column missing"):
        ingest_query(_with_query(bike, "SELECT request_id AS id FROM truth"), f"sqlite:///{db}")
    with pytest.raises(LabelSourceError, match="failed: .*no such table"):
        ingest_query(_with_query(bike, "SELECT * FROM nowhere"), f"sqlite:///{db}")
