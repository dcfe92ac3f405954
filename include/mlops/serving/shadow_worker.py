"""The shadow's own process: scores the micro-batches the service hands it and logs them.

`python -m mlops.serving.shadow_worker` is started by `serving/shadow.py` (one per service
worker process and shadowed use case), never by hand. Why a process and not a thread: the
shadow's work (a second predict per micro-batch, and as many rows again to log) then runs
on another core without the service's GIL, and a shadow that hangs can be killed and
started again (a thread cannot be killed). docs/serving.md, "Shadow scoring".

What passes between the two, over two pipes and a small shared memory block:

- service → worker, the jobs pipe: frames of a 4-byte length and a pickle (the framing of
  `multiprocessing.connection`). `("model", seq, loader, ref)`: load the shadow version `ref`
  with `loader` (the registry's, `RegistryLoader`); `("schema", sid, names, log_types)`: the
  champion's column order and log types, sent once per champion version; `("job", seq,
  version, sid, rows, requests, deadline)`: one micro-batch the champion answered, its rows
  as the champion's schema ordered them, `(ids, event_times, source)` per request, and the
  `time.monotonic()` after which its result is abandoned (the clock is the machine's, the
  same in both processes); `("unload",)`: `@shadow` is gone.
- worker → service, the reports pipe: every 0.1 s at most, what happened since, as
  `{"events": [...], "log": writer stats, "version": loaded version}`. Events: `("loaded",
  version, seconds)`, `("load_failed", version, error)`, `("predict", version, rows,
  seconds)`, and per job `("scored", version, seq, requests)`, `("failed", version, seq,
  error)`, `("late", version, seq)` (predicted after its deadline: not logged),
  `("expired", version, seq)` (its deadline passed before it could start: not predicted).
- the shared block (float64 slots): jobs taken off the pipe, the group in progress (its
  first job's seq and deadline; 0 when idle) and the model seq loaded, so the service sees
  a hung shadow at once, without a message.

The worker ends when the jobs pipe closes (the service stops it), draining its log writer
first, or at once when the service process dies (PR_SET_PDEATHSIG on Linux, and the parent pid
checked every 0.1 s). It ignores SIGTERM and SIGINT: they reach it with the rest of the process
group when the service is stopped, and the service stops it in its own shutdown, after which
an exit would look like a crash (and be restarted).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import mmap
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops.naming import ROLE_SHADOW, SHADOW
from mlops.serving.children import die_with_parent

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from mlops.config import UseCase
    from mlops.serving.models import LoadedModel
    from mlops.serving.spoolwriter import LogWriter

log = logging.getLogger("mlops.serving")

HEADER = struct.Struct("!i")
"""A frame's length, as `multiprocessing.connection.Connection.send_bytes` writes it."""
TAKEN, RUNNING_SEQ, RUNNING_DEADLINE, READY_SEQ = range(4)
STATE_SLOTS = 8
"""The shared block: float64 slots (jobs taken off the pipe; the group in progress; the model seq loaded)."""
REPORT_SECONDS = 0.1
MAX_GROUP_ROWS = 4096
"""Jobs waiting together are predicted in one call, up to this many rows."""
GATHER_SECONDS = 0.02
"""How long the worker waits for more jobs after the first before predicting them together. A predict call
costs about the same for 1 row as for 100 (docs/serving.md, "Why it is fast"): at a few hundred requests a
second most micro-batches hold one request, and gathering them cuts the shadow's CPU several times over. Far
inside shadow_timeout_ms (250 ms by default); skipped when a job's deadline is closer than twice this."""
NICENESS = 10
"""Once it has loaded its first version, the worker runs at this `nice`: when the champion's process and the
shadow want the same core, the kernel gives it to the champion (CFS weights 1024 to 110); the shadow then falls
behind, and its late batches are counted, rather than the champion's answers. (Not before: its imports and
first load would crawl on a busy machine, and shadowing would start that much later.)"""

Request = tuple[list[str], list[datetime], str]
"""One request of a micro-batch: its ids, event times and source."""


@dataclass(frozen=True)
class ModelRef:
    """Which registered version the worker should load (what `VersionInfo` holds, minus the tags)."""

    name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class RegistryLoader:
    """Loads a shadow version from the registry exactly as the service loads its models (`load_version`)."""

    use_case: UseCase
    tracking_uri: str | None
    array_predict: bool

    def __call__(self, ref: ModelRef) -> LoadedModel:
        from mlops.mlflow.models import VersionInfo
        from mlops.serving.models import load_version

        info = VersionInfo(ref.name, ref.version, ref.run_id, ref.aliases)
        return load_version(self.use_case, info, SHADOW, self.tracking_uri, self.array_predict)


