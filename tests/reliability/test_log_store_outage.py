"""Fault 2: the prediction-log store is unavailable for a while.

tests/integration/test_serving.py already blocks the Parquet folder and sees the
service degrade and recover. Here the store is an SQL database (SQLite) locked
by another connection, as a long migration or a backup would hold it:
the service keeps answering, reports `degraded`, and writes everything it held
once the lock goes; and the writer's buffer stays within its bound when the
outage outlasts it, counting what it sheds.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from polling import wait_until
from test_serving import bc_record, breast_cancer_frame, classifier, register, start_service, write_configs

from mlops.predictionlog.predictions import read_predictions
from mlops.serving.logentry import LogEntry
from mlops.serving.logwriter import PredictionLogWriter

pytestmark = pytest.mark.integration


@contextmanager
def locked(db: Path) -> Iterator[None]:
    """Hold an exclusive lock on the SQLite file: every other writer (and reader) waits, then fails."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_service_answers_through_a_locked_sql_log_and_writes_everything_after(
    mlflow_server: str, tmp_path: Path
) -> None:
    names = write_configs(tmp_path / "configs", f"sqllog{uuid.uuid4().hex[:6]}")
    features, _ = breast_cancer_frame()
    register(names["breast_cancer"], classifier(1.0), features)
    db = tmp_path / "log.db"
    uri = f"sqlite:///{db}"
    service = start_service(tmp_path, tmp_path / "configs", uri, "--use-case", "breast_cancer",  # type: ignore[arg-type]
                            "--log-flush-seconds", "0.2")  # fmt: skip
    url = service.url
    tag = uuid.uuid4().hex[:6]
    before = [f"pre-{tag}-{i}" for i in range(5)]
    during = [f"outage-{tag}-{i}" for i in range(20)]

    def post(request_id: str) -> httpx.Response:
        return httpx.post(f"{url}/predict/breast_cancer", json={"record": bc_record(features, 1), "id": request_id})

    try:
        for request_id in before:
            assert post(request_id).status_code == 200
        wait_until(lambda: httpx.get(f"{url}/health").json()["log"]["written_rows"] >= 5, what="the table to exist")

        with locked(db):
            started = time.monotonic()
            for request_id in during:
                response = post(request_id)
                assert response.status_code == 200, response.text

            def degraded_holding_all() -> bool:
                log = httpx.get(f"{url}/health").json()
                held = log["log"]["pending_rows"] + log["log"]["queue_depth"]
                return log["status"] == "degraded" and held >= len(during)

            wait_until(degraded_holding_all, timeout=60, what="degraded health holding every row")
            seconds_to_degraded = time.monotonic() - started
            health = httpx.get(f"{url}/health").json()
            assert health["log"]["failing"] and "locked" in health["log"]["last_error"]
            assert str(db) in health["log"]["last_error"]  # the message names the store
            # Degraded is about the log only: the service is ready and answers.
            assert httpx.get(f"{url}/ready").status_code == 200
            assert post(f"late-{tag}").status_code == 200
        released = time.monotonic()
        wait_until(lambda: httpx.get(f"{url}/health").json()["status"] == "ok", timeout=60, what="recovery")
        seconds_to_recover = time.monotonic() - released
        health = httpx.get(f"{url}/health").json()
        assert health["log"]["pending_rows"] == 0 and health["log"]["dropped_rows"] == 0
    finally:
        service.stop()
    frame = read_predictions("breast_cancer", None, None, uri=uri)
    ids = list(frame["request_id"])
    assert set(before + during + [f"late-{tag}"]) <= set(ids)
    assert len(ids) == len(set(ids)), "a retried write duplicated rows"
    print(f"sql log locked: degraded after {seconds_to_degraded:.1f} s, recovered {seconds_to_recover:.1f} s after")


def _entry(i: int) -> LogEntry:
    return LogEntry(
        use_case="bounded", model_name="m", model_version="1", source="online", ids=[f"row-{i}"],
        event_times=[datetime(2011, 5, 1, 8)], names=["x"], rows=[[float(i)]], predictions=[0.5],
    )  # fmt: skip


def test_buffer_stays_bounded_through_a_long_outage_and_accounts_for_every_row(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    # A short busy timeout so each failed attempt costs half a second, not SQLite's 5 s.
    uri = f"sqlite:///{db}?timeout=0.5"
    max_pending, capacity = 30, 5
    writer = PredictionLogWriter(uri, queue_size=capacity, flush_seconds=0.05, max_pending_rows=max_pending,
                                 retry_seconds=0.05)  # fmt: skip
    writer.start()
    submitted = 0
    try:
        for i in range(3):
            assert writer.submit(_entry(i))
        submitted = 3
        wait_until(lambda: writer.written_rows == 3, what="the first rows")

        refused = 0
        with locked(db):
            for i in range(3, 203):
                refused += not writer.submit(_entry(i))
                submitted += 1
                time.sleep(0.01)
            wait_until(lambda: writer.failing and writer.pending_rows <= max_pending, timeout=30,
                       what="a failed write that sheds down to the bound")  # fmt: skip
            stats = writer.stats()
            assert writer.degraded() and stats["dropped_rows"] > 0
            assert stats["pending_rows"] <= max_pending and stats["queue_depth"] <= capacity
            assert "locked" in (stats["last_error"] or "")
        wait_until(lambda: not writer.failing and writer.pending_rows == 0 and writer.stats()["queue_depth"] == 0,
                   timeout=30, what="the held rows to be written")  # fmt: skip
    finally:
        writer.stop()
    frame = read_predictions("bounded", None, None, uri=uri)
    ids = list(frame["request_id"])
    # Nothing vanishes unaccounted: every row is either in the store or counted as dropped.
    assert len(ids) == len(set(ids)) == writer.written_rows
    assert writer.written_rows + writer.dropped_rows == submitted
    assert {f"row-{i}" for i in range(3)} <= set(ids)
    print(f"bounded buffer: {submitted} submitted, {writer.written_rows} written, {writer.dropped_rows} dropped "
          f"({refused} refused at a full queue)")  # fmt: skip
