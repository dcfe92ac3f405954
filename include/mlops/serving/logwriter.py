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

With a spool (`spool_dir`; the service's default, serving/spool.py), `submit` instead appends
the entry to a local file before the response goes out, and the thread drains that file
into the store: a SIGKILL or OOM kill loses nothing answered, a store outage grows the file
rather than memory (nothing is shed), and the next writer to start drains what a dead one
left. Each drained chunk is journalled and written under batch ids the store writes
idempotently, so every row lands exactly once.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.predictionlog.frames import PredictionBatch, build_frame
from mlops.predictionlog.predictions import append_frame
from mlops.predictionlog.stores import LogSchemaError
from mlops.serving.logentry import LogEntry, encode_entry

if TYPE_CHECKING:
    import pandas as pd

    from mlops.serving.spool import Chunk, Segment, Spool

    Spooled = tuple[Segment, int, int, LogEntry]
    """An entry in the queue with where its record is in the spool: segment, start, end."""

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


class PredictionLogWriter:
    """The bounded queue requests submit to, and the thread that appends it to the prediction log."""

    def __init__(
        self,
        uri: str | None = None,
        queue_size: int = 10_000,
        flush_seconds: float = 1.0,
        max_pending_rows: int = 200_000,
        retry_seconds: float = 1.0,
        spool_dir: Path | None = None,
        spool_name: str = "serving",
        spool_chunk_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.uri = uri
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        """LogEntry items; with a spool, (segment, start, end, entry) items."""
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
        self.spool: Spool | None = None
        """The local file answered entries are appended to before the response goes out; None: memory only."""
        if spool_dir is not None:
            from mlops.serving.spool import Spool

            self.spool = Spool(Path(spool_dir), spool_name)
        self.spool_chunk_bytes = spool_chunk_bytes
        self._spool_open = False
        self._spool_lock = threading.Lock()
        self._chunk: Chunk | None = None
        self.spooled_rows = 0
        """Rows this writer appended to its spool."""
        self.spilled_rows = 0
        """Spooled rows that found the queue full: the writer reads them back from the spool file."""
        self._held: collections.deque[Spooled] = collections.deque()
        """Spooled entries taken off the queue, in spool order, waiting to become a chunk."""
        self.recovered_rows = 0
        """Rows read back from the spool of a writer that did not stop cleanly (SIGKILL, crash)."""
        self.torn_bytes = 0
        """Bytes at the end of a dead writer's spool that were no whole record: a write the kill cut short,
        whose response never went out."""
        self._settled_rows = 0
        self.spool_errors = 0
        self.last_spool_error: str | None = None
        self.spool_failing = False
        """The last append to the spool failed: what is answered now is not durable."""

    def submit(self, entry: LogEntry) -> bool:
        """Queue an entry without blocking; False (and counted as dropped) when the queue is full.

        With a spool: append it to the spool file (returns once the bytes are in the page cache);
        False (counted as dropped, and /health degraded) when the file cannot be written.
        """
        if self.spool is not None:
            return self._spool_entry(self.spool, entry)
        try:
            self._queue.put_nowait(entry)
            return True
        except queue.Full:
            with self._lock:
                self.dropped_rows += len(entry.ids)
            return False

    def _spool_entry(self, spool: Spool, entry: LogEntry) -> bool:
        if not self._spool_open:
            self._open_spool()
        try:
            payload = encode_entry(entry)
        except TypeError as exc:  # a value JSON cannot hold: a data error, as in `_build`
            self._reject(entry, exc)
            return False
        try:
            segment, start, end = spool.append(payload)
        except OSError as exc:
            # Answer anyway (the prediction is right), but count it and degrade /health: the disk is full
            # or the folder went away, and what is answered now is not durable.
            with self._lock:
                self.dropped_rows += len(entry.ids)
                self.spool_errors += 1
            self.spool_failing = True
            self.last_spool_error = f"{datetime.now(UTC).isoformat()} {exc}"[:300]
            log.error("prediction log spool: cannot append to %s, %d rows dropped: %s", spool.folder,
                      len(entry.ids), exc)  # fmt: skip
            return False
        self.spooled_rows += len(entry.ids)
        self.spool_failing = False
        # The writer takes the entry from memory, as without a spool; the file is read back only for what
        # memory does not hold: a dead writer's records, and those that found the queue full (spilled).
        try:
            self._queue.put_nowait((segment, start, end, entry))
        except queue.Full:
            self.spilled_rows += len(entry.ids)
        return True

    def _open_spool(self) -> None:
        with self._spool_lock:
            if not self._spool_open and self.spool is not None:
                self.spool.open()
                self._spool_open = True

    def start(self) -> None:
        if self.spool is not None:
            # Before the first request: the lock is taken and a dead writer's segments adopted.
            self._open_spool()
        target = self._run_spooled if self.spool is not None else self._run
        self._thread = threading.Thread(target=target, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Drain the queue and write what is left (tries until `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def degraded(self) -> bool:
        if self.spool is not None:
            return self.failing or self.spool_failing
        return self.failing or self._queue.qsize() >= 0.9 * self._capacity

    def stats(self) -> dict[str, Any]:
        if self.spool is not None:
            # Rows appended (or recovered) and not yet in the store, whether read back yet or not.
            self.pending_rows = max(0, self.spooled_rows + self.recovered_rows - self._settled_rows)
        stats: dict[str, Any] = {
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
        if self.spool is not None:
            stats["spool"] = {
                "dir": str(self.spool.folder),
                "backlog_bytes": self.spool.backlog_bytes() if self._spool_open else 0,
                "spooled_rows": self.spooled_rows,
                "spilled_rows": self.spilled_rows,
                "recovered_rows": self.recovered_rows,
                "torn_bytes": self.torn_bytes,
                "errors": self.spool_errors,
                "failing": self.spool_failing,
                "last_error": self.last_spool_error,
            }
        return stats

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
        """Log rows for one use case's entries, and the entries they hold.

        A batch that cannot become rows (say an event time pandas cannot hold) fails the
        same way on every retry; treated as a store failure it would hold back every later
        entry of its use case for good. So it is a data error: each entry is built on its
        own, the ones that fail are rejected (counted, logged, shown in /health) and the
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
                self._reject(entry, exc)
            else:
                kept.append(entry)
        if not frames:
            return None, []
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0], kept

    def _reject(self, entry: LogEntry, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        self.rejected_rows += len(entry.ids)
        self.last_rejection = (
            f"{datetime.now(UTC).isoformat()} {entry.use_case} model version {entry.model_version}, "
            f"{len(entry.ids)} rows (first id {entry.ids[0] if entry.ids else None!r}): {reason}"
        )
        log.error(
            "prediction log: rejected %d rows of %s (ids %s): they cannot become log rows, so they are not "
            "retried: %s",
            len(entry.ids), entry.use_case, entry.ids[:5], reason,
        )  # fmt: skip

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

    # ------------------------------------------------------------------ the spool's drain

    def _run_spooled(self) -> None:
        while not self._stop.is_set():
            drained = self._drain_spool()
            self._stop.wait(self.flush_seconds if drained else self.retry_seconds)
        # Shutdown: what is spooled goes out, with a few retries for a flaky store. What cannot is left in
        # the spool, and the next writer to start drains it (nothing is lost, unlike the memory buffer).
        for _ in range(3):
            if self._drain_spool():
                break
            time.sleep(self.retry_seconds)
        assert self.spool is not None
        if not self.spool.close():
            log.error(
                "prediction log: %d rows are not in the store yet (%s); they stay in the spool %s and the next "
                "start of the service writes them", self.stats()["pending_rows"], self.last_error, self.spool.folder,
            )  # fmt: skip

    def _drain_spool(self) -> bool:
        """Write what was spooled when the pass began, chunk by chunk; False when the store failed (retry later).

        Only up to where each segment ended at the start: records keep arriving while a chunk is
        written, and chasing them wrote a chunk of a few rows every 30 ms, a core's worth of
        Parquet files, instead of one per flush interval.
        """
        spool = self.spool
        assert spool is not None
        limits = {segment.path: spool.readable_end(segment) for segment in list(spool.segments)}
        while True:
            if self._chunk is None:
                segment = spool.next_segment(limits)
                if segment is None:
                    return True
                chunk = self._next_chunk(spool, segment, limits[segment.path])
                if chunk is None:
                    return True
                if segment.adopted:
                    self.recovered_rows += sum(len(e.ids) for e in chunk.entries)
                if chunk.torn_bytes:
                    self.torn_bytes += chunk.torn_bytes
                    log.warning("prediction log spool: dropped a torn record (%d bytes) at the end of %s: a write "
                                "the kill cut short, never answered", chunk.torn_bytes, segment.path.name)  # fmt: skip
                spool.begin(chunk)
                self._chunk = chunk
            if not self._write_chunk(self._chunk):
                return False
            spool.commit(self._chunk)
            self._chunk = None

    def _next_chunk(self, spool: Spool, segment: Segment, limit: int) -> Chunk | None:
        """The next records of `segment` before `limit`: from memory when the queue holds them in order, else
        from the file.

        Why memory first: decoding a record back costs 8 µs on its own and up to 36 µs among
        thousands (their objects' allocation and garbage collection), on the writer thread
        under the GIL; the file is the durable copy, read only for what memory lacks.
        """
        from mlops.serving.spool import Chunk

        while len(self._held) < self._capacity:
            try:
                self._held.append(self._queue.get_nowait())
            except queue.Empty:
                break
        # Entries a read of the file already covered (they came after a gap), or of a segment drained.
        while self._held and (self._held[0][0] not in spool.segments or self._held[0][1] < self._held[0][0].committed):
            self._held.popleft()
        head = self._held[0] if self._held else None
        if head is not None and head[0] is segment and head[1] == segment.committed and segment.begun is None:
            entries, end = [], segment.committed
            while (self._held and self._held[0][0] is segment and self._held[0][1] == end and end < limit
                   and end - segment.committed < self.spool_chunk_bytes):  # fmt: skip
                _, _, end, entry = self._held.popleft()
                entries.append(entry)
            return Chunk(segment, segment.committed, end, entries)
        stop_at = min(head[1], limit) if head is not None and head[0] is segment else limit
        return spool.read_chunk(segment, self.spool_chunk_bytes, stop_at)

    def _write_chunk(self, chunk: Chunk) -> bool:
        """Each use case's rows of the chunk under its batch id; the ones written are not written again."""
        by_use_case: dict[str, list[LogEntry]] = defaultdict(list)
        for entry in chunk.entries:
            by_use_case[entry.use_case].append(entry)
        failed = False
        for use_case, entries in by_use_case.items():
            if use_case in chunk.done:
                continue
            built = chunk.frames.get(use_case)
            if built is None:
                built = chunk.frames[use_case] = self._build(entries)  # rejections counted once
                self._settled_rows += sum(len(e.ids) for e in entries) - sum(len(e.ids) for e in built[1])
            frame, kept = built
            if frame is None:
                chunk.done.add(use_case)
                continue
            try:
                self.written_rows += append_frame(use_case, frame, uri=self.uri, batch_id=chunk.batch_id(use_case))
            except LogSchemaError as exc:
                for entry in kept:
                    self._reject(entry, exc)
            except Exception as exc:
                failed = True
                self.last_error = str(exc)[:500]
                self.last_error_at = datetime.now(UTC)
                log.warning("prediction log write failed (the rows stay in the spool, will retry): %s", exc)
                continue
            self._settled_rows += sum(len(e.ids) for e in kept)
            chunk.done.add(use_case)
        self.failing = failed
        if not failed:
            self.last_write_at = datetime.now(UTC)
        return not failed
