"""An append-only local spool for the prediction log: an answered prediction survives a SIGKILL of the service.

Why: the log is appended to the store once a second. Without the
spool, the rows of that second live only in the process's memory, and a SIGKILL, an OOM kill
or a crash loses predictions whose answers already went out. With it, the request path appends
each answered request's rows to a local file (`Spool.append`: a copy into the file's shared
memory map, before the response is released) and a drain process (serving/drain.py, started by
serving/spoolwriter.py) drains the file into the store.

Durability, and what it costs: a record copied into the shared map is in the kernel's page
cache at once, and the page cache belongs to the kernel, not to the process: a killed process's
pages are still written out. So a SIGKILL or OOM kill of the service loses nothing it answered.
There is no `fsync`/`msync` per request (it would cost a disk flush, milliseconds, on every
answer): a power loss or kernel crash can lose the last seconds the kernel had not yet written
back (30 s at most with Linux's default `vm.dirty_expire_centisecs`). Surviving that too needs
an `msync` per micro-batch, or a disk with power-loss protection: docs/serving.md.

The files, in one folder per prediction log (`spool_dir_for`):

* `<owner>.lock`: held with `flock` for the life of the writer that owns the spool. The kernel
  drops the lock when the process dies, however it dies: a lock that can be taken is a dead
  owner's (an orphan), and another writer's drain process adopts and drains its segments.
* `<owner>.drain`: held with `flock` by the drain process of that writer while it runs (one at a
  time; an adopter waits until it is free). `<owner>.drain.json`: what it reports (/health).
* `<owner>-<n>.seg`: records, each `length (u32) | crc32 (u32) | payload` (payload: one
  request's log entry as JSON), then zeros to the segment's reserved size. A record cut short
  by the kill (a torn tail) fails its length or CRC check; it was never acknowledged (its copy
  had not finished, so its response had not gone out), and it is dropped and counted.
* `<owner>-<n>.journal`: the drain's bookkeeping, framed the same way. `begin [start, end)` is
  written before a chunk of records goes to the store, `commit end` after. On replay, a chunk
  begun but not committed is written again under the same batch ids, which the store
  writes idempotently (`Store.append(..., batch_id=)`), so every record reaches the store
  exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mlops.serving.logentry import LogEntry, decode_entry

log = logging.getLogger("mlops.serving")

HEADER = struct.Struct("<II")
"""A record's payload length and the CRC32 of its payload."""
SEGMENT_BYTES = 64 * 1024 * 1024
"""A segment past this size is sealed and a new one started; a sealed segment is deleted once drained."""
MAX_RECORD_BYTES = 256 * 1024 * 1024
"""Larger than any request the service accepts (max_body_bytes): a bigger length is a torn header."""


