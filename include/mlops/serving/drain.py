"""The spool's drain process: reads what the service appended to its spool, builds the log frames, writes them.

Why a process of its own: turning a second of answers into a frame (merging the entries,
building the columns, encoding Parquet) took a quarter of a second of Python and long C
calls at 100-row requests, once a second, under the service's GIL. The event loop ran at a
fraction of its speed meanwhile, and every open connection waited: the p99 of
docs/benchmarks.md ("Where our time goes"). Here that work runs in another interpreter;
the service only copies bytes into the spool.

Started by the service's `SpooledLogWriter` (serving/spoolwriter.py) with the name of the
writer whose spool it drains (`--owner`); restarted by it if it dies. It dies with the
service (PR_SET_PDEATHSIG). It ignores SIGINT and SIGTERM: a stop sent to the service's
process group must not end the drain while the service still answers. The service tells it
to finish by writing `stop` to its stdin, after it stopped appending: then the drain writes
everything left, removes the files, and exits 0 (3: the store failed, the rest stays in the
spool for the next start).

Exactly once, whatever is killed: each chunk of records is journalled `begin` before it goes
to the store and `commit` after (serving/spool.py), under batch ids the store writes
idempotently. A drain killed between the two replays the chunk under the same ids; `flock`
on `<owner>.drain` keeps a restarted drain (or an adopter of a dead service's spool) from
running beside one still alive.

What /health shows of it comes from `<owner>.drain.json`, rewritten after every chunk and pass.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from mlops.predictionlog.predictions import append_frame
from mlops.predictionlog.stores import LogSchemaError
from mlops.serving.children import die_with_parent
from mlops.serving.logentry import LogEntry
from mlops.serving.logwriter import build_log_frame, rejection
from mlops.serving.spool import Chunk, Spool

log = logging.getLogger("mlops.serving")

EXIT_NOT_DRAINED = 3
"""Told to stop, but the store failed: rows are left in the spool for the next writer to adopt."""
EXIT_PARENT_GONE = 4
"""Its stdin closed without `stop`: the service died; whoever adopts its spool drains it."""


def status_path(folder: Path, owner: str) -> Path:
    return folder / f"{owner}.drain.json"


class SpoolDrain:
    """Drains one writer's spool (and the orphans it adopts) into the store, chunk by chunk."""

    def __init__(self, spool: Spool, uri: str | None, chunk_bytes: int = 8 * 1024 * 1024) -> None:
        self.spool = spool
        self.uri = uri
        self.chunk_bytes = chunk_bytes
        self._chunk: Chunk | None = None
        self.written_rows = 0
        self.rejected_rows = 0
        self.last_rejection: str | None = None
        self.recovered_rows = 0
        """Rows read from the spool of a writer that did not stop cleanly (SIGKILL, crash)."""
        self.torn_bytes = 0
        """Bytes at the end of a dead writer's spool that were no whole record: a write the kill cut short,
        whose response never went out."""
        self.failing = False
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.last_write_at: datetime | None = None

    def drain_pass(self) -> bool:
        """Write what each segment holds now, one chunk each (more while a chunk comes back full); False when
        the store failed (the chunk is retried on the next pass, under the same batch ids).

        Only what is there when a segment's turn comes: records keep arriving while a chunk is
        written, and chasing them wrote a chunk of a few rows every 30 ms, a core's worth of
        Parquet files, instead of one per flush interval.
        """
        spool = self.spool
        limits = {segment.path: spool.readable_end(segment) for segment in list(spool.segments)}
        while True:
            if self._chunk is None:
                segment = spool.next_segment(limits)
                if segment is None:
                    return True
                chunk = spool.read_chunk(segment, self.chunk_bytes, limits[segment.path])
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
            self.write_status()

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
                built = chunk.frames[use_case] = build_log_frame(entries, self._reject)  # rejections counted once
            frame, kept = built
            if frame is None:
                chunk.done.add(use_case)
                continue
            try:
                self.written_rows += append_frame(use_case, frame, uri=self.uri, batch_id=chunk.batch_id(use_case))
            except LogSchemaError as exc:
                # The rows would change a logged column's type: every retry would fail the same way.
                for entry in kept:
                    self._reject(entry, exc)
            except Exception as exc:
                failed = True
                self.last_error = str(exc)[:500]
                self.last_error_at = datetime.now(UTC)
                log.warning("prediction log write failed (the rows stay in the spool, will retry): %s", exc)
                continue
            chunk.done.add(use_case)
        self.failing = failed
        if not failed:
            self.last_write_at = datetime.now(UTC)
        return not failed

    def _reject(self, entry: LogEntry, exc: Exception) -> None:
        self.rejected_rows += len(entry.ids)
        self.last_rejection = rejection(entry, exc)

    def status(self) -> dict[str, Any]:
        spool = self.spool
        chunk = self._chunk
        return {
            "pid": os.getpid(),
            "written_rows": self.written_rows,
            "rejected_rows": self.rejected_rows,
            "last_rejection": self.last_rejection,
            "recovered_rows": self.recovered_rows,
            "torn_bytes": self.torn_bytes,
            "failing": self.failing,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "last_write_at": self.last_write_at.isoformat() if self.last_write_at else None,
            "backlog_bytes": spool.backlog_bytes(),
            # Per segment of the writer that started this process: the rows in the store (or rejected). The
            # writer counts what it appended per segment, so the difference is its pending rows, exactly.
            "committed_rows": {s.stem: s.committed_rows for s in spool.segments if not s.adopted},
            # Rows of a dead writer's spool read and not yet written (the store failing).
            "pending_adopted_rows": sum(len(e.ids) for e in chunk.entries) if chunk and chunk.segment.adopted else 0,
        }

    def write_status(self) -> None:
        path = status_path(self.spool.folder, self.spool.owner)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(orjson.dumps(self.status()))
        os.replace(tmp, path)


