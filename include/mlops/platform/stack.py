"""The embedded local stack: Airflow (LocalExecutor on SQLite), MLflow, the prediction service.

Each service runs as the leader of its own process group, recorded in
`<MLOPS_HOME>/run/stack.json` with its start time so a stale record never makes
`down` signal a process that merely reused the pid. Everything binds to
127.0.0.1 by default and every piece of state lives under MLOPS_HOME.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.mlflow.auth import AUTH_APP, ServerAuth, ensure_user, write_auth_config
from mlops.processes import (
    free_port,
    group_alive,
    require_free_port,
    start_process_group,
    stop_process_group,
    wait_for_http,
)
from mlops.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlops.platform.airflow_api import AirflowAPI

AIRFLOW_USER = "admin"
STARTUP_TIMEOUT_SECONDS = 240.0
PORT_VARIABLES = ("MLOPS_AIRFLOW_PORT", "MLOPS_MLFLOW_PORT", "MLOPS_SERVING_PORT")
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health_url: str | None
    port: int | None
    port_env: str | None


def _secret(path: Path, make: str) -> str:
    """Read a generated secret, creating it on first use; never committed, never a default."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(16) if make == "password" else base64.urlsafe_b64encode(os.urandom(32)).decode()
    path.write_text(value)
    path.chmod(0o600)
    return value


def airflow_password(settings: Settings) -> str:
    return _secret(settings.run_dir / "secrets" / "airflow_admin_password", "password")


LOG_SERVER_PORT_VARIABLES = (
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
)


def _log_server_ports(settings: Settings) -> dict[str, str]:
    """The ports of the scheduler's and triggerer's log servers, free ones chosen once per stack home.

    Airflow's defaults (8793, 8794) bind every interface, so a second stack on the machine (the test
    sessions run side by side) found them taken and its log server died. Kept in the run directory so a
    restarted process serves on the port its task records name; the environment still wins.
    """
    record = settings.run_dir / "log_server_ports"
    if record.exists():
        ports = record.read_text().split()
    else:
        chosen: set[int] = set()
        while len(chosen) < len(LOG_SERVER_PORT_VARIABLES):
            chosen.add(free_port())
        ports = [str(port) for port in sorted(chosen)]
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(" ".join(ports))
    return {name: os.environ.get(name, port) for name, port in zip(LOG_SERVER_PORT_VARIABLES, ports, strict=True)}


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for every Airflow process of the local stack (and the demo's CLI calls)."""
    home = settings.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    password = airflow_password(settings)
    passwords_file = home / "simple_auth_manager_passwords.json"
    passwords_file.write_text(json.dumps({AIRFLOW_USER: password}))
    passwords_file.chmod(0o600)
    base_url = f"http://{settings.host}:{settings.airflow_port}"
    secrets_dir = settings.run_dir / "secrets"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project_root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.project_root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Two cores: more parallel task processes than this only thrash.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        # Must follow the API port, or every task fails with "connection refused".
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(secrets_dir / "jwt_secret", "key"),
        "AIRFLOW__CORE__FERNET_KEY": _secret(secrets_dir / "fernet_key", "key"),
        # An idle scheduler loop sleeps this long before it looks for finished tasks again;
        # the default 1 s is paid at every step of a DAG run (~9 steps in training).
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": os.environ.get(
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "0.25"
        ),
        # New DAG files show up within seconds instead of the default 5 minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        # Its HTTP server binds 0.0.0.0:8974 (nothing here reads it) and a second stack on the
        # machine would collide on the port; `mlops stack status` checks the process group.
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        **_log_server_ports(settings),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        # MLflow's job runner (huey consumers, for GenAI evaluation jobs) is unused here
        # and costs several processes on a 2-core machine.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLOPS_HOME": str(settings.home),
        "MLOPS_PROJECT_ROOT": str(settings.project_root),
    }
    if settings.mlflow_auth:
        # One environment for every process: the server reads its part, every MLflow client the credentials.
        auth = mlflow_auth(settings)
        env |= auth.server_env() | auth.client_env()
    return env


MLFLOW_PLATFORM_USER = "platform"
MLFLOW_VIEWER_USER = "viewer"


def mlflow_auth(settings: Settings) -> ServerAuth:
    """The local MLflow's basic-auth app: its ini (users in SQLite beside MLflow's), the platform's account as
    its admin, generated secrets kept in the stack's secrets folder."""
    secrets_dir = settings.run_dir / "secrets"
    config = write_auth_config(
        settings.mlflow_dir / "basic_auth.ini", f"sqlite:///{settings.mlflow_dir / 'basic_auth.db'}",
        MLFLOW_PLATFORM_USER,
    )  # fmt: skip
    return ServerAuth(
        config, MLFLOW_PLATFORM_USER, _secret(secrets_dir / "mlflow_platform_password", "password"),
        _secret(secrets_dir / "mlflow_flask_secret", "key"),
    )  # fmt: skip


