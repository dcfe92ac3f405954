"""Shadow scoring: the `@shadow` version predicts every micro-batch too, off the response path.

The micro-batcher answers the requests with the champion first and only then hands the same
rows (and, when both versions read the same columns, the same DataFrame) to this use case's
shadow worker: one thread and a bounded queue. A request never waits for the shadow. What the
shadow can do wrong, and what happens then:

- it raises: the batch is counted as a failure; nothing is logged for it;
- it is slower than `deployment.shadow_timeout_ms` (measured from the champion's answer,
  queue wait included): its result is abandoned, not logged, counted as a time-out;
- it is so slow, or hangs, that batches pile up: the queue is bounded, a full queue drops new
  batches and counts them, and a batch stuck past its deadline is counted as a time-out while
  it is still running (so a hung shadow shows in /metrics at once, not when it returns).

A Python thread cannot be killed, so a shadow that hangs for good keeps its worker; the service
then scores no more shadow batches for that use case until it returns (all counted as dropped),
and answers every request with the champion as before. The shadow shares the process and its
GIL: a CPU-bound shadow costs the champion some throughput (docs/serving.md states the bound).

Rows the shadow scored in time go to the prediction log with role `shadow`, the shadow's
version and the same request ids, event times, source and features as the champion's rows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops.naming import ROLE_SHADOW
from mlops.serving.logwriter import LogEntry

if TYPE_CHECKING:
    import pandas as pd

    from mlops.serving.logwriter import PredictionLogWriter
    from mlops.serving.metrics import ServiceMetrics
    from mlops.serving.models import LoadedModel

log = logging.getLogger("mlops.serving")


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
    frame: pd.DataFrame | None
    """The champion's frame of `rows`, reused when the shadow reads the same columns; None: build it."""
    requests: list[RequestContext]
    deadline: float
    """time.monotonic() after which the result is abandoned."""


class ShadowScorer:
    """One use case's shadow worker: a bounded queue and one thread."""

    def __init__(
        self,
        use_case: str,
        writer: PredictionLogWriter,
        timeout_seconds: float,
        metrics: ServiceMetrics | None = None,
        queue_size: int = 32,
    ) -> None:
        self.use_case = use_case
        self.writer = writer
        self.timeout_seconds = timeout_seconds
        self.metrics = metrics
        self._queue: queue.Queue[ShadowJob] = queue.Queue(maxsize=queue_size)
        self.capacity = queue_size
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running: ShadowJob | None = None
        self._running_counted = False
        self.scored_batches = 0
        self.failures = 0
        self.timeouts = 0
        self.dropped_batches = 0
        self._last_warning = 0.0

    def submit(self, job: ShadowJob) -> bool:
        """Queue a micro-batch for the shadow without blocking; False (counted) when the queue is full."""
        self._count_overdue()
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            self.dropped_batches += 1
            if self.metrics is not None:
                self.metrics.shadow_dropped.labels(self.use_case).inc()
            return False

    def deadline(self) -> float:
        return time.monotonic() + self.timeout_seconds

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def busy_seconds(self) -> float:
        """How far past its deadline the batch in progress is (0 when none is late): a hung shadow grows it."""
        job = self._running
        return max(0.0, time.monotonic() - job.deadline) if job is not None else 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "queue_depth": self._queue.qsize(),
            "queue_capacity": self.capacity,
            "scored_batches": self.scored_batches,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "dropped_batches": self.dropped_batches,
            "timeout_ms": self.timeout_seconds * 1000,
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"shadow-{self.use_case}", daemon=True)
        self._thread.start()

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop after the batch in progress; what is still queued is not scored (the champion's rows are logged)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _count_overdue(self) -> None:
        # A batch still running past its deadline is a time-out now, counted once; the worker
        # then discards its result. Read on the submitting side so a hung shadow shows at once.
        job = self._running
        if job is None or self._running_counted or time.monotonic() <= job.deadline:
            return
        with self._lock:
            if self._running is job and not self._running_counted:
                self._running_counted = True
                self._timed_out(job)

    def _timed_out(self, job: ShadowJob) -> None:
        self.timeouts += 1
        if self.metrics is not None:
            self.metrics.shadow_timeouts.labels(self.use_case, job.shadow.version).inc()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if time.monotonic() > job.deadline:
                self._timed_out(job)  # waited in the queue behind a slow shadow past its bound
                continue
            with self._lock:
                self._running, self._running_counted = job, False
            try:
                self._score(job)
            finally:
                with self._lock:
                    self._running = None

    def _score(self, job: ShadowJob) -> None:
        shadow = job.shadow
        started = time.perf_counter()
        try:
            frame = job.frame if job.frame is not None and shadow.schema.names == job.champion.schema.names else None
            if frame is None:
                frame = shadow.schema.to_frame(_reordered(job.rows, job.champion.schema.names, shadow.schema.names))
            predictions, probabilities = shadow.predict_rows(frame)
        except Exception as exc:
            self.failures += 1
            if self.metrics is not None:
                self.metrics.shadow_failures.labels(self.use_case, shadow.version).inc()
            self._warn("shadow version %s of %s failed on a micro-batch: %s: %s", shadow.version, self.use_case,
                       type(exc).__name__, exc)  # fmt: skip
            return
        seconds = time.perf_counter() - started
        with self._lock:
            late = self._running_counted or time.monotonic() > job.deadline
            if late and not self._running_counted:
                self._running_counted = True
                self._timed_out(job)
        if self.metrics is not None:
            self.metrics.observe_predict(self.use_case, shadow.version, ROLE_SHADOW, len(job.rows), seconds)
        if late:
            return
        self.scored_batches += 1
        if self.metrics is not None:
            self.metrics.count_shadow_requests(self.use_case, shadow.version, len(job.requests))
        self._log(job, predictions, probabilities)

    def _log(self, job: ShadowJob, predictions: list[Any], probabilities: list[list[float]] | None) -> None:
        shadow = job.shadow
        start = 0
        for request in job.requests:
            end = start + len(request.ids)
            self.writer.submit(
                LogEntry(
                    use_case=shadow.use_case,
                    model_name=shadow.model_name,
                    model_version=shadow.version,
                    source=request.source,
                    ids=request.ids,
                    event_times=request.event_times,
                    names=job.champion.schema.names,
                    rows=job.rows[start:end],
                    predictions=predictions[start:end],
                    # The features as the champion's schema typed them: the same values as its rows.
                    feature_types=job.champion.schema.log_types,
                    classes=shadow.classes if probabilities is not None else None,
                    probabilities=probabilities[start:end] if probabilities is not None else None,
                    role=ROLE_SHADOW,
                )
            )
            start = end

    def _warn(self, message: str, *args: Any) -> None:
        # A failing shadow fails every batch: one line a minute is enough to see it.
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning(message, *args)


def _reordered(rows: list[list[Any]], have: list[str], want: list[str]) -> list[list[Any]]:
    """Rows in the shadow's column order; a KeyError (a failure) when it wants a column the champion lacks."""
    position = {name: i for i, name in enumerate(have)}
    index = [position[name] for name in want]
    return [[row[i] for i in index] for row in rows]
