"""One prediction found by its request id, in a Parquet log and in an SQL log (for `mlops lineage`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from mlops.predictionlog.frames import PredictionBatch
from mlops.predictionlog.lookup import find_prediction
from mlops.predictionlog.predictions import append_predictions


def batch(ids: list[str], day: str, prediction: float, version: str = "1") -> PredictionBatch:
    return PredictionBatch(
        use_case="bike", model_name="bike_model", model_version=version, source="online", request_ids=ids,
        event_times=[datetime.fromisoformat(day)] * len(ids), predictions=[prediction] * len(ids),
        features={"temp": [12.5] * len(ids), "season": ["spring"] * len(ids)},
    )  # fmt: skip


@pytest.fixture(params=["parquet", "sql"])
def log_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "log") if request.param == "parquet" else f"sqlite:///{tmp_path / 'log.db'}"


def test_a_prediction_is_found_by_its_id_in_any_partition(log_uri: str) -> None:
    append_predictions("bike", [batch(["a", "b"], "2011-03-01T08:00", 10.0)], uri=log_uri,
                       logged_at=datetime(2026, 1, 1, 9))  # fmt: skip
    append_predictions("bike", [batch(["c"], "2011-04-02T08:00", 20.0, version="2")], uri=log_uri,
                       logged_at=datetime(2026, 1, 2, 9))  # fmt: skip
    found = find_prediction("c", ["other", "bike"], uri=log_uri)
    assert found is not None
    assert (found["use_case"], found["model_version"], found["prediction"]) == ("bike", "2", 20.0)
    assert found["event_time"].startswith("2011-04-02T08:00") and found["logged_at"].startswith("2026-01-02T09:00")
    assert found["columns"] == {"temp": 12.5, "season": "spring"}
    assert find_prediction("nope", ["bike"], uri=log_uri) is None
    assert find_prediction("a", ["other"], uri=log_uri) is None  # only the use cases asked


def test_an_id_logged_twice_gives_the_latest(log_uri: str) -> None:
    append_predictions("bike", [batch(["r"], "2011-03-01T08:00", 1.0)], uri=log_uri, logged_at=datetime(2026, 1, 1))
    append_predictions("bike", [batch(["r"], "2011-03-01T08:00", 2.0)], uri=log_uri, logged_at=datetime(2026, 1, 3))
    found = find_prediction("r", ["bike"], uri=log_uri)
    assert found is not None and found["prediction"] == 2.0
