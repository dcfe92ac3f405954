"""The prediction log's spool (serving/spool.py) and its drain process (serving/drain.py): the framing, a torn
tail, the replay of a dead writer's spool, exactly once when a drain died between the store's write and its
bookkeeping, and a drain process killed by PID and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import zlib
from datetime import datetime
from pathlib import Path

import pytest
from polling import wait_until

from mlops.predictionlog.predictions import read_predictions
from mlops.serving.drain import SpoolDrain
from mlops.serving.logentry import LogEntry, decode_entry, encode_entry
from mlops.serving.spool import HEADER, Spool, data_end, frame_record, read_records
from mlops.serving.spoolwriter import SpooledLogWriter


def _entry(request_id: str, event_time: datetime = datetime(2011, 5, 1, 8), use_case: str = "bike") -> LogEntry:
    return LogEntry(
        use_case=use_case,
        model_name="bike_model",
        model_version="3",
        source="online",
        ids=[request_id],
        event_times=[event_time],
        names=["temp", "season", "holiday"],
        rows=[[12.5, "spring", False]],
        predictions=[1],
        feature_types={"temp": "double", "season": "string", "holiday": "bool"},
        classes=(0, 1),
        probabilities=[[0.25, 0.75]],
        role="canary",
    )


def _stop(writer: SpooledLogWriter) -> None:
    writer.stop(timeout=10)


def test_an_entry_round_trips_through_its_record() -> None:
    entry = _entry("r-1", datetime(2011, 5, 1, 8, 30, 15, 123456))
    records, end, torn = read_records(frame_record(encode_entry(entry)))
    assert not torn and len(records) == 1
    assert decode_entry(records[0][1]) == entry
    assert end == HEADER.size + len(encode_entry(entry))


def test_a_torn_tail_is_told_from_the_whole_records_before_it() -> None:
    good = frame_record(b'"first"') + frame_record(b'"second"')
    last = frame_record(b'"third, cut short"')
    for cut in (3, HEADER.size, len(last) - 1):  # inside the header, after it, inside the payload
        records, end, torn = read_records(good + last[:cut])
        assert torn and [p for _, p in records] == [b'"first"', b'"second"'] and end == len(good)
    # Whole length, wrong bytes: the CRC catches it.
    flipped = bytearray(last)
    flipped[-2] ^= 0xFF
    records, end, torn = read_records(good + bytes(flipped))
    assert torn and len(records) == 2 and end == len(good)
    assert HEADER.unpack_from(last)[1] == zlib.crc32(b'"third, cut short"')
    assert read_records(good) == ([(0, b'"first"'), (len(frame_record(b'"first"')), b'"second"')], len(good), False)


def test_the_writer_drains_its_spool_into_the_log_and_leaves_nothing_behind(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    writer = SpooledLogWriter(str(tmp_path / "log"), spool, flush_seconds=0.05)
    writer.spool.segment_bytes = 600  # a few records per segment: rotation too
    writer.start()
    try:
        for i in range(20):
            assert writer.submit(_entry(f"r-{i}", use_case="bike" if i % 2 else "other"))
        wait_until(lambda: writer.written_rows == 20, 10, "every spooled row in the log")
        assert writer.stats()["pending_rows"] == 0 and writer.stats()["spool"]["spooled_rows"] == 20
        # Drained segments that nobody appends to are deleted as they go.
        wait_until(lambda: len(list(spool.glob("*.seg"))) == 1, 10, "only the segment being written left")
    finally:
        _stop(writer)
    assert list(spool.iterdir()) == []  # a clean stop removes the spool's files
    logged = read_predictions("bike", None, None, uri=writer.uri)
    assert sorted(logged["request_id"]) == sorted(f"r-{i}" for i in range(1, 20, 2))
    assert set(logged["role"]) == {"canary"} and logged["temp"].tolist() == [12.5] * 10
    assert len(read_predictions("other", None, None, uri=writer.uri)) == 10


def test_a_drain_process_killed_by_pid_is_started_again_and_every_row_is_logged_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    writer = SpooledLogWriter(str(tmp_path / "log"), spool, flush_seconds=0.05, restart_seconds=0.1)
    writer.start()
    ids = [f"r-{i}" for i in range(60)]
    try:
        for request_id in ids[:30]:
            assert writer.submit(_entry(request_id))
        wait_until(lambda: writer.written_rows == 30, 20, "the first rows in the log")
        first = writer.stats()["drain"]
        assert first["alive"] and first["restarts"] == 0
        os.kill(first["pid"], signal.SIGKILL)
        wait_until(lambda: not writer.drain_alive(), 10, "the drain process gone")
        assert writer.degraded()  # /health says so until it is back
        for request_id in ids[30:]:  # answered while no drain runs: they wait in the spool
            assert writer.submit(_entry(request_id))
        wait_until(lambda: writer.stats()["drain"]["restarts"] == 1 and writer.drain_alive(), 20, "a new drain")
        wait_until(lambda: writer.written_rows == 60 and writer.pending_rows() == 0, 20, "every row after it")
        stats = writer.stats()
        assert stats["drain"]["pid"] != first["pid"] and "exit code -9" in stats["drain"]["last_exit"]
        assert not writer.degraded() and stats["spool"]["recovered_rows"] == 0
    finally:
        _stop(writer)
    assert list(spool.iterdir()) == []
    logged = list(read_predictions("bike", None, None, uri=writer.uri)["request_id"])
    assert sorted(logged) == sorted(ids)


def _killed_writer(uri: str, spool: Path, ids: list[str], torn: bool) -> None:
    """A writer in its own process that spools `ids`, never flushes, and is SIGKILLed (mid-write if `torn`)."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from datetime import datetime
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_serving_spool import _entry
        from mlops.serving.spoolwriter import SpooledLogWriter
        writer = SpooledLogWriter({uri!r}, Path({str(spool)!r}), flush_seconds=3600)
        writer.start()
        for request_id in {ids!r}:
            assert writer.submit(_entry(request_id))
        if {torn!r}:
            # What a kill in the middle of a copy leaves: part of a record (a header announcing 64 bytes, two
            # of them there), its response never sent.
            spool = writer.spool
            spool._map[spool._size : spool._size + 10] = b"\\x40\\x00\\x00\\x00\\x12\\x34\\x56\\x78\\x9a\\xbc"
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # conftest's test helpers too
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


