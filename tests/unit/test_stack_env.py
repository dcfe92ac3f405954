"""The local stack's Airflow log servers: their own free ports per stack home, so stacks side by side never collide."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.platform import stack
from mlops.processes import port_is_free
from mlops.settings import get_settings

WORKER, TRIGGER = stack.LOG_SERVER_PORT_VARIABLES


@pytest.fixture(autouse=True)
def no_port_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in stack.LOG_SERVER_PORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _ports(home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("MLOPS_HOME", str(home))
    env = stack.airflow_env(get_settings())
    return env[WORKER], env[TRIGGER]


def test_each_home_gets_free_ports_kept_across_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _ports(tmp_path / "a", monkeypatch)
    second = _ports(tmp_path / "b", monkeypatch)
    assert len(set(first)) == 2 and "8793" not in first and "8794" not in first
    assert all(port_is_free("127.0.0.1", int(port)) for port in first)
    assert set(first) != set(second)
    # A restarted scheduler must serve where its task records point: the same home keeps its ports.
    assert _ports(tmp_path / "a", monkeypatch) == first


def test_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER, "18793")
    worker, trigger = _ports(tmp_path, monkeypatch)
    assert worker == "18793" and trigger != "18793"
