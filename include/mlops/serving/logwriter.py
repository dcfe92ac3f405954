"""Prediction logging off the request path: a bounded queue and one writer thread.

A request only does `put_nowait`. The writer moves what accumulated into its
`pending` list and appends it to the prediction log every `flush_seconds`. When the
store is slow or down the writer keeps the pending rows and retries every
`retry_seconds`, still draining the queue; past `max_pending_rows` it sheds the
oldest entries, counted as dropped. Only when the writer thread cannot keep up does
the queue fill, and then new entries are dropped and counted rather than blocking a
request. An entry that cannot become log rows at all (a data error, not a store
failure) is rejected on its own, counted and logged, so it never holds back the
rest. `/health` reports all of it. `stop()` drains the queue, so a clean shutdown
(SIGTERM) loses nothing that fits.

With the spool (the service's default), the service uses `SpooledLogWriter` (serving/spoolwriter.py)
instead: the request path appends to a local file and a drain process (serving/drain.py) builds
the frames and writes them, with `build_log_frame` below.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops.predictionlog.frames import PredictionBatch, build_frame
from mlops.predictionlog.predictions import append_frame
from mlops.predictionlog.stores import LogSchemaError
from mlops.serving.logentry import LogEntry

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

log = logging.getLogger("mlops.serving")


# use case, model name, version, source, role, feature names, classes
_Group = tuple[str, str, str, str, str, tuple[str, ...], tuple[Any, ...] | None]


def merge_entries(entries: list[LogEntry]) -> list[PredictionBatch]:
    """One batch per model version, source and column set, whatever the number of requests.

    Why: at a thousand single-row requests a second, converting entry by entry costs the
    writer thread ~0.2 s of Python per flush, taken from the event loop under the GIL;
    one `zip(*rows)` per group does the transposition in C.
    """
    groups: dict[_Group, list[LogEntry]] = defaultdict(list)
    for entry in entries:
        key = (entry.use_case, entry.model_name, entry.model_version, entry.source, entry.role, tuple(entry.names),
               entry.classes)  # fmt: skip
        groups[key].append(entry)
    batches = []
    for (use_case, model_name, model_version, source, role, names, classes), group in groups.items():
        rows = [row for entry in group for row in entry.rows]
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        batches.append(
            PredictionBatch(
                use_case=use_case,
                model_name=model_name,
                model_version=model_version,
                source=source,
                request_ids=[i for entry in group for i in entry.ids],
                event_times=[t for entry in group for t in entry.event_times],
                predictions=[p for entry in group for p in entry.predictions],
                features=dict(zip(names, columns, strict=True)),
                feature_types=group[0].feature_types,
                role=role,
                classes=classes,
                probabilities=(
                    [p for entry in group for p in entry.probabilities or []] if classes is not None else None
                ),
            )
        )
    return batches


def build_log_frame(
    entries: list[LogEntry], reject: Callable[[LogEntry, Exception], None]
) -> tuple[pd.DataFrame | None, list[LogEntry]]:
    """Log rows for one use case's entries, and the entries they hold.

    A batch that cannot become rows (say an event time pandas cannot hold) fails the
    same way on every retry; treated as a store failure it would hold back every later
    entry of its use case for good. So it is a data error: each entry is built on its
    own, the ones that fail are handed to `reject` (counted, logged, shown in /health) and the
    rest are written.
    """
    import pandas as pd

    logged_at = datetime.now(UTC).replace(tzinfo=None)
    try:
        return build_frame(merge_entries(entries), logged_at), entries
    except Exception:
        pass
    frames, kept = [], []
    for entry in entries:
        try:
            frames.append(build_frame(merge_entries([entry]), logged_at))
        except Exception as exc:
            reject(entry, exc)
        else:
            kept.append(entry)
    if not frames:
        return None, []
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0], kept


def rejection(entry: LogEntry, exc: Exception) -> str:
    """What /health says of an entry that cannot become log rows (logged too): never retried."""
    reason = f"{type(exc).__name__}: {exc}"[:300]
    log.error(
        "prediction log: rejected %d rows of %s (ids %s): they cannot become log rows, so they are not "
        "retried: %s",
        len(entry.ids), entry.use_case, entry.ids[:5], reason,
    )  # fmt: skip
    return (
        f"{datetime.now(UTC).isoformat()} {entry.use_case} model version {entry.model_version}, "
        f"{len(entry.ids)} rows (first id {entry.ids[0] if entry.ids else None!r}): {reason}"
    )


class PredictionLogWriter:
    """The bounded queue requests submit to, and the thread that appends it to the prediction log."""

    def __init__(
        self,
        uri: str | None = None,
        queue_size: int = 10_000,
        flush_seconds: float = 1.0,
        max_pending_rows: int = 200_000,
        retry_seconds: float = 1.0,
    ) -> None:
        self.uri = uri
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._capacity = queue_size
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped_rows = 0
        self.rejected_rows = 0
        """Rows of entries that could not become log rows (a data error); never retried."""
        self.last_rejection: str | None = None
        self.written_rows = 0
        self.pending_rows = 0
        self.failing = False
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.last_write_at: datetime | None = None

    def submit(self, entry: LogEntry) -> bool:
        """Queue an entry without blocking; False (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(entry)
            return True
        except queue.Full:
            with self._lock:
                self.dropped_rows += len(entry.ids)
            return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Drain the queue and write what is left (tries until `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def degraded(self) -> bool:
        return self.failing or self._queue.qsize() >= 0.9 * self._capacity

    def stats(self) -> dict[str, Any]:
        return {
            "store": self.uri,
            "queue_depth": self._queue.qsize(),
            "queue_capacity": self._capacity,
            "pending_rows": self.pending_rows,
            "written_rows": self.written_rows,
            "dropped_rows": self.dropped_rows,
            "rejected_rows": self.rejected_rows,
            "last_rejection": self.last_rejection,
            "failing": self.failing,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "last_write_at": self.last_write_at.isoformat() if self.last_write_at else None,
        }

    def _drain(self, pending: list[LogEntry], deadline: float) -> None:
        # Short waits so that stop() is noticed quickly even with a long flush interval.
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0 and not self._stop.is_set():
                    entry = self._queue.get(timeout=min(remaining, 0.1))
                else:
                    entry = self._queue.get_nowait()
            except queue.Empty:
                if remaining <= 0 or self._stop.is_set():
                    return
                continue
            pending.append(entry)
            self.pending_rows += len(entry.ids)

    def _write(self, pending: list[LogEntry]) -> bool:
        by_use_case: dict[str, list[LogEntry]] = defaultdict(list)
        for entry in pending:
            by_use_case[entry.use_case].append(entry)
        failed: list[LogEntry] = []
        for use_case, entries in by_use_case.items():
            frame, entries = self._build(entries)
            if frame is None:
                continue
            try:
                self.written_rows += append_frame(use_case, frame, uri=self.uri)
            except LogSchemaError as exc:
                # The rows would change a logged column's type: every retry would fail the same way.
                for entry in entries:
                    self._reject(entry, exc)
            # The store failed (PredictionLogError), or anything else went wrong in writing: keep
            # the rows, report, retry. The thread must outlive every error; if it died, the queue
            # would fill and every later prediction would be dropped.
            except Exception as exc:
                failed.extend(entries)
                self.last_error = str(exc)[:500]
                self.last_error_at = datetime.now(UTC)
                log.warning("prediction log write failed (will retry): %s", exc)
        pending[:] = failed
        self.pending_rows = sum(len(e.ids) for e in failed)
        if failed:
            self._shed(pending)
            self.failing = True
            return False
        self.failing = False
        self.last_write_at = datetime.now(UTC)
        return True

    def _build(self, entries: list[LogEntry]) -> tuple[pd.DataFrame | None, list[LogEntry]]:
        return build_log_frame(entries, self._reject)

    def _reject(self, entry: LogEntry, exc: Exception) -> None:
        self.rejected_rows += len(entry.ids)
        self.last_rejection = rejection(entry, exc)

    def _shed(self, pending: list[LogEntry]) -> None:
        # Memory stays bounded while the store is down: the oldest rows go first.
        while self.pending_rows > self.max_pending_rows and pending:
            gone = pending.pop(0)
            self.pending_rows -= len(gone.ids)
            with self._lock:
                self.dropped_rows += len(gone.ids)

    def _run(self) -> None:
        pending: list[LogEntry] = []
        while not self._stop.is_set():
            self._drain(pending, time.monotonic() + self.flush_seconds)
            if pending and not self._write(pending):
                self._stop.wait(self.retry_seconds)
        # Shutdown: everything still queued goes out, with a few retries for a flaky store.
        self._drain(pending, time.monotonic())
        for _ in range(3):
            if not pending or self._write(pending):
                break
            time.sleep(self.retry_seconds)
        if pending:
            log.error(
                "prediction log: %d rows could not be written at shutdown: %s", self.pending_rows, self.last_error
            )