def mlflow_viewer_password(settings: Settings) -> str:
    return _secret(settings.run_dir / "secrets" / "mlflow_viewer_password", "password")


def services(settings: Settings) -> list[Service]:
    airflow = str(VENV_BIN / "airflow")
    mlflow_dir = settings.mlflow_dir
    api = f"http://{settings.host}:{settings.airflow_port}"
    result = [
        Service(
            "mlflow",
            [
                str(VENV_BIN / "mlflow"), "server",
                "--host", settings.host, "--port", str(settings.mlflow_port),
                "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination", str(mlflow_dir / "artifacts"),
                "--serve-artifacts", "--workers", "1",
                *(["--app-name", AUTH_APP] if settings.mlflow_auth else []),
            ],
            f"http://{settings.host}:{settings.mlflow_port}/health",
            settings.mlflow_port,
            "MLOPS_MLFLOW_PORT",
        ),
        Service(
            "airflow-api-server",
            [airflow, "api-server", "--host", settings.host, "--port", str(settings.airflow_port)],
            f"{api}/api/v2/monitor/health",
            settings.airflow_port,
            "MLOPS_AIRFLOW_PORT",
        ),
        Service("airflow-scheduler", [airflow, "scheduler"], None, None, None),
        Service("airflow-dag-processor", [airflow, "dag-processor"], None, None, None),
        Service("airflow-triggerer", [airflow, "triggerer"], None, None, None),
    ]  # fmt: skip
    if (settings.project_root / "include" / "mlops" / "serving").is_dir():
        result.append(
            Service(
                "prediction-service",
                [sys.executable, "-m", "mlops.serving", "--host", settings.host, "--port", str(settings.serving_port)],
                f"http://{settings.host}:{settings.serving_port}/health",
                settings.serving_port,
                "MLOPS_SERVING_PORT",
            )
        )
    return result


def _state_file(settings: Settings) -> Path:
    return settings.run_dir / "stack.json"


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read_state(settings: Settings) -> dict[str, dict[str, object]]:
    path = _state_file(settings)
    if not path.exists():
        return {}
    data: dict[str, dict[str, object]] = json.loads(path.read_text())
    return data


def _running(record: dict[str, object]) -> bool:
    pid = int(str(record["pid"]))
    return group_alive(pid) and _start_time(pid) == record.get("started")


def status(settings: Settings | None = None) -> dict[str, bool]:
    settings = settings or get_settings()
    return {name: _running(record) for name, record in _read_state(settings).items()}


