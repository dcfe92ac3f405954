"""The prediction service's log writer: a poison entry is rejected alone, a failing store is retried."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from polling import wait_until

from mlops.predictionlog.predictions import read_predictions
from mlops.serving.logentry import LogEntry
from mlops.serving.logwriter import PredictionLogWriter


def _entry(request_id: str, event_time: datetime, temp: float = 10.0) -> LogEntry:
    return LogEntry(
        use_case="bike",
        model_name="bike_model",
        model_version="1",
        source="online",
        ids=[request_id],
        event_times=[event_time],
        names=["temp", "season"],
        rows=[[temp, "spring"]],
        predictions=[temp * 2],
    )


@pytest.fixture
def writer(tmp_path: Path):
    writer = PredictionLogWriter(str(tmp_path / "log"), flush_seconds=0.05, retry_seconds=0.05)
    yield writer
    writer.stop(timeout=5)


def test_an_entry_that_cannot_become_log_rows_is_rejected_alone(writer: PredictionLogWriter) -> None:
    # Submitted before the thread starts, so all three land in the same flush and the
    # poison entry shares its use case's batch with the good ones.
    writer.submit(_entry("good-1", datetime(2011, 5, 1, 8)))
    # The year 3000 is a valid datetime but not a pandas timestamp: build_frame raises.
    writer.submit(_entry("poison", datetime(3000, 1, 1)))
    writer.submit(_entry("good-2", datetime(2011, 5, 2, 9)))
    writer.start()
    wait_until(lambda: writer.written_rows == 2, 10, "the two good rows in the log")

    logged = read_predictions("bike", None, None, uri=writer.uri)
    assert sorted(logged["request_id"]) == ["good-1", "good-2"]
    stats = writer.stats()
    assert stats["rejected_rows"] == 1 and stats["dropped_rows"] == 0 and stats["pending_rows"] == 0
    assert "'poison'" in stats["last_rejection"] and "OutOfBoundsDatetime" in stats["last_rejection"]
    assert not stats["failing"] and not writer.degraded()

    # The log keeps flowing after the rejection.
    writer.submit(_entry("good-3", datetime(2011, 5, 3, 10)))
    wait_until(lambda: writer.written_rows == 3, 10, "a later entry in the log")
    assert writer.rejected_rows == 1


def test_a_failing_store_keeps_the_rows_and_retries_them(writer: PredictionLogWriter) -> None:
    root = Path(str(writer.uri))
    root.mkdir(parents=True)
    blocker = root / "bike"
    blocker.write_text("a file where the use case's folder belongs: every write fails")
    writer.submit(_entry("held-1", datetime(2011, 5, 1, 8)))
    writer.submit(_entry("held-2", datetime(2011, 5, 1, 9)))
    writer.start()
    wait_until(lambda: writer.failing and writer.pending_rows == 2, 10, "the writer to hold both rows")
    time.sleep(0.3)  # several retries
    assert writer.failing and writer.pending_rows == 2 and writer.written_rows == 0
    assert writer.rejected_rows == 0 and writer.dropped_rows == 0

    blocker.unlink()
    wait_until(lambda: writer.written_rows == 2, 10, "the held rows after the store recovered")
    assert not writer.failing and writer.pending_rows == 0 and writer.rejected_rows == 0
    assert sorted(read_predictions("bike", None, None, uri=writer.uri)["request_id"]) == ["held-1", "held-2"]


def test_an_unexpected_error_in_writing_is_retried_and_the_writer_lives_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a PredictionLogError (a bug, a bad URI): the rows wait and the thread keeps serving."""
    from mlops.serving import logwriter

    real_append = logwriter.append_frame
    calls = {"n": 0}

    def flaky_append(*args: object, **kwargs: object) -> int:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise KeyError("something nobody expected")
        return real_append(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(logwriter, "append_frame", flaky_append)
    writer = PredictionLogWriter(str(tmp_path / "log"), flush_seconds=0.05, retry_seconds=0.05)
    writer.start()
    try:
        writer.submit(_entry("first", datetime(2011, 5, 1, 8)))
        wait_until(lambda: writer.written_rows == 1, 10, "the row written once the error stops")
        assert "something nobody expected" in (writer.stats()["last_error"] or "")
        writer.submit(_entry("second", datetime(2011, 5, 1, 9)))
        wait_until(lambda: writer.written_rows == 2, 10, "a later row, so the thread is still alive")
    finally:
        writer.stop(timeout=5)
    assert sorted(read_predictions("bike", None, None, uri=writer.uri)["request_id"]) == ["first", "second"]
    assert writer.stats()["failing"] is False
