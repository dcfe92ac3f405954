"""Prediction logging through the spool: the request path appends bytes, a drain process writes the log.

The service's default (`--no-spool` turns it off for PredictionLogWriter's memory queue).
`submit` encodes the request's entry and copies it into the spool (serving/spool.py) before
the response goes out; that is all the service does for the log. Building frames and writing
Parquet or SQL happen in a separate process (serving/drain.py), which this writer starts,
watches from a thread, and starts again if it dies (counted in /health's `log.drain`, and
/health is degraded until it is back). A SIGKILL of the service or of the drain loses nothing
answered, and the journal keeps every row in the store exactly once
(tests/reliability/test_serving_sigkill.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from mlops.serving.drain import EXIT_NOT_DRAINED, status_path
from mlops.serving.logentry import LogEntry, encode_entry
from mlops.serving.logwriter import PredictionLogWriter, rejection
from mlops.serving.spool import Spool

log = logging.getLogger("mlops.serving")

_SUMMED = ("written_rows", "rejected_rows", "recovered_rows", "torn_bytes")
"""The drain's counters that restart at zero in a new drain process: carried over from the one before."""


class SpooledLogWriter:
    """Appends answered entries to the spool; a drain process it supervises writes them to the log."""

    def __init__(
        self,
        uri: str | None,
        spool_dir: Path | str,
        flush_seconds: float = 1.0,
        retry_seconds: float = 1.0,
        spool_name: str = "serving",
        spool_chunk_bytes: int = 8 * 1024 * 1024,
        restart_seconds: float = 1.0,
    ) -> None:
        self.uri = uri
        self.flush_seconds = flush_seconds
        self.retry_seconds = retry_seconds
        self.spool_chunk_bytes = spool_chunk_bytes
        self.restart_seconds = restart_seconds
        self.spool = Spool(Path(spool_dir), spool_name)
        self._open_lock = threading.Lock()
        self._opened = False
        self._lock = threading.Lock()
        self.dropped_rows = 0
        self.spooled_rows = 0
        """Rows this writer appended to its spool."""
        self._segment_rows: dict[str, int] = {}
        """Rows appended per segment (its stem): against the drain's committed rows, the pending ones."""
        self._encode_rejected = 0
        self._last_encode_rejection: str | None = None
        self.spool_errors = 0
        self.last_spool_error: str | None = None
        self.spool_failing = False
        """The last append to the spool failed: what is answered now is not durable."""
        self._process: subprocess.Popen[bytes] | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._carried: dict[str, int] = dict.fromkeys(_SUMMED, 0)
        self._last_status: dict[str, Any] = {}
        self.restarts = 0
        self.last_exit: str | None = None
        self.drained_at_stop: bool | None = None

    # ---- the request side

    def submit(self, entry: LogEntry) -> bool:
        """Append the entry to the spool (returns once the bytes are in the page cache); False (counted as
        dropped, and /health degraded) when the file cannot be written."""
        if not self._opened:
            self._open()
        try:
            payload = encode_entry(entry)
        except TypeError as exc:  # a value JSON cannot hold: a data error, as the drain's rejections
            self._encode_rejected += len(entry.ids)
            self._last_encode_rejection = rejection(entry, exc)
            return False
        try:
            segment, _, _ = self.spool.append(payload)
        except OSError as exc:
            # Answer anyway (the prediction is right), but count it and degrade /health: the disk is full
            # or the folder went away, and what is answered now is not durable.
            with self._lock:
                self.dropped_rows += len(entry.ids)
                self.spool_errors += 1
            self.spool_failing = True
            self.last_spool_error = f"{datetime.now(UTC).isoformat()} {exc}"[:300]
            log.error("prediction log spool: cannot append to %s, %d rows dropped: %s", self.spool.folder,
                      len(entry.ids), exc)  # fmt: skip
            return False
        rows = len(entry.ids)
        self.spooled_rows += rows
        self._segment_rows[segment.stem] = self._segment_rows.get(segment.stem, 0) + rows
        self.spool_failing = False
        return True

    def _open(self) -> None:
        with self._open_lock:
            if not self._opened:
                self.spool.open(adopt=False)  # the drain process adopts dead writers' spools
                self._opened = True

    # ---- the drain process

    def start(self) -> None:
        self._open()  # before the first request: the lock is taken, the first segment mapped
        self._supervisor = threading.Thread(target=self._supervise, name="prediction-log-drain", daemon=True)
        self._supervisor.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "mlops.serving.drain", "--spool-dir", str(self.spool.folder),
                   "--owner", self.spool.owner, "--flush-seconds", str(self.flush_seconds),
                   "--retry-seconds", str(self.retry_seconds), "--chunk-bytes", str(self.spool_chunk_bytes),
                   "--parent-pid", str(os.getpid()),
                   *(["--log-uri", self.uri] if self.uri else [])]  # fmt: skip
        return subprocess.Popen(command, stdin=subprocess.PIPE)

    def _supervise(self) -> None:
        """Runs the drain process, and again when it dies, until `stop`; then tells it to finish.

        Every start happens on this thread, which lives until the drain exits: PR_SET_PDEATHSIG
        kills the child when the thread that started it ends, not only the process.
        """
        self._process = self._spawn()
        while not self._stopping.wait(0.2):
            code = self._process.poll()
            if code is None:
                continue
            self._fold_counters()
            self.restarts += 1
            self.last_exit = f"{datetime.now(UTC).isoformat()} exit code {code}"
            log.error("prediction log drain process %d died (exit code %s); starting another", self._process.pid,
                      code)  # fmt: skip
            if self._stopping.wait(self.restart_seconds):
                break
            self._process = self._spawn()
        self._finish(self._process)

    def _finish(self, process: subprocess.Popen[bytes]) -> None:
        stdin: IO[bytes] | None = process.stdin
        if process.poll() is None and stdin is not None:
            try:
                stdin.write(b"stop\n")
                stdin.flush()
            except OSError:
                pass
        try:
            code = process.wait(timeout=self._finish_timeout)
        except subprocess.TimeoutExpired:
            log.error("prediction log drain process %d did not finish in %.0f s: killed; its spool stays for the "
                      "next start", process.pid, self._finish_timeout)  # fmt: skip
            process.kill()
            code = process.wait()
        if stdin is not None:
            stdin.close()
        self.drained_at_stop = code == 0
        if code == EXIT_NOT_DRAINED:
            log.error("prediction log: not every row is in the store; the spool %s keeps them for the next start",
                      self.spool.folder)  # fmt: skip

    _finish_timeout = 20.0

    def stop(self, timeout: float = 20.0) -> None:
        """Stop appending, let the drain write what is left and exit, and release the spool (its files go
        when everything is in the store)."""
        if not self._opened:
            return
        self.spool.seal()
        self._finish_timeout = timeout
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=timeout + 5)
        self._status()  # the drain's last counts, before its file goes
        self.spool.release(drained=bool(self.drained_at_stop))

    # ---- what /health shows

    def _status(self) -> dict[str, Any]:
        # Not written yet, or gone after a clean stop: the last one read stands.
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            self._last_status = orjson.loads(status_path(self.spool.folder, self.spool.owner).read_bytes())
        return self._last_status

    def _fold_counters(self) -> None:
        """A drain died: its counts carry over, and its status file goes (the next one starts from zero)."""
        path = status_path(self.spool.folder, self.spool.owner)
        status = self._last_status
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            status = orjson.loads(path.read_bytes())
        path.unlink(missing_ok=True)
        for key in _SUMMED:
            self._carried[key] += int(status.get(key, 0))
        self._last_status = {k: v for k, v in status.items() if k not in _SUMMED}

    def _counter(self, key: str) -> int:
        return self._carried[key] + int(self._status().get(key, 0))

    @property
    def written_rows(self) -> int:
        return self._counter("written_rows")

    @property
    def rejected_rows(self) -> int:
        return self._counter("rejected_rows") + self._encode_rejected

    @property
    def recovered_rows(self) -> int:
        """Rows read back from the spool of a writer that did not stop cleanly (SIGKILL, crash)."""
        return self._counter("recovered_rows")

    @property
    def torn_bytes(self) -> int:
        return self._counter("torn_bytes")

    @property
    def failing(self) -> bool:
        return bool(self._status().get("failing"))

    def drain_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def pending_rows(self) -> int:
        """Rows answered and not yet in the store: this writer's, per segment, less what the drain committed of
        each; plus a dead writer's rows the drain read and could not write yet."""
        status = self._status()
        committed = status.get("committed_rows", {})
        pending = 0
        for stem, rows in list(self._segment_rows.items()):
            if stem in committed:
                pending += max(0, rows - int(committed[stem]))
            elif (self.spool.folder / f"{stem}.seg").exists():
                pending += rows  # not read by the drain yet
            elif stem != (self.spool.current.stem if self.spool.current else None):
                del self._segment_rows[stem]  # drained, and removed by the drain
        return pending + int(status.get("pending_adopted_rows", 0))

    def degraded(self) -> bool:
        running = self._supervisor is not None and not self._stopping.is_set()
        return self.failing or self.spool_failing or (running and not self.drain_alive())

    def stats(self) -> dict[str, Any]:
        status = self._status()
        last_rejection = status.get("last_rejection") or self._last_encode_rejection
        return {
            "store": self.uri,
            "queue_depth": 0,  # no queue: the request path appends to the spool
            "queue_capacity": 0,
            "pending_rows": self.pending_rows(),
            "written_rows": self.written_rows,
            "dropped_rows": self.dropped_rows,
            "rejected_rows": self.rejected_rows,
            "last_rejection": last_rejection,
            "failing": bool(status.get("failing")),
            "last_error": status.get("last_error"),
            "last_error_at": status.get("last_error_at"),
            "last_write_at": status.get("last_write_at"),
            "spool": {
                "dir": str(self.spool.folder),
                "backlog_bytes": int(status.get("backlog_bytes", 0)),
                "spooled_rows": self.spooled_rows,
                "recovered_rows": self.recovered_rows,
                "torn_bytes": self.torn_bytes,
                "errors": self.spool_errors,
                "failing": self.spool_failing,
                "last_error": self.last_spool_error,
            },
            "drain": {
                "pid": self._process.pid if self._process is not None else None,
                "alive": self.drain_alive(),
                "restarts": self.restarts,
                "last_exit": self.last_exit,
            },
        }


LogWriter = PredictionLogWriter | SpooledLogWriter
"""What the service and the shadow worker submit log entries to."""


def log_writer(
    uri: str | None,
    spool_dir: Path | str | None,
    flush_seconds: float = 1.0,
    queue_size: int = 10_000,
    spool_name: str = "serving",
) -> LogWriter:
    """The spool and its drain process when `spool_dir` is set (the default), else the memory queue."""
    if spool_dir is None:
        return PredictionLogWriter(uri, queue_size=queue_size, flush_seconds=flush_seconds)
    return SpooledLogWriter(uri, spool_dir, flush_seconds=flush_seconds, spool_name=spool_name)