@pytest.mark.parametrize("store", ["parquet", "sqlite"])
def test_a_restart_replays_what_a_killed_writer_spooled_and_drops_its_torn_tail(tmp_path: Path, store: str) -> None:
    uri = str(tmp_path / "log") if store == "parquet" else f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    ids = [f"killed-{i}" for i in range(25)]
    _killed_writer(uri, spool, ids, torn=True)
    assert len(list(spool.glob("*.seg"))) == 1 and len(list(spool.glob("*.lock"))) == 1

    writer = SpooledLogWriter(uri, spool, flush_seconds=0.05)
    writer.start()
    try:
        writer.submit(_entry("after-restart"))
        wait_until(lambda: writer.written_rows == 26, 20, "the dead writer's rows and the new one")
        stats = writer.stats()
        assert stats["spool"]["recovered_rows"] == 25 and stats["spool"]["torn_bytes"] == 72
        wait_until(lambda: writer.stats()["pending_rows"] == 0, 10, "nothing pending")
        assert not writer.degraded()
    finally:
        _stop(writer)
    assert list(spool.iterdir()) == []  # the dead writer's segment, journal and lock are gone too
    logged = sorted(read_predictions("bike", None, None, uri=uri)["request_id"])
    assert logged == sorted([*ids, "after-restart"])


class _Killed(BaseException):
    """Stands for a SIGKILL of the drain between the store's write and the journal's commit."""


