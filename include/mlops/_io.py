"""Two file mechanisms every stage needs: a write that is never seen half done, and a lock across processes.

Airflow runs tasks in separate processes (and a retry may race a manual re-run), so a
file another step reads must appear whole or not at all, and a read-modify-write of a
shared folder must hold a lock that other processes see too.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block succeeds.

    The temporary file is in the same folder (a rename within one file system is atomic)
    and is removed if the block raises, so a crash never leaves a half file under the
    real name, and a re-run simply overwrites.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextmanager
def file_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` against other threads and other processes alike.

    `flock` serialises processes; the per-path thread lock makes threads of one process
    queue in Python first, so each holds no descriptor while it waits. The file is created
    if missing and never removed (removing it would let a waiter lock a file nobody else sees).
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    key = lock_file.resolve()
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock, open(key, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
