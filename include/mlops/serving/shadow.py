"""Shadow scoring: the `@shadow` version predicts the champion's micro-batches too, off the response path
and out of the service's process.

The micro-batcher answers the requests with the champion first and only then hands the batch to
this use case's `ShadowScorer`: a pickle of its rows, ids, event times and deadline written to a
pipe without blocking (`submit`, a few tens of microseconds on the event loop). At the other end
is a worker process of its own (`serving/shadow_worker.py`), which loads the same `@shadow`
version, predicts what it is sent and logs those rows with role `shadow` through its own log
writer. A thread here (the supervisor) starts that process, tells it which version to load,
reads its reports into /metrics and /health, and restarts it when it dies or hangs.

Why a process: the previous design scored on a thread of the service. Under load that thread's
GIL hand-offs slowed the event loop by more than the shadow's own CPU (docs/serving.md, "Shadow
and canary cost"), and a thread that hangs cannot be killed, so a hung shadow ended shadowing
until a restart. What the shadow can do wrong now, and what happens:

- it raises: the micro-batch counts as a failure; nothing is logged for it;
- it is slower than `deployment.shadow_timeout_ms` (from the champion's answer, queue wait
  included): its result is abandoned, not logged, counted as a time-out; a batch still running
  past its deadline is counted at once (so a hung shadow shows in /metrics while it hangs);
- it falls behind: more than `queue_size` micro-batches waiting, a full pipe, or no worker ready
  (starting, loading a version, restarting): new micro-batches are dropped and counted;
- it hangs: a batch still running `deployment.shadow_hang_ms` past its deadline gets the worker
  SIGKILLed and a new one started (counted in `mlops_serving_shadow_restarts_total`); so do a
  worker that exits and one still loading a version after LOAD_SECONDS. Restarts back off (1 s
  doubling to 60 s) while no batch is scored between them.

With `deployment.shadow_sample` below 1, only that random fraction of micro-batches is shadowed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.naming import ROLE_SHADOW
from mlops.serving.shadow_worker import HEADER, READY_SEQ, RUNNING_DEADLINE, RUNNING_SEQ, STATE_SLOTS, TAKEN, ModelRef

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from mlops.serving.metrics import ServiceMetrics
    from mlops.serving.models import LoadedModel

log = logging.getLogger("mlops.serving")

PIPE_BYTES = 1 << 20
"""Asked of the kernel for the jobs pipe (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default)."""
MAX_BACKOFF_SECONDS = 60.0
LOAD_SECONDS = 300.0
"""A worker still loading a version after this long is taken for hung too (a download or unpickling that hangs)."""


@dataclass(frozen=True)
class RequestContext:
    """What the log needs of one request besides its rows: known before it is predicted."""

    ids: list[str]
    event_times: list[datetime]
    source: str


@dataclass(frozen=True)
class ShadowJob:
    champion: LoadedModel
    """The version whose schema ordered `rows` (the one that answered)."""
    shadow: LoadedModel
    rows: list[list[Any]]
    requests: list[RequestContext]
    deadline: float
    """time.monotonic() after which the result is abandoned."""


class _JobsPipe:
    """The write end of the jobs pipe. Never blocks: a frame that does not fit now is refused.

    A frame larger than the pipe's atomic size may go in part; its rest is written first on
    the next send or flush, so frames never interleave.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError, AttributeError):
            import fcntl

            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        self.fd = fd
        self._rest = b""
        self._lock = threading.Lock()

    def send(self, payload: bytes) -> bool:
        frame = HEADER.pack(len(payload)) + payload
        with self._lock:
            if self.fd < 0 or (self._rest and not self._flush()):
                return False
            try:
                written = os.write(self.fd, frame)
            except (BlockingIOError, BrokenPipeError, OSError):
                return False
            if written < len(frame):
                self._rest = frame[written:]
            return True

    def flush(self) -> None:
        with self._lock:
            if self.fd >= 0 and self._rest:
                self._flush()

    def _flush(self) -> bool:
        try:
            written = os.write(self.fd, self._rest)
        except (BlockingIOError, BrokenPipeError, OSError):
            return False
        self._rest = self._rest[written:]
        return not self._rest

    def close(self) -> None:
        # Under the lock: a send in progress on the event loop must never write to a reused fd number.
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