def _stop_requested(timeout: float) -> bool:
    """Waits up to `timeout` for the service's `stop` on stdin; exits when stdin closed without it."""
    readable, _, _ = select.select([sys.stdin.fileno()], [], [], timeout)
    if not readable:
        return False
    data = os.read(sys.stdin.fileno(), 64)
    if b"stop" in data:
        return True
    if not data:
        log.error("prediction log drain: the service is gone; whoever adopts its spool drains it")
        raise SystemExit(EXIT_PARENT_GONE)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.serving.drain")
    parser.add_argument("--spool-dir", required=True)
    parser.add_argument("--owner", required=True, help="the writer whose spool this process drains")
    parser.add_argument("--log-uri", default=None)
    parser.add_argument("--flush-seconds", type=float, default=1.0)
    parser.add_argument("--retry-seconds", type=float, default=1.0)
    parser.add_argument("--chunk-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--parent-pid", type=int, default=None, help="the service's pid: exit if it is gone")
    args = parser.parse_args(argv)
    die_with_parent()
    if args.parent_pid is not None and os.getppid() != args.parent_pid:
        # The service died before PR_SET_PDEATHSIG was set: its spool is an orphan now, for another
        # writer's drain to adopt (as recovered rows); draining it here as a live writer's would race that.
        return EXIT_PARENT_GONE
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s log drain {args.owner} %(message)s")
    spool = Spool(Path(args.spool_dir))
    spool.attach(args.owner)
    drain = SpoolDrain(spool, args.log_uri, args.chunk_bytes)
    drain.write_status()
    stop = False
    while not stop:
        spool.refresh()
        drained = drain.drain_pass()
        drain.write_status()
        stop = _stop_requested(args.flush_seconds if drained else args.retry_seconds)
    # The service stopped appending: its last segment is final too. A few retries for a flaky store.
    spool.final = True
    spool.refresh()
    for attempt in range(3):
        if drain.drain_pass():
            break
        if attempt < 2:
            time.sleep(args.retry_seconds)
    done = spool.detach()
    drain.write_status()
    if not done:
        log.error("prediction log: rows are not in the store yet (%s); they stay in the spool %s and the next "
                  "start of the service writes them", drain.last_error, spool.folder)  # fmt: skip
    return 0 if done else EXIT_NOT_DRAINED


if __name__ == "__main__":
    raise SystemExit(main())
