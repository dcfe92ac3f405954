"""Shared fixtures: an isolated MLOPS_HOME, a real MLflow server, an Airflow home.

Every session gets fresh state under pytest's tmp dir, so no test relies on what
an earlier run left behind. Servers are started in their own process group and
stopped by that group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MLOPS_HOME for the whole session (the MLflow server and Airflow DB live here)."""
    home = tmp_path_factory.mktemp("mlops-home")
    os.environ["MLOPS_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def mlflow_server(session_home: Path) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend, served artifacts) on a free port."""
    port = free_port()
    state = session_home / "mlflow-test"
    state.mkdir(parents=True, exist_ok=True)
    log = state / "server.log"
    cmd = [
        str(VENV_BIN / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
        "--artifacts-destination", str(state / "artifacts"),
        "--serve-artifacts", "--workers", "1",
    ]  # fmt: skip
    # The job runner (huey consumers for GenAI jobs) is unused and costs processes.
    process = start_process_group(cmd, log, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", 300, process, log)  # a loaded 2-core machine needs minutes
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield uri
    finally:
        stop_process_group(process.pid)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def airflow_home(session_home: Path) -> Path:
    """An Airflow home with a migrated SQLite DB, for `dag.test()`.

    Airflow reads AIRFLOW_HOME when first imported, so the variables are set here,
    before any test imports airflow; conftest must not import it at module level.
    """
    home = session_home / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_test_env(home)
    os.environ.update(env)
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], check=True, env={**os.environ}, capture_output=True)
    return home


def airflow_test_env(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


@pytest.fixture
def clean_dir(tmp_path: Path) -> Path:
    return tmp_path


def copy_project_file(relative: str, destination: Path) -> Path:
    target = destination / Path(relative).name
    shutil.copy(PROJECT_ROOT / relative, target)
    return target


@pytest.fixture(scope="module")
def ge_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the committed Great Expectations context for one module, as `MLOPS_GE_DIR`,
    so validation results and Data Docs never dirty the repo."""
    target = tmp_path_factory.mktemp("ge") / "great_expectations"
    shutil.copytree(PROJECT_ROOT / "great_expectations", target, ignore=shutil.ignore_patterns("uncommitted"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_GE_DIR", str(target))
        import great_expectations  # noqa: F401  -- pay the slow import once, in the fixture

        yield target