@dataclass
class Job:
    seq: int
    version: str
    sid: int
    rows: list[list[Any]]
    requests: list[Request]
    deadline: float


class ShadowWorker:
    """The loop of the worker process, apart from its pipes' set-up so that it can be tested in-process."""

    def __init__(
        self,
        writer: LogWriter,
        state: Any,
        report: Callable[[dict[str, Any]], None],
        niceness: int = 0,
    ) -> None:
        self.writer = writer
        self.niceness = niceness
        """Added to the process's nice value after the first version loaded (NICENESS in the worker process)."""
        self.state = state
        """The shared float64 slots (a memoryview, or any list in tests)."""
        self.report = report
        self.model: LoadedModel | None = None
        self.schemas: dict[int, tuple[list[str], dict[str, str] | None]] = {}
        self.events: list[tuple[Any, ...]] = []
        self._last_report = 0.0
        self._niced = False

    def handle(self, messages: Sequence[tuple[Any, ...]]) -> None:
        """Act on messages in order; consecutive jobs of one version and schema are predicted together."""
        group: list[Job] = []
        for message in messages:
            kind = message[0]
            if kind == "job":
                job = Job(*message[1:])
                self.state[TAKEN] += 1
                if group and (group[0].version, group[0].sid) != (job.version, job.sid):
                    self._score(group)
                    group = []
                group.append(job)
                continue
            if group:
                self._score(group)
                group = []
            if kind == "model":
                self._load(*message[1:])
            elif kind == "schema":
                _, sid, names, log_types = message
                self.schemas[sid] = (names, log_types)
            elif kind == "unload":
                self.model = None
        if group:
            self._score(group)

    def _load(self, seq: int, loader: Callable[[ModelRef], LoadedModel], ref: ModelRef) -> None:
        started = time.perf_counter()
        self.model = None
        try:
            self.model = loader(ref)
        except Exception as exc:
            log.warning("the shadow worker could not load %s version %s: %s: %s", ref.name, ref.version,
                        type(exc).__name__, exc)  # fmt: skip
            self.events.append(("load_failed", ref.version, f"{type(exc).__name__}: {exc}"[:300]))
            return
        self.state[READY_SEQ] = seq
        self.events.append(("loaded", ref.version, time.perf_counter() - started))
        if self.niceness and not self._niced:
            self._niced = True
            with contextlib.suppress(OSError):
                os.nice(self.niceness)

    def _score(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        live = []
        for job in jobs:
            if now > job.deadline:
                self.events.append(("expired", job.version, job.seq))  # waited behind a slow shadow past its bound
            else:
                live.append(job)
        model = self.model
        if not live:
            return
        if model is None or model.version != live[0].version or live[0].sid not in self.schemas:
            for job in live:  # the service sends jobs only once the model is loaded: a swap raced them
                self.events.append(("failed", job.version, job.seq, "the shadow version is not loaded"))
            return
        chunk: list[Job] = []
        rows = 0
        for job in live:
            if chunk and rows + len(job.rows) > MAX_GROUP_ROWS:
                self._predict(model, chunk)
                chunk, rows = [], 0
            chunk.append(job)
            rows += len(job.rows)
        if chunk:
            self._predict(model, chunk)

    def _predict(self, model: LoadedModel, jobs: list[Job]) -> None:
        names, log_types = self.schemas[jobs[0].sid]
        self.state[RUNNING_SEQ] = jobs[0].seq
        self.state[RUNNING_DEADLINE] = min(job.deadline for job in jobs)
        try:
            outcome = self._predict_rows(model, names, [row for job in jobs for row in job.rows])
            if isinstance(outcome, Exception) and len(jobs) > 1:
                # One bad micro-batch must not fail the others it was grouped with: one by one.
                for job in jobs:
                    self._predict(model, [job])
                return
        finally:
            self.state[RUNNING_DEADLINE] = 0.0
        if isinstance(outcome, Exception):
            error = f"{type(outcome).__name__}: {outcome}"[:300]
            self.events.append(("failed", model.version, jobs[0].seq, error))
            return
        predictions, probabilities, seconds = outcome
        self.events.append(("predict", model.version, len(predictions), seconds))
        late = time.monotonic()
        start = 0
        for job in jobs:
            end = start + len(job.rows)
            if late > job.deadline:
                self.events.append(("late", model.version, job.seq))
            else:
                self._log(model, job, names, log_types, predictions[start:end],
                          probabilities[start:end] if probabilities is not None else None)  # fmt: skip
                self.events.append(("scored", model.version, job.seq, len(job.requests)))
            start = end

    @staticmethod
    def _predict_rows(
        model: LoadedModel, names: list[str], rows: list[list[Any]]
    ) -> tuple[list[Any], list[list[float]] | None, float] | Exception:
        started = time.perf_counter()
        try:
            if model.schema.names != names:
                rows = reordered(rows, names, model.schema.names)
            predictions, probabilities = model.predict_rows(model.schema.to_frame(rows))
        except Exception as exc:
            return exc
        return predictions, probabilities, time.perf_counter() - started

    def _log(
        self,
        model: LoadedModel,
        job: Job,
        names: list[str],
        log_types: dict[str, str] | None,
        predictions: list[Any],
        probabilities: list[list[float]] | None,
    ) -> None:
        from mlops.serving.logentry import LogEntry

        start = 0
        for ids, event_times, source in job.requests:
            end = start + len(ids)
            self.writer.submit(
                LogEntry(
                    use_case=model.use_case,
                    model_name=model.model_name,
                    model_version=model.version,
                    source=source,
                    ids=ids,
                    event_times=event_times,
                    # The features as the champion's schema ordered and typed them: the same values as its rows.
                    names=names,
                    rows=job.rows[start:end],
                    predictions=predictions[start:end],
                    feature_types=log_types,
                    classes=model.classes if probabilities is not None else None,
                    probabilities=probabilities[start:end] if probabilities is not None else None,
                    role=ROLE_SHADOW,
                )
            )
            start = end

    def flush_report(self, force: bool = False) -> None:
        """Send what happened since the last report: at most every REPORT_SECONDS, and every second regardless
        (the log writer's counts move after the events)."""
        now = time.monotonic()
        due = REPORT_SECONDS if self.events else 1.0
        if not force and now - self._last_report < due:
            return
        self._last_report = now
        events, self.events = self.events, []
        self.report({"events": events, "log": self.writer.stats(),
                     "version": self.model.version if self.model else None})  # fmt: skip


def reordered(rows: list[list[Any]], have: list[str], want: list[str]) -> list[list[Any]]:
    """Rows in the shadow's column order; a KeyError (a failure) when it wants a column the champion lacks."""
    position = {name: i for i, name in enumerate(have)}
    index = [position[name] for name in want]
    return [[row[i] for i in index] for row in rows]


def _read_messages(jobs: Connection, timeout: float) -> list[tuple[Any, ...]]:
    """What the service sent: waits up to `timeout` for the first frame, then gathers for GATHER_SECONDS."""
    if not jobs.poll(timeout):
        return []
    messages = [pickle.loads(jobs.recv_bytes())]
    until = time.monotonic() + GATHER_SECONDS
    rows = 0
    while rows < MAX_GROUP_ROWS:
        first = next((m for m in messages if m[0] == "job"), None)
        if first is not None and first[6] - time.monotonic() < 2 * GATHER_SECONDS:
            break  # the oldest job cannot wait
        if not jobs.poll(max(0.0, until - time.monotonic())):
            break
        message = pickle.loads(jobs.recv_bytes())
        messages.append(message)
        if message[0] == "job":
            rows += len(message[4])
    return messages


def main(argv: Sequence[str] | None = None) -> int:
    from multiprocessing.connection import Connection

    from mlops.serving.spoolwriter import log_writer

    parser = argparse.ArgumentParser(prog="python -m mlops.serving.shadow_worker")
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--jobs-fd", type=int, required=True)
    parser.add_argument("--reports-fd", type=int, required=True)
    parser.add_argument("--state-fd", type=int, required=True)
    parser.add_argument("--log-uri", default=None)
    parser.add_argument("--log-flush-seconds", type=float, default=1.0)
    parser.add_argument("--spool-dir", default=None, help="spool the log there (serving/spool.py); default: memory")
    args = parser.parse_args(argv)
    parent = os.getppid()
    die_with_parent()
    # A stop of the process group (Ctrl-C, SIGTERM) reaches the worker too: the service stops it itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s shadow worker {args.use_case} %(message)s")
    block = mmap.mmap(args.state_fd, STATE_SLOTS * 8)
    state = memoryview(block).cast("d")
    jobs = Connection(args.jobs_fd, writable=False)
    reports = Connection(args.reports_fd, readable=False)
    writer = log_writer(args.log_uri, args.spool_dir, flush_seconds=args.log_flush_seconds,
                        spool_name=f"shadow-{args.use_case}")  # fmt: skip
    writer.start()
    worker = ShadowWorker(writer, state, lambda body: reports.send_bytes(pickle.dumps(body)), NICENESS)
    try:
        while os.getppid() == parent:
            worker.handle(_read_messages(jobs, REPORT_SECONDS))
            worker.flush_report()
    except (EOFError, BrokenPipeError, OSError):
        pass  # the service closed the pipe: drain the log and go
    finally:
        writer.stop()
        with contextlib.suppress(OSError):
            worker.flush_report(force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
