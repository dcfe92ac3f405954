"""Fault: the prediction service is SIGKILLed under load, then started again.

A SIGKILL (or the kernel's OOM killer) gives the service no chance to flush: before the
spool (serving/spool.py) the predictions of the last flush interval, answered 200 and held
in memory, were lost. Here eight clients post unique request ids to a real service process
for a few seconds, the process is killed by PID while they do, and a new process is started
on the same prediction log. Every request answered 2xx must be in the log exactly once.
The log writer flushes every 5 s, so at the kill several seconds of answers exist only in
the spool: the restarted service must find them there (`recovered_rows`).

The log's frames are built and written by a drain process the service starts
(serving/drain.py). Killed by PID under the same load, it is started again by the service,
and again every answered request is in the log exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from polling import wait_until
from test_serving import (
    Service,
    bc_record,
    breast_cancer_frame,
    classifier,
    register,
    start_service,
    write_configs,
)

from mlops.predictionlog.predictions import read_predictions

pytestmark = pytest.mark.integration

CLIENTS = 8
LOAD_SECONDS = 6.0
"""Load before the kill: with the writer's 5 s flush, the last seconds of it are in the spool only."""


def test_every_prediction_answered_before_a_sigkill_is_logged_exactly_once_after_the_restart(
    mlflow_server: str, tmp_path: Path
) -> None:
    names = write_configs(tmp_path / "configs", f"kill{uuid.uuid4().hex[:6]}")
    features, _ = breast_cancer_frame()
    register(names["breast_cancer"], classifier(1.0), features)
    log_dir = tmp_path / "log"
    records = [bc_record(features, i) for i in range(20)]

    def service() -> Service:
        return start_service(tmp_path, tmp_path / "configs", log_dir, "--use-case", "breast_cancer",
                             "--log-flush-seconds", "5")  # fmt: skip

    first = service()
    answered: list[list[str]] = [[] for _ in range(CLIENTS)]
    failed = [0] * CLIENTS
    stop = threading.Event()

    def client(n: int) -> None:
        # Each id is posted once and never retried: an id in `answered` got its 200 from the killed process.
        with httpx.Client(base_url=first.url, timeout=10) as http:
            i = 0
            while not stop.is_set():
                request_id = f"c{n}-{i}"
                i += 1
                try:
                    response = http.post("/predict/breast_cancer",
                                         json={"record": records[i % len(records)], "id": request_id})  # fmt: skip
                except httpx.HTTPError:
                    failed[n] += 1
                    if stop.wait(0.05):
                        return
                    continue
                if 200 <= response.status_code < 300:
                    assert response.json()["ids"] == [request_id]
                    answered[n].append(request_id)
                else:
                    failed[n] += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(LOAD_SECONDS)
        before_kill = httpx.get(f"{first.url}/health").json()["log"]
        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(timeout=30)
        time.sleep(0.5)  # the clients see the refused connections
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        first.stop()  # nothing left to stop after the kill; a no-op
    acknowledged = [request_id for ids in answered for request_id in ids]
    assert first.process.returncode == -signal.SIGKILL
    assert len(acknowledged) > 500, f"too little load to mean anything: {len(acknowledged)} answered"

    second = service()
    try:
        after = [f"after-{i}" for i in range(5)]
        for request_id in after:
            response = httpx.post(f"{second.url}/predict/breast_cancer",
                                  json={"record": records[0], "id": request_id})  # fmt: skip
            assert response.status_code == 200, response.text

        def drained() -> bool:
            log = httpx.get(f"{second.url}/health").json()["log"]
            return log["spool"]["recovered_rows"] > 0 and log["pending_rows"] == 0

        wait_until(drained, timeout=60, what="the killed service's spool drained into the log")
        health = httpx.get(f"{second.url}/health").json()
    finally:
        second.stop()
    recovered = health["log"]["spool"]["recovered_rows"]
    frame = read_predictions("breast_cancer", None, None, uri=str(log_dir))
    logged = list(frame["request_id"])
    counts: dict[str, int] = {}
    for request_id in logged:
        counts[request_id] = counts.get(request_id, 0) + 1
    missing = [i for i in acknowledged + after if i not in counts]
    duplicated = {i: n for i, n in counts.items() if n > 1}
    result = {
        "answered_before_kill": len(acknowledged),
        "client_errors_around_kill": sum(failed),
        "written_before_kill_at_last_health": before_kill["written_rows"],
        "recovered_from_spool": recovered,
        "torn_bytes": health["log"]["spool"]["torn_bytes"],
        "logged_rows": len(logged),
        "missing": len(missing),
        "duplicated": len(duplicated),
    }
    print(json.dumps(result, indent=2))  # the numbers docs/reliability.md quotes
    assert missing == [], f"{len(missing)} answered predictions are not in the log, e.g. {missing[:5]}"
    assert duplicated == {}, f"rows logged more than once: {list(duplicated.items())[:5]}"
    # The kill came between flushes: part of what was answered was only in the spool, and came back from it.
    assert recovered > 0
    # Nothing in the log that was not predicted: at most the requests in flight at the kill (answered by the
    # service, the answer cut off with the connection) beyond the acknowledged ones.
    assert len(logged) - len(acknowledged) - len(after) <= CLIENTS


