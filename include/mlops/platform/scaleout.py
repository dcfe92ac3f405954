"""The scale-out topology as native processes: Airflow on CeleryExecutor, PostgreSQL, Redis, remote MLflow.

The same services as `docker-compose.yaml` (api-server, scheduler, dag-processor,
triggerer, N Celery workers, an MLflow server on PostgreSQL), started on this
machine without a container engine, so CI can prove the topology end to end.
The databases and the broker are given, not created: the caller owns them.

Environment comes from `mlops.stack.airflow_env` (the same secrets, auth
manager, paths and Execution API URL as the local stack) with the executor,
databases and broker swapped. Each process is the leader of its own process
group; `stop` signals the groups, workers first, MLflow last.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlops.platform import stack
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http
from mlops.settings import Settings

WORKER_NAME_ENV = "MLOPS_WORKER_NAME"
STARTUP_TIMEOUT_SECONDS = 300.0


def worker_hostname() -> str:
    """`[core] hostname_callable` of the workers: `<worker>@<host>`, like Celery's node name.

    Without it every worker on one machine records the same host name on the task
    instances it runs, and nobody can tell which worker ran what.
    """
    name = os.environ.get(WORKER_NAME_ENV)
    host = socket.getfqdn()
    return f"{name}@{host}" if name else host


@dataclass(frozen=True)
class Topology:
    """What to start and where its state lives (databases and broker must already exist)."""

    settings: Settings
    """home, host, Airflow and MLflow ports; the MLflow URI is derived from them."""
    airflow_db_url: str
    """SQLAlchemy URL of the Airflow metadata database, e.g. `postgresql+psycopg2://postgres@127.0.0.1/airflow`."""
    mlflow_db_url: str
    """MLflow backend store URL (PostgreSQL)."""
    broker_url: str
    """Celery broker, e.g. `redis://127.0.0.1:6379/0`."""
    broker_key_prefix: str = ""
    """Prefix of every broker key (kombu `global_keyprefix`), so several topologies share one Redis."""
    workers: tuple[str, ...] = ("w1", "w2")
    worker_concurrency: int = 2

    @property
    def airflow_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.mlflow_port}"


@dataclass
class Running:
    topology: Topology
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    """The environment every Airflow process got (workers add their name)."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def password(self) -> str:
        return stack.airflow_password(self.topology.settings)

    @property
    def username(self) -> str:
        return stack.AIRFLOW_USER

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


def topology_settings(base: Settings, home: Path, host: str = "127.0.0.1") -> Settings:
    """`base` moved to `home` on free ports, with MLflow tracked at the server this topology starts."""
    airflow_port, mlflow_port = free_port(host), free_port(host)
    return replace(
        base,
        home=home,
        host=host,
        airflow_port=airflow_port,
        mlflow_port=mlflow_port,
        mlflow_tracking_uri=f"http://{host}:{mlflow_port}",
        mlflow_ui_url=f"http://{host}:{mlflow_port}",
        prediction_log_uri=str(home / "predictions"),
    )


def scaleout_env(topology: Topology) -> dict[str, str]:
    """The local stack's Airflow environment with CeleryExecutor, PostgreSQL and the broker swapped in."""
    settings = topology.settings
    env = stack.airflow_env(settings)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": topology.airflow_db_url,
            "AIRFLOW__CELERY__BROKER_URL": topology.broker_url,
            # Task states go to the metadata database, not to Redis: nothing to clean there.
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{topology.airflow_db_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(topology.worker_concurrency),
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": topology.broker_key_prefix,
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            # Fixed default ports (8974, 8794) would collide with another stack on this machine;
            # the REST API's /monitor/health already reports every component.
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port(settings.host)),
            "MLFLOW_TRACKING_URI": topology.mlflow_url,
            "MLOPS_PREDICTION_LOG_URI": settings.prediction_log_uri,
        }
    )
    if not topology.broker_key_prefix:
        del env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"]
    return env