@pytest.mark.parametrize("store", ["parquet", "sqlite"])
def test_a_chunk_written_but_not_committed_is_in_the_log_once_after_the_replay(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = str(tmp_path / "log") if store == "parquet" else f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    first = SpooledLogWriter(uri, spool)
    first._open()
    # Two event dates: the Parquet store writes one file per date, and a replay must not double either.
    for i in range(10):
        first.submit(_entry(f"once-{i}", datetime(2011, 5, 1 + i % 2, 8)))
    # The drain, in this process: what `python -m mlops.serving.drain` runs.
    attached = Spool(spool)
    attached.attach(first.spool.owner)
    drain = SpoolDrain(attached, uri)

    def killed(chunk: object) -> None:
        raise _Killed

    monkeypatch.setattr(attached, "commit", killed)
    with pytest.raises(_Killed):
        drain.drain_pass()
    assert drain.written_rows == 10  # in the store; the journal says begun, not committed
    # Both processes die: their descriptors close, and the kernel drops their locks.
    assert first.spool._fd is not None and first.spool._lock_fd is not None and attached._lock_fd is not None
    for fd in (first.spool._fd, first.spool._lock_fd, attached._lock_fd):
        os.close(fd)

    second = SpooledLogWriter(uri, spool, flush_seconds=0.05)
    second.start()
    try:
        second.submit(_entry("later"))
        wait_until(lambda: second.pending_rows() == 0 and second.written_rows >= 11, 20, "the replay")
    finally:
        _stop(second)
    assert second.recovered_rows == 10
    logged = list(read_predictions("bike", None, None, uri=uri)["request_id"])
    assert sorted(logged) == sorted([*(f"once-{i}" for i in range(10)), "later"])  # each exactly once
    assert list(spool.iterdir()) == []


def test_a_failing_store_keeps_the_rows_in_the_spool_and_writes_them_once_it_recovers(tmp_path: Path) -> None:
    root = tmp_path / "log"
    root.mkdir()
    blocker = root / "bike"
    blocker.write_text("a file where the use case's folder belongs: every write fails")
    writer = SpooledLogWriter(str(root), tmp_path / "spool", flush_seconds=0.05, retry_seconds=0.05)
    writer.start()
    try:
        for i in range(30):
            writer.submit(_entry(f"held-{i}"))
        wait_until(lambda: writer.failing and writer.stats()["pending_rows"] == 30, 10, "the rows held")
        assert writer.degraded() and writer.stats()["spool"]["backlog_bytes"] > 0
        assert writer.dropped_rows == 0 and writer.written_rows == 0
        blocker.unlink()
        wait_until(lambda: writer.written_rows == 30, 10, "the held rows after the store recovered")
        assert not writer.degraded() and writer.stats()["spool"]["backlog_bytes"] == 0
    finally:
        _stop(writer)
    assert len(read_predictions("bike", None, None, uri=str(root))) == 30


def test_a_spool_that_cannot_be_written_drops_counts_and_degrades(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SpooledLogWriter(str(tmp_path / "log"), tmp_path / "spool", flush_seconds=0.05)
    writer.spool.segment_bytes = 50  # every record needs a new segment: each append reserves disk space
    writer.start()
    real = os.posix_fallocate

    def full_disk(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    try:
        monkeypatch.setattr(os, "posix_fallocate", full_disk)
        assert not writer.submit(_entry("lost"))
        stats = writer.stats()
        assert stats["dropped_rows"] == 1 and stats["spool"]["errors"] == 1 and writer.degraded()
        assert "No space left on device" in stats["spool"]["last_error"] and stats["spool"]["failing"]
        # The disk is back: the next answer is durable again, and so is the health.
        monkeypatch.setattr(os, "posix_fallocate", real)
        assert writer.submit(_entry("kept"))
        wait_until(lambda: writer.written_rows == 1, 10, "the next row in the log")
        assert not writer.degraded() and writer.stats()["spool"]["errors"] == 1
    finally:
        _stop(writer)
    assert list(read_predictions("bike", None, None, uri=writer.uri)["request_id"]) == ["kept"]


def test_a_segment_ends_at_its_last_record_before_its_reserved_zeros(tmp_path: Path) -> None:
    path = tmp_path / "x.seg"
    records = frame_record(b'"one"') + frame_record(b'"two"')
    path.write_bytes(records + bytes(1000))
    assert data_end(path) == len(records)
    path.write_bytes(records + HEADER.pack(500, 0) + b"ab" + bytes(100))  # a torn record announcing 500 bytes
    assert data_end(path) == len(records) + HEADER.size
