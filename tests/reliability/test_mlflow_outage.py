"""Fault 4: the MLflow tracking server goes down during training and comes back.

A tracking server of this module's own (the session one stays up for the other
tests) is stopped in the middle of a candidate's logging, kept down while the
other training steps are tried, and started again on the same port and
database. The steps are the package functions the training DAG's tasks call,
in the DAG's order and with its run key, so a "re-run" is what an Airflow retry
of the same DAG run does.

MLflow's client retries each request itself (7 times, backoff factor 2, about
4 minutes) before a task sees the error; this module sets 1 retry so the outage
is observed in seconds. The Airflow side of the policy is checked on the DAG.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from test_tracking import TINY, lineage, make_use_case, write_snapshot

from mlops.evaluation import champion
from mlops.evaluation.gate import GateDecision
from mlops.mlflow import registry
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http
from mlops.promotion import decisions
from mlops.training import runs
from mlops.training.candidates import expand_candidates
from mlops.training.results import CandidateResult

pytestmark = pytest.mark.integration

DAG_ID = "train_outage_bike"
MODEL = "reliability_outage_bike"
VENV_BIN = Path(sys.executable).parent
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@dataclass
class TrackingServer:
    state: Path
    port: int
    pid: int | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start on the same port and database as before; returns the seconds until healthy."""
        started = time.monotonic()
        cmd = [
            str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.state / 'mlflow.db'}",
            "--artifacts-destination", str(self.state / "artifacts"), "--serve-artifacts", "--workers", "1",
        ]  # fmt: skip
        log = self.state / "server.log"
        process = start_process_group(cmd, log, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        self.pid = process.pid
        wait_for_http(f"{self.uri}/health", 300, process, log)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.pid is not None:
            stop_process_group(self.pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None


@pytest.fixture(scope="module")
def server(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    import mlflow

    saved = {k: os.environ.get(k) for k in ["MLFLOW_TRACKING_URI", *FAST_FAIL]}
    srv = TrackingServer(tmp_path_factory.mktemp("outage-mlflow"), free_port())
    srv.start()
    os.environ.update({"MLFLOW_TRACKING_URI": srv.uri, **FAST_FAIL})
    try:
        yield srv
    finally:
        srv.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # mlops.tracking.client() pins MLflow's fluent API to this server; later modules need the session one.
        mlflow.set_tracking_uri(mlflow_server)
        mlflow.set_registry_uri(mlflow_server)


def _key(run_id: str) -> str:
    return f"{DAG_ID}/{run_id}"


def _train(uc: Any, snapshot: str, parent: str, run_id: str) -> list[CandidateResult]:
    task_lineage = {"dag_id": DAG_ID, "run_id": run_id, "reason": "outage test"}
    return [runs.train_and_log_candidate(uc, s.to_dict(), snapshot, parent, task_lineage)
            for s in expand_candidates(uc)]  # fmt: skip


def _run_to_promotion(uc: Any, snapshot: str, run_id: str) -> tuple[str, decisions.PromotionResult]:
    """The DAG's steps after validation, as its tasks call them."""
    parent = runs.start_parent_run(uc, DAG_ID, run_id, lineage(snapshot))
    results = _train(uc, snapshot, parent, run_id)
    best = champion.select_best(uc, results)
    decision = champion.evaluate_against_champion(uc, best, snapshot, parent)
    version = decisions.register_candidate(uc, best, _key(run_id))
    return version, decisions.apply_decision(uc, version, GateDecision.from_dict(decision.to_dict()), _key(run_id))


def _fails_naming_the_server(call: Any, uri: str) -> float:
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        call()
    assert uri in str(caught.value) or "Connection refused" in str(caught.value), str(caught.value)[:500]
    return time.monotonic() - started


def test_outage_mid_training_leaves_no_version_and_the_champion_in_place_and_the_rerun_succeeds(
    server: TrackingServer, tmp_path: Path
) -> None:
    uc = make_use_case(MODEL, TINY)
    snapshot = write_snapshot(tmp_path / "bike.parquet")
    v1, first = _run_to_promotion(uc, snapshot, "run-1")
    assert first.action == "promoted"
    client = MlflowClient(server.uri)

    # Down in the middle of a candidate's logging.
    parent = runs.start_parent_run(uc, DAG_ID, "run-2", lineage(snapshot))
    experiment = client.get_run(parent).info.experiment_id
    failure: list[BaseException] = []

    def train() -> None:
        try:
            _train(uc, snapshot, parent, "run-2")
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=train)
    worker.start()
    deadline = time.monotonic() + 120
    while not client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'"):
        assert time.monotonic() < deadline and worker.is_alive(), "no candidate run appeared"
        time.sleep(0.1)
    server.stop()
    worker.join(timeout=120)
    assert failure, "training finished although the tracking server was stopped mid-run"

    # While it is down, every step that needs it fails, naming the server.
    seconds = {
        "start_tracking_run": _fails_naming_the_server(
            lambda: runs.start_parent_run(uc, DAG_ID, "run-3", lineage(snapshot)), server.uri
        ),
        "register_candidate": _fails_naming_the_server(
            lambda: decisions.register_candidate(uc, first_result(uc, snapshot), _key("run-2")), server.uri
        ),
        "read @champion": _fails_naming_the_server(lambda: registry.alias_version(MODEL, "champion"), server.uri),
    }
    restart_seconds = server.start()

    # Nothing half-registered, nothing moved.
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [v.version for v in versions] == [v1]
    assert registry.alias_version(MODEL, "champion") == v1 and registry.alias_version(MODEL, "previous") is None
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    half = [r for r in children if "mlops.model_uri" not in r.data.tags]
    assert half, "the interrupted candidate left no trace to clean up"

    # The re-run of the same DAG run replaces the half-written run and promotes once.
    v2, promotion = _run_to_promotion(uc, snapshot, "run-2")
    assert promotion.action == "promoted" and v2 != v1
    assert all(client.get_run(r.info.run_id).info.lifecycle_stage == "deleted" for r in half)
    live = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["mlops.candidate_key"] for r in live) == sorted(s.key for s in expand_candidates(uc))
    # A retry after promotion (the task's own retry) registers and moves nothing more.
    again_version, again = _run_to_promotion(uc, snapshot, "run-2")
    assert again_version == v2 and again.action == "unchanged"
    assert sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'")) == sorted([v1, v2])
    assert client.get_registered_model(MODEL).aliases == {"champion": v2, "previous": v1}
    print(f"mlflow outage: failed after {', '.join(f'{k} {v:.1f} s' for k, v in seconds.items())} "
          f"(1 client retry); server back in {restart_seconds:.1f} s")  # fmt: skip


def first_result(uc: Any, snapshot: str) -> CandidateResult:
    # Any candidate will do: the server is down, so registration never reaches it.
    return CandidateResult(expand_candidates(uc)[0].key, "0" * 32, "models:/m-0", {"rmse": 1.0})


def _retry_window(retries: int, delay: float, multiplier: float, cap: float) -> tuple[float, float]:
    """Shortest and longest total wait Airflow puts between the attempts (its formula, jitter included)."""
    low = high = 0.0
    for attempt in range(1, retries + 1):
        base = math.ceil(delay * multiplier ** (attempt - 1)) if multiplier else delay
        low += min(base, cap)
        high += min(2 * base - 1 if multiplier else base, cap)
    return low, high


def test_training_tasks_that_talk_to_mlflow_ride_out_a_restart(airflow_home: Path) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    from mlops.orchestration.training import build_training_dag

    uc = make_use_case(MODEL, TINY)
    # As the scheduler sees it: serialised and back, where `True` becomes the multiplier 2.0.
    dag = DagSerialization.from_dict(DagSerialization.to_dict(build_training_dag(uc)))
    tasks = {t.task_id: t for t in dag.tasks}
    windows = {}
    for task_id in ("start_tracking_run", "train_candidate", "register_candidate", "promote_candidate"):
        task = tasks[task_id]
        assert task.retries >= 2 and task.retry_exponential_backoff == 2.0, task_id
        low, high = _retry_window(task.retries, task.retry_delay.total_seconds(), task.retry_exponential_backoff,
                                  task.max_retry_delay.total_seconds())  # fmt: skip
        windows[task_id] = (low, high)
        # The server restarts in well under a minute here; two minutes of backoff cover a slow restart.
        assert low >= 90, f"{task_id}: only {low:.0f} s of backoff"
    for gate in ("validate_snapshot", "evaluate_candidate"):
        assert tasks[gate].retries == 0
    print("retry backoff windows (s):", {k: (round(a), round(b)) for k, (a, b) in windows.items()})