def spool_dir_for(log_uri: str | None) -> Path:
    """The default spool folder of a prediction log: one per log, so a drain never goes to another store."""
    from mlops.settings import get_settings

    settings = get_settings()
    uri = log_uri or settings.prediction_log_uri
    return settings.home / "spool" / hashlib.sha1(uri.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- records


def frame_record(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes, start: int = 0) -> tuple[list[tuple[int, bytes]], int, bool]:
    """The whole records in `data` from `start`: [(offset, payload)], the offset after the last, torn?

    `torn` is True when bytes follow the last whole record that are not a whole record (a
    short header or payload, or a CRC mismatch): the tail of a write the process did not finish.
    """
    records: list[tuple[int, bytes]] = []
    offset, end = start, len(data)
    while offset < end:
        if end - offset < HEADER.size:
            return records, offset, True
        length, crc = HEADER.unpack_from(data, offset)
        if length == 0 and crc == 0:
            return records, offset, False  # a segment's reserved zeros: no record is empty
        body_start = offset + HEADER.size
        if length > MAX_RECORD_BYTES or body_start + length > end:
            return records, offset, True
        payload = data[body_start : body_start + length]
        if zlib.crc32(payload) != crc:
            return records, offset, True
        records.append((offset, payload))
        offset = body_start + length
    return records, offset, False


def data_end(path: Path) -> int:
    """Where the records of a segment end: segments are reserved (zeros) beyond their last record.

    Walks the headers; a zero length is the end (no record is empty). A header whose record would
    run past the file is the torn tail's: the end is after it, and reading there finds it torn.
    """
    size = path.stat().st_size
    offset = 0
    with open(path, "rb") as handle:
        while offset + HEADER.size <= size:
            handle.seek(offset)
            length, _ = HEADER.unpack(handle.read(HEADER.size))
            if length == 0:
                return offset
            if offset + HEADER.size + length > size:
                return offset + HEADER.size
            offset += HEADER.size + length
    return min(offset, size)


def _lock_if_free(path: Path) -> int | bool | None:
    """`flock` a lock file: its descriptor, None if there is no such file, False if another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    return fd


# --------------------------------------------------------------------------- segments


@dataclass
class Segment:
    """One data file and its journal, with how far the drain has committed."""

    path: Path
    sealed_size: int | None = None
    """The final size of a segment nobody appends to any more (sealed, or an orphan's); None: still written."""
    committed: int = 0
    """Every record before this offset is in the store (or was rejected)."""
    begun: tuple[int, int] | None = None
    """A chunk begun (journalled) and not yet committed: written again under the same batch ids."""
    adopted: bool = False
    """Left by a writer that died: its rows count as recovered."""
    committed_rows: int = 0
    """Rows of the records before `committed` (from the journal): what the service counts as no longer pending."""
    scanned: int = 0
    """A live segment's whole records end at least here (the drain process's scan, `Spool.live_end`)."""

    @property
    def journal(self) -> Path:
        return self.path.with_suffix(".journal")

    @property
    def stem(self) -> str:
        return self.path.stem

    def load_journal(self) -> None:
        """The committed offset and a begun chunk, from the journal a previous writer left."""
        if not self.journal.exists():
            return
        records, _, _ = read_records(self.journal.read_bytes())
        for _, payload in records:
            kind, *values = orjson.loads(payload)
            if kind == "begin":
                self.begun = (values[0], values[1])
            elif kind == "commit":
                self.committed = values[0]
                self.committed_rows += values[1] if len(values) > 1 else 0
                if self.begun is not None and self.begun[1] <= self.committed:
                    self.begun = None

    def note(self, *record: Any) -> None:
        """Append one bookkeeping record to the journal (a chunk begun, a chunk committed)."""
        with open(self.journal, "ab") as handle:
            handle.write(frame_record(orjson.dumps(list(record))))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.journal.unlink(missing_ok=True)


@dataclass
class Chunk:
    """Records read from a segment, on their way to the store."""

    segment: Segment
    start: int
    end: int
    entries: list[LogEntry]
    torn_bytes: int = 0
    done: set[str] = field(default_factory=set)
    """Use cases of the chunk already written (a retry writes only the others)."""
    frames: dict[str, tuple[Any, list[LogEntry]]] = field(default_factory=dict)
    """Use case -> its log rows and the entries they hold, built once (a rejection is counted once)."""

    def batch_id(self, use_case: str) -> str:
        # The same records give the same id on a replay: the store writes them once.
        return f"{self.segment.stem}-{self.start}-{use_case}"


class Spool:
    """The segments one writer appends to, and the orphans it adopted from dead writers, in drain order."""

    def __init__(self, folder: Path, name: str = "serving", segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.owner = f"{name}-{os.getpid()}-{time.time_ns():x}"
        self._lock = threading.Lock()
        """Held around an append (requests on the event loop, the shadow worker's thread) and a rotation."""
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._capacity = 0
        self._size = 0
        self._seq = 0
        self._lock_fd: int | None = None
        self._adopted_locks: list[int] = []
        self._orphans: list[Segment] = []
        self._orphan_lock_files: list[Path] = []
        self.segments: list[Segment] = []
        """Orphans first (oldest first), then this writer's own, sealed then current."""
        self.current: Segment | None = None
        self.attached = False
        """Opened by the drain process of the writer `owner` (`attach`): segments are files, none mapped here."""
        self.final = False
        """Attached, and the owner stopped appending: its last segment is sealed too."""

    # ---- the request side

    def open(self, adopt: bool = True) -> None:
        """Take this writer's lock and map its first segment; `adopt`: also take dead writers' segments to
        drain (False when a drain process does that: `attach`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # Locked under a temporary name, then renamed: another writer scanning for orphans must never
        # find this lock file before it is held.
        tmp = self.folder / f".{self.owner}.lock.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, self.folder / f"{self.owner}.lock")
        self._lock_fd = fd
        if adopt:
            self._adopt_orphans()
        self._start_segment()

    def append(self, payload: bytes) -> tuple[Segment, int, int]:
        """Append one record: where it went (segment, start, end); raises OSError (disk full, folder gone).

        A copy into the segment's shared memory map, not a `write`: `os.write` releases the GIL, and
        whenever another thread (the log writer building a flush) wanted it, the event loop waited for it
        back, a switch interval of up to 5 ms. In the bench that cost 36-40 % of single-row throughput;
        in-process, a write took 42 µs with a busy thread beside it against 3 µs for the queue alone. The
        mapped pages are the file's page cache, as a write's are: a SIGKILL loses nothing copied in.
        """
        record = frame_record(payload)
        with self._lock:
            if self._size + len(record) > self._capacity:
                self._start_segment(len(record))
            segment, mapped = self.current, self._map
            assert segment is not None and mapped is not None, "Spool.open() first"
            start = self._size
            mapped[start : start + len(record)] = record
            self._size = start + len(record)
        return segment, start, start + len(record)

    def _start_segment(self, at_least: int = 0) -> None:
        """Seal the current segment and map a new one, its disk space reserved up front.

        Reserved (`posix_fallocate`), because a page of a sparse mapping that the disk cannot
        hold is a SIGBUS when it is first written: a full disk fails here, as an OSError the
        writer counts, never as a crash of the service.
        """
        path = self.folder / f"{self.owner}-{self._seq:06d}.seg"
        capacity = max(self.segment_bytes, at_least)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.posix_fallocate(fd, 0, capacity)
            mapped = mmap.mmap(fd, capacity)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._seq += 1
        if self.current is not None:
            self.current.sealed_size = self._size
        self._unmap()
        self._fd, self._map, self._capacity, self._size = fd, mapped, capacity, 0
        self.current = Segment(path)
        self.segments.append(self.current)

    def _unmap(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def readable_end(self, segment: Segment) -> int:
        """How far the drain may read: a segment still written is read up to its last whole append only."""
        if segment.sealed_size is not None:
            return segment.sealed_size
        if self.attached:
            return self.live_end(segment)
        with self._lock:
            return segment.sealed_size if segment.sealed_size is not None else self._size

    def seal(self) -> None:
        """Stop appending (the writer's stop): the current segment is final; the lock stays held."""
        with self._lock:
            self._unmap()
            if self.current is not None:
                self.current.sealed_size = self._size

    def release(self, drained: bool) -> None:
        """After `seal` and the drain process's exit: the lock goes with this writer; its files too if `drained`
        (else the next writer to start adopts what is left)."""
        if drained:
            for suffix in (".lock", ".drain", ".drain.json"):
                (self.folder / f"{self.owner}{suffix}").unlink(missing_ok=True)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    # ---- the drain process's side (serving/drain.py)

    def attach(self, owner: str) -> None:
        """Drain the spool of the live writer `owner` (the service that started this process), and the orphans.

        Takes `<owner>.drain` with `flock`, waiting while an earlier drain process of the same
        writer exits: one drain per writer at a time, and an adopter skips a writer whose
        drain still runs, so no record is written by two processes at once.
        """
        self.owner, self.attached = owner, True
        fd = os.open(self.folder / f"{owner}.drain", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        self.refresh()

    def refresh(self) -> None:
        """The owner's segments, new ones added and all but the last sealed (all once `final`); new orphans."""
        known = {segment.path for segment in self.segments}
        own = sorted(self.folder.glob(f"{self.owner}-{'[0-9]' * 6}.seg"))
        for path in own:
            if path not in known:
                segment = Segment(path)
                segment.load_journal()
                segment.scanned = segment.committed
                self.segments.append(segment)
        last = own[-1] if own else None
        for segment in self.segments:
            if segment.sealed_size is None and (self.final or segment.path != last):
                # The writer starts a segment only after its last append to the one before finished.
                segment.sealed_size = data_end(segment.path)
        self._adopt_orphans()

    def live_end(self, segment: Segment) -> int:
        """Where the whole records of a segment its writer still appends to end: a record being copied in
        (its length or CRC not yet right) ends them, and is read on a later pass."""
        offset = max(segment.scanned, segment.committed)
        with open(segment.path, "rb") as handle:
            while True:
                handle.seek(offset)
                header = handle.read(HEADER.size)
                if len(header) < HEADER.size:
                    break
                length, crc = HEADER.unpack(header)
                if length == 0 or length > MAX_RECORD_BYTES:
                    break
                payload = handle.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                offset += HEADER.size + length
        segment.scanned = offset
        return offset

    def detach(self) -> bool:
        """The drain process's end: True when every segment it knew is drained (and removed)."""
        drained = all(s.sealed_size is not None and s.committed >= s.sealed_size for s in self.segments)
        if drained:
            for segment in list(self.segments):
                segment.remove()
            self.segments = []
            self._release_orphans()
        for fd in self._adopted_locks:  # undrained orphans: the next drain adopts them
            with contextlib.suppress(OSError):
                os.close(fd)
        self._adopted_locks = []
        return drained

    # ---- the writer side

    def _adopt_orphans(self) -> None:
        """Take the segments of every writer whose lock is free (its process died) to drain them first."""
        for lock_file in sorted(self.folder.glob("*.lock")):
            owner = lock_file.name.removesuffix(".lock")
            if owner == self.owner:
                continue
            try:
                fd = os.open(lock_file, os.O_RDWR)
            except FileNotFoundError:
                continue  # its owner finished cleanly, or another writer adopted and drained it meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # alive, or adopted by another writer now
                continue
            drain_fd = _lock_if_free(self.folder / f"{owner}.drain")
            if drain_fd is False:
                os.close(fd)  # its drain process still runs (it ends with its writer): a later pass adopts
                continue
            self._adopted_locks.append(fd)
            if drain_fd is not None:
                self._adopted_locks.append(drain_fd)
            for path in sorted(self.folder.glob(f"{owner}-{'[0-9]' * 6}.seg")):
                segment = Segment(path, sealed_size=data_end(path), adopted=True)
                segment.load_journal()
                self.segments.append(segment)
                self._orphans.append(segment)
                log.warning(
                    "prediction log spool: draining %s left by a writer that did not stop cleanly "
                    "(%d bytes, %d committed)", path.name, segment.sealed_size, segment.committed,
                )  # fmt: skip
            # The lock file goes once its segments are drained (`_release_orphans`).
            self._orphan_lock_files.append(lock_file)
        self._release_orphans()  # the lock files of owners that left no segment

    def next_segment(self, limits: dict[Path, int]) -> Segment | None:
        """The first segment with records to drain before its limit, after removing the drained ones nobody
        appends to any more."""
        for segment in list(self.segments):
            if segment.sealed_size is not None and segment.committed >= segment.sealed_size:
                segment.remove()
                self.segments.remove(segment)
                self._release_orphans()
        return next((s for s in self.segments if min(self.readable_end(s), limits.get(s.path, 0)) > s.committed), None)

    def read_chunk(self, segment: Segment, max_bytes: int, stop_at: int | None = None) -> Chunk | None:
        """The next records of `segment` after its committed offset, about `max_bytes` of them (and not past
        `stop_at`, a record's start).

        After a restart, a chunk begun but not committed is read again exactly, so that its
        batch ids are the same. At the end of a segment nobody appends to, bytes that are not a
        whole record are a torn tail: dropped and counted (`Chunk.torn_bytes`).
        """
        end = self.readable_end(segment)
        start = segment.committed
        if start >= end:
            return None
        if segment.begun is not None:
            limit = min(end, segment.begun[1])
        else:
            limit = min(end, start + max_bytes, stop_at if stop_at is not None else end)
            with open(segment.path, "rb") as handle:
                handle.seek(start)
                header = handle.read(HEADER.size)
            if len(header) == HEADER.size:
                length = HEADER.unpack(header)[0]
                if length <= MAX_RECORD_BYTES:
                    # A record larger than max_bytes is read whole, on its own.
                    limit = min(end, max(limit, start + HEADER.size + length))
        with open(segment.path, "rb") as handle:
            handle.seek(start)
            data = handle.read(limit - start)
        records, stop, torn = read_records(data)
        torn_bytes = 0
        if torn and limit >= end:
            if segment.sealed_size is None:
                # A live segment is read up to its last whole append only: this is damage, not a torn tail.
                log.error("prediction log spool: %s is unreadable from offset %d", segment.path, start + stop)
            torn_bytes = len(data) - stop
            stop = len(data)
        if stop == 0:
            return None
        return Chunk(segment, start, start + stop, [decode_entry(p) for _, p in records], torn_bytes)

    def begin(self, chunk: Chunk) -> None:
        if chunk.segment.begun != (chunk.start, chunk.end):
            chunk.segment.begun = (chunk.start, chunk.end)
            chunk.segment.note("begin", chunk.start, chunk.end)

    def commit(self, chunk: Chunk) -> None:
        segment = chunk.segment
        rows = sum(len(entry.ids) for entry in chunk.entries)
        segment.note("commit", chunk.end, rows)
        segment.committed, segment.begun = chunk.end, None
        segment.committed_rows += rows

    def backlog_bytes(self) -> int:
        return sum(max(0, self.readable_end(s) - s.committed) for s in list(self.segments))

    def _release_orphans(self) -> None:
        """Once every adopted segment is drained, the dead owners' lock files go too."""
        if any(s in self.segments for s in self._orphans):
            return
        for lock_file in self._orphan_lock_files:
            lock_file.unlink(missing_ok=True)
            for suffix in (".drain", ".drain.json"):
                (self.folder / f"{lock_file.name.removesuffix('.lock')}{suffix}").unlink(missing_ok=True)
        for fd in self._adopted_locks:
            os.close(fd)
        self._orphans, self._orphan_lock_files, self._adopted_locks = [], [], []
