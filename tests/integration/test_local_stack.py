"""The embedded stack comes up, runs a DAG through the real scheduler, and goes down.

Twice in a row, on ports of its own, leaving no process behind.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from mlops.platform import stack
from mlops.platform.airflow_api import AirflowAPI
from mlops.processes import PortInUseError, free_port, group_alive
from mlops.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    for var in ("MLOPS_AIRFLOW_PORT", "MLOPS_MLFLOW_PORT", "MLOPS_SERVING_PORT"):
        monkeypatch.setenv(var, str(free_port()))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield home
    stack.down()


def _stack_pgids(home: Path) -> list[int]:
    state = json.loads((home / "run" / "stack.json").read_text())
    return [int(record["pid"]) for record in state.values()]


def test_stack_runs_a_dag_and_stops_cleanly_twice(stack_env: Path) -> None:
    settings = get_settings()
    for attempt in (1, 2):
        urls = stack.up()
        assert urls["airflow"] == f"http://127.0.0.1:{settings.airflow_port}"
        pgids = _stack_pgids(stack_env)
        assert all(stack.status().values()) and len(pgids) >= 5

        # Idempotent: a second `up` starts nothing new.
        stack.up()
        assert _stack_pgids(stack_env) == pgids

        api = AirflowAPI(urls["airflow"], stack.AIRFLOW_USER, stack.airflow_password(settings))
        api.wait_for_dag("platform_self_check")
        api.unpause("platform_self_check")
        run_id = api.trigger("platform_self_check", run_id=f"stack_test_{attempt}")
        assert api.wait_for_run("platform_self_check", run_id, timeout=300) == "success"
        if attempt == 1:
            # The task process was forked from a scheduler that had preloaded the task libraries.
            warm = api.request(
                "GET",
                f"/dags/platform_self_check/dagRuns/{run_id}/taskInstances/check_warm_start/xcomEntries/return_value",
            )["value"]
            assert warm["ok"] is True, warm

        stopped = stack.down()
        assert set(stopped) >= {"mlflow", "airflow-api-server", "airflow-scheduler"}
        assert not any(group_alive(pgid) for pgid in pgids), "a process group survived `down`"
        assert stack.down() == []  # idempotent


def test_bound_to_loopback_only(stack_env: Path) -> None:
    settings = get_settings()
    env = stack.airflow_env(settings)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{settings.airflow_port}/execution/"
    for service in stack.services(settings):
        if "--host" in service.command:
            assert service.command[service.command.index("--host") + 1] == "127.0.0.1"


def test_taken_port_fails_with_a_clear_message(stack_env: Path) -> None:
    settings = get_settings()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.mlflow_port))
        blocker.listen()
        with pytest.raises(PortInUseError, match=f"port {settings.mlflow_port}.*MLOPS_MLFLOW_PORT"):
            stack.up()
    assert not (stack_env / "run" / "stack.json").exists() or not any(stack.status().values())
    assert os.environ["MLOPS_HOME"] == str(stack_env)
