"""A small client for the Airflow 3 REST API (`/api/v2`), used by the demo, tests and the MLOps page.

It talks HTTP only, so it works against the local stack and the Celery stack alike.
The MLOps page acts with the caller's own token (`for_token`), so Airflow applies
that user's permissions to what the page shows.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

TERMINAL_STATES = {"success", "failed"}
# On SQLite (the embedded default) Airflow's API server answers some simultaneous writes
# with a 500 "Database error" after its 5 s lock wait (apache/airflow#66726): two triggers
# sent together lost one of them in 1 of 3 tries here. A trigger with a run id is safe to
# repeat, so it is sent again.
TRIGGER_ATTEMPTS = 3
TRIGGER_RETRY_SECONDS = 1.0


class AirflowAPIError(RuntimeError):
    """An answer of 400 or more from the Airflow REST API."""

    def __init__(self, method: str, path: str, status_code: int, text: str) -> None:
        super().__init__(f"Airflow API {method} {path} -> {status_code}: {text[:500]}")
        self.status_code = status_code


# A human-in-the-loop task waits in `awaiting_input` from Airflow 3.3 on (`deferred` before).
WAITING_FOR_INPUT_STATES = ("awaiting_input", "deferred")


@dataclass
class AirflowAPI:
    base_url: str
    username: str
    password: str
    timeout: float = 30.0
    _token: str | None = None
    transport: httpx.BaseTransport | None = None
    """For tests: where requests go instead of the network."""

    def _client(self) -> httpx.Client:
        if self._token is None:
            with httpx.Client(transport=self.transport, timeout=self.timeout) as login:
                response = login.post(
                    f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password}
                )
            if response.status_code >= 400:
                raise RuntimeError(
                    f"Airflow login as {self.username!r} failed ({response.status_code}): {response.text[:200]}"
                )
            self._token = response.json()["access_token"]
        return httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=self.timeout,
            transport=self.transport,
        )

    @classmethod
    def for_token(cls, base_url: str, token: str, timeout: float = 10.0) -> AirflowAPI:
        """A client that acts as the user this JWT belongs to (no login of its own)."""
        return cls(base_url, username="", password="", timeout=timeout, _token=token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._client() as client:
            response = client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AirflowAPIError(method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> None:
        """Wait until the dag-processor has parsed `dag_id` (new files take a few seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.request("GET", f"/dags/{dag_id}")
                return
            except RuntimeError:
                time.sleep(2)
        errors = self.request("GET", "/importErrors")
        raise TimeoutError(f"DAG {dag_id} did not appear within {timeout:.0f} s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Start a DAG run; a server error is retried, and never creates a second run.

        The run id is chosen here when not given (Airflow's own `manual__<time>_<random>` shape), so
        a retry of a POST that did land meets a 409 for that id instead of a duplicate run.
        """
        conf = conf or {}
        run_id = run_id or f"manual__{datetime.now(UTC).isoformat()}_{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {"logical_date": None, "conf": conf, "dag_run_id": run_id}
        path = f"/dags/{dag_id}/dagRuns"
        attempt = 1
        while True:
            try:
                result = self.request("POST", path, json=body)
                return str(result["dag_run_id"])
            except AirflowAPIError as exc:
                if exc.status_code == 409 and attempt > 1 and self.dag_run(dag_id, run_id).get("conf") == conf:
                    return run_id  # an earlier attempt landed although its answer was an error
                if exc.status_code < 500 or attempt == TRIGGER_ATTEMPTS:
                    raise
            time.sleep(TRIGGER_RETRY_SECONDS * attempt)
            attempt += 1

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return result

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        result = self.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-start_date", "limit": 50})
        runs: list[dict[str, Any]] = result["dag_runs"]
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        result = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        instances: list[dict[str, Any]] = result["task_instances"]
        return instances

    def open_hitl_requests(self, dag_id: str) -> list[dict[str, Any]]:
        """Human-in-the-loop requests of `dag_id`'s runs that still wait for an answer, oldest first."""
        result = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/~/hitlDetails",
            params={"response_received": False, "state": list(WAITING_FOR_INPUT_STATES),
                    "order_by": "created_at", "limit": 100},
        )  # fmt: skip
        requests: list[dict[str, Any]] = result["hitl_details"]
        return requests

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600.0, poll: float = 2.0) -> str:
        """Block until the run ends; returns its final state."""
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            state = str(self.dag_run(dag_id, run_id)["state"])
            if state in TERMINAL_STATES:
                return state
            time.sleep(poll)
        raise TimeoutError(f"{dag_id}/{run_id} still {state} after {timeout:.0f} s")