def _tally(frame_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request_id in frame_ids:
        counts[request_id] = counts.get(request_id, 0) + 1
    return counts


def test_a_drain_process_sigkilled_under_load_is_started_again_and_every_answer_is_logged_once(
    mlflow_server: str, tmp_path: Path
) -> None:
    names = write_configs(tmp_path / "configs", f"drain{uuid.uuid4().hex[:6]}")
    features, _ = breast_cancer_frame()
    register(names["breast_cancer"], classifier(1.0), features)
    log_dir = tmp_path / "log"
    records = [bc_record(features, i) for i in range(20)]
    service = start_service(tmp_path, tmp_path / "configs", log_dir, "--use-case", "breast_cancer",
                            "--log-flush-seconds", "1")  # fmt: skip
    answered: list[list[str]] = [[] for _ in range(CLIENTS)]
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            i = 0
            while not stop.is_set():
                request_id = f"c{n}-{i}"
                i += 1
                response = http.post("/predict/breast_cancer",
                                     json={"record": records[i % len(records)], "id": request_id})  # fmt: skip
                assert response.status_code == 200, response.text  # the service answers through the drain's death
                answered[n].append(request_id)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        # Under load until the drain has written (its start imports pandas and pyarrow: seconds here).
        wait_until(lambda: httpx.get(f"{service.url}/health").json()["log"]["written_rows"] > 0, 60,
                   "the first drain writing")  # fmt: skip
        before = httpx.get(f"{service.url}/health").json()["log"]
        assert before["drain"]["alive"] and before["drain"]["restarts"] == 0
        os.kill(before["drain"]["pid"], signal.SIGKILL)
        time.sleep(3.0)  # answers go on; the service starts another drain
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

        def caught_up() -> bool:
            log = httpx.get(f"{service.url}/health").json()["log"]
            return log["drain"]["restarts"] == 1 and log["drain"]["alive"] and log["pending_rows"] == 0

        wait_until(caught_up, timeout=60, what="a new drain, and every answered row written")
        health = httpx.get(f"{service.url}/health").json()
    finally:
        stop.set()
        service.stop()
    acknowledged = [request_id for ids in answered for request_id in ids]
    assert len(acknowledged) > 500, f"too little load to mean anything: {len(acknowledged)} answered"
    counts = _tally(list(read_predictions("breast_cancer", None, None, uri=str(log_dir))["request_id"]))
    missing = [i for i in acknowledged if i not in counts]
    duplicated = {i: n for i, n in counts.items() if n > 1}
    result = {
        "answered": len(acknowledged),
        "drain_pid_killed": before["drain"]["pid"],
        "written_before_kill_at_last_health": before["written_rows"],
        "drain_restarts": health["log"]["drain"]["restarts"],
        "last_exit": health["log"]["drain"]["last_exit"],
        "logged_rows": sum(counts.values()),
        "missing": len(missing),
        "duplicated": len(duplicated),
    }
    print(json.dumps(result, indent=2))  # the numbers docs/reliability.md quotes
    assert health["status"] == "ok"
    assert missing == [], f"{len(missing)} answered predictions are not in the log, e.g. {missing[:5]}"
    assert duplicated == {}, f"rows logged more than once: {list(duplicated.items())[:5]}"
    assert sum(counts.values()) == len(acknowledged)