def commands(topology: Topology) -> dict[str, list[str]]:
    """Every service of the topology by name, in start order."""
    settings = topology.settings
    airflow = str(stack.VENV_BIN / "airflow")
    run_dir = settings.run_dir
    result = {
        "mlflow": [
            str(stack.VENV_BIN / "mlflow"), "server",
            "--host", settings.host, "--port", str(settings.mlflow_port),
            "--backend-store-uri", topology.mlflow_db_url,
            "--artifacts-destination", str(settings.mlflow_dir / "artifacts"),
            "--serve-artifacts", "--workers", "1",
        ],
        "airflow-api-server": [airflow, "api-server", "--host", settings.host, "--port", str(settings.airflow_port)],
        "airflow-scheduler": [airflow, "scheduler"],
        "airflow-dag-processor": [airflow, "dag-processor"],
        "airflow-triggerer": [airflow, "triggerer"],
    }  # fmt: skip
    for name in topology.workers:
        result[f"airflow-worker-{name}"] = [
            airflow, "celery", "worker",
            "--celery-hostname", f"{name}@%h",
            "--concurrency", str(topology.worker_concurrency),
            # One pid file per worker: the default one in AIRFLOW_HOME lets only one worker start.
            "--pid", str(run_dir / f"airflow-worker-{name}.pid"),
            # Every process shares this machine's log folder, which the api-server reads directly.
            "--skip-serve-logs",
        ]  # fmt: skip
    return result


def _worker_env(env: dict[str, str], name: str) -> dict[str, str]:
    return {**env, WORKER_NAME_ENV: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"}


def wait_for_log_line(log: Path, pattern: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Wait until `log` has a line matching `pattern`; fail early if `process` exits."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if regex.search(text):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{log.stem} exited with code {process.returncode}; log tail:\n{text[-3000:]}")
        time.sleep(1)
    raise TimeoutError(f"{log.stem} did not log /{pattern}/ within {timeout:.0f} s; see {log}")


def start(topology: Topology, timeout: float = STARTUP_TIMEOUT_SECONDS) -> Running:
    """Migrate the Airflow database, start every service, wait until all are healthy and workers ready.

    On any failure everything already started is stopped before the error propagates.
    """
    settings = topology.settings
    for folder in (settings.run_dir, settings.mlflow_dir):
        folder.mkdir(parents=True, exist_ok=True)
    env = scaleout_env(topology)
    running = Running(topology, settings.run_dir / "logs", env)
    running.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        stack.migrate_airflow(env, running.log("airflow-db-migrate"))
        for name, command in commands(topology).items():
            worker = name.removeprefix("airflow-worker-") if name.startswith("airflow-worker-") else None
            process_env = _worker_env(env, worker) if worker else env
            running.processes[name] = start_process_group(
                command, running.log(name), env=process_env, cwd=settings.project_root
            )
        wait_for_http(f"{topology.mlflow_url}/health", timeout, running.processes["mlflow"], running.log("mlflow"))
        api = running.processes["airflow-api-server"]
        health = f"{topology.airflow_url}/api/v2/monitor/health"
        wait_for_http(health, timeout, api, running.log("airflow-api-server"))
        stack.wait_airflow_components(health, timeout, running.log_dir)
        for name in topology.workers:
            key = f"airflow-worker-{name}"
            # Celery prints "<node> ready." once it consumes from the broker.
            wait_for_log_line(running.log(key), rf"{re.escape(name)}@\S+ ready\.", timeout, running.processes[key])
    except BaseException:
        stop(running)
        raise
    return running


def stop(running: Running, grace_seconds: float = 30.0) -> list[str]:
    """Stop every process group, workers first (running tasks still report), MLflow last. Idempotent."""
    stopped = []
    for name, process in reversed(list(running.processes.items())):
        if stop_process_group(process.pid, grace_seconds):
            stopped.append(name)
        with contextlib.suppress(subprocess.TimeoutExpired):  # reaped; a stuck zombie is not ours to fix
            process.wait(timeout=10)
    return stopped
