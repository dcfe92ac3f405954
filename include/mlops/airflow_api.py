"""A small client for the Airflow 3 REST API (`/api/v2`), used by the demo, tests and the MLOps page.

It talks HTTP only, so it works against the local stack and the Celery stack alike.
The MLOps page acts with the caller's own token (`for_token`), so Airflow applies
that user's permissions to what the page shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

TERMINAL_STATES = {"success", "failed"}
# A human-in-the-loop task waits in `awaiting_input` from Airflow 3.3 on (`deferred` before).
WAITING_FOR_INPUT_STATES = ("awaiting_input", "deferred")


@dataclass
class AirflowAPI:
    base_url: str
    username: str
    password: str
    timeout: float = 30.0
    _token: str | None = None

    def _client(self) -> httpx.Client:
        if self._token is None:
            response = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=self.timeout,
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
        )

    @classmethod
    def for_token(cls, base_url: str, token: str, timeout: float = 10.0) -> AirflowAPI:
        """A client that acts as the user this JWT belongs to (no login of its own)."""
        return cls(base_url, username="", password="", timeout=timeout, _token=token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._client() as client:
            response = client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"Airflow API {method} {path} -> {response.status_code}: {response.text[:500]}")
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
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        result = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(result["dag_run_id"])

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