@dataclass
class _Worker:
    """One worker process and what the service knows of it."""

    process: subprocess.Popen[bytes]
    pipe: _JobsPipe
    reports: Connection
    state: memoryview[float]
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    model_seq: int = 0
    """The seq of the last model message sent; the worker is ready for jobs once it reports it loaded."""
    version: str | None = None
    """The shadow version it was told to load (None: none)."""
    shipped: float = 0.0
    """time.monotonic() when it was told to load `version`."""
    loaded: str | None = None
    load_error: str | None = None
    schemas: dict[tuple[str, ...], int] = field(default_factory=dict)
    sent: int = 0
    outstanding: dict[int, str] = field(default_factory=dict)
    """Jobs sent and not yet accounted for: seq → shadow version."""
    log: dict[str, Any] = field(default_factory=dict)

    def ready_for(self, version: str) -> bool:
        return self.version == version and self.model_seq > 0 and self.state[READY_SEQ] == self.model_seq

    def depth(self) -> int:
        return max(0, self.sent - int(self.state[TAKEN]))


class ShadowScorer:
    """One use case's shadow: the supervisor of its worker process, and what the micro-batcher submits to."""

    def __init__(
        self,
        use_case: str,
        timeout_seconds: float,
        metrics: ServiceMetrics | None = None,
        *,
        model_of: Callable[[], LoadedModel | None],
        loader: Callable[[ModelRef], LoadedModel],
        log_uri: str | None = None,
        log_flush_seconds: float = 1.0,
        spool_dir: Path | None = None,
        sample: float = 1.0,
        hang_seconds: float = 5.0,
        queue_size: int = 32,
    ) -> None:
        self.use_case = use_case
        self.timeout_seconds = timeout_seconds
        self.metrics = metrics
        self.model_of = model_of
        """The `@shadow` the service holds now (ModelCache.get_shadow); the worker is told to load the same."""
        self.loader = loader
        """Loads a version in the worker (pickled to it): `shadow_worker.RegistryLoader` in the service."""
        self.log_uri = log_uri
        self.log_flush_seconds = log_flush_seconds
        self.spool_dir = spool_dir
        """The worker's log writer spools there too (its rows survive its SIGKILL); None: memory only."""
        self.sample = sample
        self.hang_seconds = hang_seconds
        self.capacity = queue_size
        self._worker: _Worker | None = None
        self._seq = itertools.count(1)
        self._random = random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._strikes = 0
        """Restarts since a batch was last scored: sets the back-off."""
        self._next_start = 0.0
        self._last_warning = 0.0
        self.scored_batches = 0
        self.failures = 0
        self.timeouts = 0
        self.dropped_batches = 0
        self.sampled_out_batches = 0
        self.restarts = 0
        self.last_error: str | None = None

    # The event loop's side: called by the micro-batcher after the champion answered.

    def submit(self, job: ShadowJob) -> bool:
        """Hand a micro-batch to the worker without blocking; False (counted) when it is sampled out or dropped."""
        if self.sample < 1.0 and self._random.random() >= self.sample:
            self.sampled_out_batches += 1
            return False
        worker = self._worker
        if worker is None or not worker.ready_for(job.shadow.version) or worker.depth() >= self.capacity:
            return self._dropped()
        names = tuple(job.champion.schema.names)
        sid = worker.schemas.get(names)
        if sid is None:
            sid = len(worker.schemas) + 1
            schema = ("schema", sid, list(names), job.champion.schema.log_types)
            if not worker.pipe.send(pickle.dumps(schema, protocol=pickle.HIGHEST_PROTOCOL)):
                return self._dropped()
            worker.schemas[names] = sid
        seq = next(self._seq)
        requests = [(r.ids, r.event_times, r.source) for r in job.requests]
        message = ("job", seq, job.shadow.version, sid, job.rows, requests, job.deadline)
        if not worker.pipe.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)):
            return self._dropped()
        worker.outstanding[seq] = job.shadow.version
        worker.sent += 1
        return True

    def deadline(self) -> float:
        return time.monotonic() + self.timeout_seconds

    def _dropped(self) -> bool:
        if self.metrics is not None:
            self.metrics.shadow_dropped.labels(self.use_case).inc()
        self.dropped_batches += 1
        return False

    # What /health and /metrics read.

    def queue_depth(self) -> int:
        worker = self._worker
        return worker.depth() if worker is not None else 0

    def busy_seconds(self) -> float:
        """How far past its deadline the batch in progress is (0 when none is late): a hung shadow grows it."""
        worker = self._worker
        if worker is None:
            return 0.0
        deadline = worker.state[RUNNING_DEADLINE]
        return max(0.0, time.monotonic() - deadline) if deadline > 0 else 0.0

    def log_stats(self) -> dict[str, Any]:
        """The worker's log writer, as it last reported it (its rows: the shadow's)."""
        worker = self._worker
        return dict(worker.log) if worker is not None else {}

    def stats(self) -> dict[str, Any]:
        worker = self._worker
        alive = worker is not None and worker.process.poll() is None
        state = (
            "down" if not alive or worker is None
            else "ready" if worker.version is not None and worker.loaded == worker.version
            else "load failed" if worker.load_error is not None
            else "loading" if worker.version is not None
            else "idle"
        )  # fmt: skip
        return {
            "queue_depth": self.queue_depth(),
            "queue_capacity": self.capacity,
            "scored_batches": self.scored_batches,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "dropped_batches": self.dropped_batches,
            "sampled_out_batches": self.sampled_out_batches,
            "sample": self.sample,
            "timeout_ms": self.timeout_seconds * 1000,
            "hang_ms": self.hang_seconds * 1000,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "worker": {
                "pid": worker.process.pid if worker is not None else None,
                "state": state,
                "version": worker.loaded if worker is not None else None,
                "load_error": worker.load_error if worker is not None else None,
                "started_at": worker.started_at.isoformat() if worker is not None else None,
            },
            "log": self.log_stats(),
        }

    # The supervisor thread.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name=f"shadow-{self.use_case}", daemon=True)
        self._thread.start()

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the worker's pipe and wait for it to drain its log writer; SIGKILL it past `timeout`.

        What is still queued is not scored (the champion's rows are logged by the service).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout + 2.0)

    def _supervise(self) -> None:
        worker: _Worker | None = None
        try:
            while not self._stop.is_set():
                worker = self._worker
                if worker is None or worker.process.poll() is not None:
                    if worker is not None:
                        self._lost(worker, "exited", f"the worker exited with code {worker.process.returncode}")
                    worker = self._worker = self._spawn_when_due()
                    if worker is None:
                        continue
                self._read_reports(worker, 0.1)
                worker.pipe.flush()
                self._ship(worker)
                self._watch(worker)
        except Exception:
            log.exception("the shadow supervisor of %s failed; shadowing stops", self.use_case)
        finally:
            if self._worker is not None:
                self._shutdown(self._worker)

    def _spawn_when_due(self) -> _Worker | None:
        wait = self._next_start - time.monotonic()
        if wait > 0:
            self._stop.wait(min(wait, 0.5))
            return None
        try:
            return self._spawn()
        except Exception as exc:
            self._note(f"cannot start the shadow worker: {type(exc).__name__}: {exc}")
            self._back_off()
            return None

    def _spawn(self) -> _Worker:
        from multiprocessing.connection import Connection

        jobs_read, jobs_write = os.pipe()
        reports_read, reports_write = os.pipe()
        with tempfile.TemporaryFile(prefix="mlops-shadow-") as block_file:
            block_file.truncate(STATE_SLOTS * 8)
            block = mmap.mmap(block_file.fileno(), STATE_SLOTS * 8)
            command = [
                sys.executable, "-m", "mlops.serving.shadow_worker", "--use-case", self.use_case,
                "--jobs-fd", str(jobs_read), "--reports-fd", str(reports_write),
                "--state-fd", str(block_file.fileno()), "--log-flush-seconds", str(self.log_flush_seconds),
                *(["--log-uri", self.log_uri] if self.log_uri else []),
                *(["--spool-dir", str(self.spool_dir)] if self.spool_dir else []),
            ]  # fmt: skip
            try:
                # The same process group as the service: stopping the group stops the worker too.
                process = subprocess.Popen(command, pass_fds=(jobs_read, reports_write, block_file.fileno()))
            finally:
                os.close(jobs_read)
                os.close(reports_write)
        worker = _Worker(process, _JobsPipe(jobs_write), Connection(reports_read, writable=False),
                         memoryview(block).cast("d"))  # fmt: skip
        log.warning("use case %s: shadow worker started (pid %d)", self.use_case, process.pid)
        return worker

    def _ship(self, worker: _Worker) -> None:
        """Tell the worker to load the version the service shadows with now (or to forget it)."""
        model = self.model_of()
        wanted = model.version if model is not None else None
        if wanted == worker.version:
            return
        if model is None:
            if worker.pipe.send(pickle.dumps(("unload",))):
                worker.version = worker.loaded = None
            return
        seq = next(self._seq)
        ref = ModelRef(model.model_name, model.version, model.run_id, model.aliases)
        try:
            payload = pickle.dumps(("model", seq, self.loader, ref), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self._note(f"cannot hand version {model.version} to the shadow worker: {type(exc).__name__}: {exc}")
            return
        if worker.pipe.send(payload):
            # The seq first: the event loop reads `version` and then the seq, and must never see
            # the new version with the old seq the worker reports ready.
            worker.model_seq = seq
            worker.version = model.version
            worker.loaded = worker.load_error = None
            worker.shipped = time.monotonic()

    def _read_reports(self, worker: _Worker, timeout: float) -> None:
        try:
            if not worker.reports.poll(timeout):
                return
            while True:
                self._apply(worker, pickle.loads(worker.reports.recv_bytes()))
                if not worker.reports.poll(0):
                    return
        except (EOFError, OSError):
            self._stop.wait(timeout)  # the worker is gone; the next round restarts it

    def _apply(self, worker: _Worker, report: dict[str, Any]) -> None:
        worker.log = report.get("log") or worker.log
        for event in report.get("events", []):
            kind, version = event[0], event[1]
            if kind == "loaded":
                worker.loaded = version
            elif kind == "load_failed":
                worker.load_error = event[2]
                self._note(f"the worker could not load version {version}: {event[2]}")
            elif kind == "predict":
                if self.metrics is not None:
                    self.metrics.observe_predict(self.use_case, version, ROLE_SHADOW, event[2], event[3])
            elif worker.outstanding.pop(event[2], None) is None:
                continue  # counted already (a batch seen overdue while it ran)
            # /metrics before the plain counts /health shows: whoever sees a count sees its metric too.
            elif kind == "scored":
                if self.metrics is not None:
                    self.metrics.count_shadow_requests(self.use_case, version, event[3])
                self.scored_batches += 1
                self._strikes = 0
            elif kind == "failed":
                if self.metrics is not None:
                    self.metrics.shadow_failures.labels(self.use_case, version).inc()
                self._note(f"version {version} failed on a micro-batch: {event[3]}")
                self.failures += 1
            elif kind in ("late", "expired"):
                self._timed_out(version)

    def _watch(self, worker: _Worker) -> None:
        """Count the batch in progress as a time-out once it is past its deadline; kill the worker if it hangs."""
        loading = worker.version is not None and worker.loaded is None and worker.load_error is None
        if loading and time.monotonic() - worker.shipped > LOAD_SECONDS:
            self._lost(worker, "hung", f"loading version {worker.version} took over {LOAD_SECONDS:.0f} s: killed")
            self._worker = None
            return
        deadline = worker.state[RUNNING_DEADLINE]
        seq = int(worker.state[RUNNING_SEQ])
        if deadline <= 0 or deadline != worker.state[RUNNING_DEADLINE]:
            return
        overdue = time.monotonic() - deadline
        if overdue <= 0:
            return
        version = worker.outstanding.pop(seq, None)
        if version is not None:
            self._timed_out(version)
        if overdue > self.hang_seconds:
            self._lost(worker, "hung", f"a micro-batch ran {overdue:.1f} s past its deadline: killed")
            self._worker = None

    def _timed_out(self, version: str) -> None:
        if self.metrics is not None:
            self.metrics.shadow_timeouts.labels(self.use_case, version).inc()
        self.timeouts += 1

    def _lost(self, worker: _Worker, reason: str, detail: str) -> None:
        """The worker died or hangs: kill it, count what it never finished as time-outs, and back off."""
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=5)
        for version in worker.outstanding.values():
            self._timed_out(version)
        worker.outstanding.clear()
        self._close(worker)
        if self.metrics is not None:
            self.metrics.shadow_restarts.labels(self.use_case, reason).inc()
        self.restarts += 1
        self._note(f"worker pid {worker.process.pid} {reason}: {detail}; starting another", always=True)
        self._back_off()

    def _back_off(self) -> None:
        delay = min(MAX_BACKOFF_SECONDS, 2.0 ** (self._strikes - 1)) if self._strikes else 0.0
        self._strikes += 1
        self._next_start = time.monotonic() + delay

    def _shutdown(self, worker: _Worker) -> None:
        # EOF on its pipe: the worker drains its log writer, reports once more and exits.
        worker.pipe.close()
        deadline = time.monotonic() + 10.0
        while worker.process.poll() is None and time.monotonic() < deadline:
            self._read_reports(worker, 0.1)
        if worker.process.poll() is None:
            log.warning("use case %s: the shadow worker did not stop in 10 s: killed", self.use_case)
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=5)
        else:
            self._read_reports(worker, 0)
        self._close(worker)

    @staticmethod
    def _close(worker: _Worker) -> None:
        worker.pipe.close()
        with contextlib.suppress(OSError):
            worker.reports.close()

    def _note(self, message: str, always: bool = False) -> None:
        # A failing shadow fails every batch: one line a minute is enough to see it.
        self.last_error = f"{datetime.now(UTC).isoformat()} {message}"[:500]
        now = time.monotonic()
        if always or now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("use case %s: shadow %s", self.use_case, message)