def migrate_airflow(env: dict[str, str], log: Path) -> None:
    """`airflow db migrate` on the database `env` names; its output goes to `log`."""
    with open(log, "ab") as out:
        done = subprocess.run(
            [str(VENV_BIN / "airflow"), "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(f"`airflow db migrate` failed; see {log}")


def wait_airflow_components(url: str, timeout: float, log_dir: Path) -> None:
    """The api-server answers before the scheduler has heartbeated; wait for all of them."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                last = json.loads(response.read())
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if all((last.get(p) or {}).get("status") == "healthy" for p in parts):
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"Airflow components not all healthy within {timeout:.0f} s: {last}. Logs in {log_dir}")


def up(settings: Settings | None = None, timeout: float = STARTUP_TIMEOUT_SECONDS) -> dict[str, str]:
    """Start every service that is not already running and wait until all are healthy.

    Idempotent: running services are left alone. Returns the URLs to print.
    """
    settings = settings or get_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    log_dir = settings.run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(settings)
    env = airflow_env(settings)
    to_start = [s for s in services(settings) if not (s.name in state and _running(state[s.name]))]
    for service in to_start:
        if service.port is not None and service.port_env is not None:
            require_free_port(settings.host, service.port, service.name, service.port_env)
    if any(s.name.startswith("airflow") for s in to_start):
        migrate_airflow(env, log_dir / "airflow-db-migrate.log")
    started = []
    for service in to_start:
        log = log_dir / f"{service.name}.log"
        process = start_process_group(service.command, log, env=env, cwd=settings.project_root)
        state[service.name] = {"pid": process.pid, "started": _start_time(process.pid), "log": str(log)}
        started.append((service, process, log))
        _state_file(settings).write_text(json.dumps(state, indent=2))
    try:
        for service, process, log in started:
            if service.health_url:
                wait_for_http(service.health_url, timeout, process, log)
        wait_airflow_components(
            f"http://{settings.host}:{settings.airflow_port}/api/v2/monitor/health", timeout, log_dir
        )
        if settings.mlflow_auth:
            _ensure_mlflow_viewer(settings)
    except Exception:
        down(settings)
        raise
    return urls(settings)


def _ensure_mlflow_viewer(settings: Settings) -> None:
    """A read-only account for people browsing MLflow: the platform's own account stays with the platform."""
    auth = mlflow_auth(settings)
    admin = (auth.admin_username, auth.admin_password)
    ensure_user(settings.mlflow_tracking_uri, MLFLOW_VIEWER_USER, mlflow_viewer_password(settings), admin)


def urls(settings: Settings) -> dict[str, str]:
    return {
        "airflow": f"http://{settings.host}:{settings.airflow_port}",
        "mlflow": f"http://{settings.host}:{settings.mlflow_port}",
        "prediction_service": f"http://{settings.host}:{settings.serving_port}/docs",
        "login": f"{AIRFLOW_USER} / {airflow_password(settings)}",
        **(
            {"mlflow_login": f"{MLFLOW_VIEWER_USER} / {mlflow_viewer_password(settings)} (read-only)"}
            if settings.mlflow_auth
            else {}
        ),
    }


def down(settings: Settings | None = None, grace_seconds: float = 20.0) -> list[str]:
    """Stop every process group `up` started; idempotent. Returns the names stopped."""
    settings = settings or get_settings()
    state = _read_state(settings)
    stopped = []
    # Reverse start order: Airflow goes before MLflow so running tasks can still log.
    for name, record in reversed(list(state.items())):
        if _running(record) and stop_process_group(int(str(record["pid"])), grace_seconds):
            stopped.append(name)
    _state_file(settings).unlink(missing_ok=True)
    return stopped


def restart(name: str, settings: Settings | None = None, grace_seconds: float = 20.0) -> dict[str, str]:
    """Stop one service and start it again, the others left running; returns the URLs.

    How the prediction service re-reads the configs (it reads them once, at start), as a
    deployment would restart it after a config change.
    """
    settings = settings or get_settings()
    stop_process_group(service_pid(name, settings), grace_seconds)
    return up(settings)


def service_pid(name: str, settings: Settings | None = None) -> int:
    """The pid of a running service, which is also its process-group id."""
    settings = settings or get_settings()
    record = _read_state(settings).get(name)
    if record is None or not _running(record):
        raise RuntimeError(f"{name} is not running in the stack under {settings.home}; `mlops stack up` starts it")
    return int(str(record["pid"]))


def airflow_api(settings: Settings | None = None) -> AirflowAPI:
    """A REST client for the stack's Airflow, logged in as its admin user."""
    from mlops.platform.airflow_api import AirflowAPI

    settings = settings or get_settings()
    return AirflowAPI(urls(settings)["airflow"], AIRFLOW_USER, airflow_password(settings))


def _task_process_groups(settings: Settings) -> set[int]:
    """Process groups below the services other than their own.

    Airflow 3 puts every task runner in a group of its own (so its supervisor can
    signal the task's children); stopping the scheduler's group does not reach it
    once the supervisor has been SIGKILLed at the end of the grace period.
    """
    import psutil

    groups = set()
    for record in _read_state(settings).values():
        if not _running(record):
            continue
        leader = int(str(record["pid"]))
        try:
            descendants = psutil.Process(leader).children(recursive=True)
        except psutil.Error:
            continue
        for process in descendants:
            with contextlib.suppress(OSError):
                group = os.getpgid(process.pid)
                if group != leader:
                    groups.add(group)
    return groups


@contextlib.contextmanager
def private_stack(
    home: Path, extra_env: Mapping[str, str] | None = None, timeout: float = STARTUP_TIMEOUT_SECONDS
) -> Iterator[Settings]:
    """A stack of its own under `home` on free ports, for tests and benchmarks; never the user's.

    While the block runs, the environment points at it (MLOPS_HOME, the ports,
    MLFLOW_TRACKING_URI, and `extra_env`), so in-process clients see what the
    services see. On the way out, even after a failure, every process the stack
    started is stopped and the environment is restored.
    """
    extra = dict(extra_env or {})
    names = ["MLOPS_HOME", *PORT_VARIABLES, "MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_UI_URL", *extra]
    saved = {name: os.environ.get(name) for name in names}
    settings: Settings | None = None
    try:
        os.environ["MLOPS_HOME"] = str(home)
        for variable in PORT_VARIABLES:
            os.environ[variable] = str(free_port())
        for variable in ("MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_UI_URL"):
            os.environ.pop(variable, None)
        os.environ.update(extra)
        settings = get_settings()
        os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
        up(settings, timeout)
        yield settings
    finally:
        if settings is not None:
            task_groups = _task_process_groups(settings)
            down(settings)
            for group in task_groups:
                stop_process_group(group, grace_seconds=5)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
