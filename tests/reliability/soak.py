"""A bounded soak of the prediction service: steady load through a promotion, a restart and a rollback.

Used by tests/reliability/test_serving_soak.py (about a minute) and by
benchmarks/soak/run.py (longer). Only loopback addresses are loaded; the loop is
bounded in time and in request count and stops by itself.

The restart is a blue/green switch, as a load balancer in front of the service
would do it: the new process starts on another port and is ready (model loaded)
before traffic moves to it; the old one is stopped with SIGTERM only after every
client has sent a request to the new one, so its graceful shutdown drains the
requests it still has and flushes its prediction log. No request is retried.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mlops.predictionlog.predictions import read_predictions
from mlops.promotion import rollback

USE_CASE = "breast_cancer"


class Load:
    """`workers` threads posting one record each to the current target until stopped or bounded."""

    def __init__(self, url: str, records: list[dict[str, float]], workers: int, max_requests: int) -> None:
        self.url = url
        self.records = records
        self.workers = workers
        self.max_requests = max_requests
        self.tag = uuid.uuid4().hex[:8]
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok_ids: list[str] = []
        self.versions: Counter[str] = Counter()
        self.last_version: str | None = None
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.last_url: dict[int, str] = {}
        self.sent = 0
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def switch(self, url: str) -> None:
        with self.lock:
            self.url = url

    def all_workers_on(self, url: str) -> bool:
        """Every worker has finished a request sent to `url` (so none is still mid-request elsewhere)."""
        with self.lock:
            return len(self.last_url) == self.workers and all(u == url for u in self.last_url.values())

    def _run(self, worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self.stop_event.is_set():
                with self.lock:
                    if self.sent >= self.max_requests:
                        return
                    self.sent += 1
                    url = self.url
                request_id = f"soak-{self.tag}-{worker}-{i}"
                body = {"record": self.records[i % len(self.records)], "id": request_id}
                started = time.perf_counter()
                try:
                    response = client.post(f"{url}/predict/{USE_CASE}", json=body)
                    outcome = response.status_code
                    detail = response.text[:200]
                except httpx.HTTPError as exc:
                    outcome, detail = 0, repr(exc)
                elapsed = time.perf_counter() - started
                with self.lock:
                    self.last_url[worker] = url
                    self.latencies.append(elapsed)
                    if outcome == 200:
                        version = str(response.json()["model_version"])
                        self.ok_ids.append(request_id)
                        self.versions[version] += 1
                        self.last_version = version
                    else:
                        self.failures.append(f"{url} {outcome} {detail}")
                i += 1


@dataclass
class SoakResult:
    duration_seconds: float
    requests: int
    ok: int
    failures: list[str]
    versions: dict[str, int]
    missing_from_log: int
    logged_rows: int
    duplicate_log_rows: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    events: list[tuple[float, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "failures": self.failures[:20], "failed": len(self.failures)}


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"soak: timed out waiting for {what}")


def run_soak(
    start_service: Callable[[], Any],
    model_name: str,
    v1: str,
    v2: str,
    records: list[dict[str, float]],
    log_dir: Path,
    duration: float = 60.0,
    workers: int = 2,
    max_requests: int = 200_000,
) -> SoakResult:
    """Load the service for `duration` s; promote v2 at 20 %, restart at 45 %, roll back to v1 at 70 %.

    `start_service()` returns an object with `.url` and `.stop()` (SIGTERM, waits for exit);
    both processes log to `log_dir`. Each step waits for its effect (the new version
    answering, the new process taking every worker), so on a slow machine the
    phases stretch and the soak lasts longer than `duration`.
    """
    events: list[tuple[float, str]] = []
    blue = start_service()
    # The clock starts with the load: the first process's start-up is not part of the soak.
    began = time.monotonic()

    def note(what: str) -> None:
        events.append((round(time.monotonic() - began, 1), what))

    load = Load(blue.url, records, workers, max_requests)
    green = None
    try:
        load.start()
        note(f"load started on {blue.url}")
        time.sleep(duration * 0.2)
        rollback.rollback(model_name, v2, reason="soak: promote v2 by hand", requested_by="soak")
        note(f"@champion -> v{v2}")
        _wait(lambda: load.last_version == v2, 60, f"v{v2} to be served")
        note(f"first answer from v{v2}")

        time.sleep(max(0.0, began + duration * 0.45 - time.monotonic()))
        note("restart: starting the new process")
        green = start_service()
        note(f"new process ready on {green.url}; switching traffic")
        load.switch(green.url)
        _wait(lambda: load.all_workers_on(green.url), 60, "every worker on the new process")
        blue.stop()
        note("old process stopped (SIGTERM, drained)")

        time.sleep(max(0.0, began + duration * 0.7 - time.monotonic()))
        rollback.rollback(model_name, None, reason="soak: roll back to @previous", requested_by="soak")
        note(f"@champion -> v{v1} (rollback)")
        _wait(lambda: load.last_version == v1, 60, f"v{v1} to be served after the rollback")
        note(f"first answer from v{v1} after the rollback")
        time.sleep(max(0.0, began + duration - time.monotonic()))
    finally:
        load.stop()
        note(f"load stopped after {load.sent} requests")
        for service in (blue, green):
            if service is not None:
                service.stop()
        note("services stopped")
    elapsed = time.monotonic() - began
    frame = read_predictions(USE_CASE, None, None, uri=str(log_dir))
    mine = frame[frame["request_id"].str.startswith(f"soak-{load.tag}-")] if len(frame) else frame
    logged = set(mine["request_id"]) if len(mine) else set()
    latencies = sorted(load.latencies) or [0.0]
    return SoakResult(
        duration_seconds=round(elapsed, 1),
        requests=load.sent,
        ok=len(load.ok_ids),
        failures=load.failures,
        versions=dict(load.versions),
        missing_from_log=len(set(load.ok_ids) - logged),
        logged_rows=len(mine),
        duplicate_log_rows=len(mine) - len(logged),
        p50_ms=round(statistics.median(latencies) * 1000, 2),
        p99_ms=round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 2),
        max_ms=round(latencies[-1] * 1000, 2),
        events=events,
    )
