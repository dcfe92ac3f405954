"""The scale-out topology, natively: CeleryExecutor with two workers, PostgreSQL, Redis, remote MLflow.

What `docker-compose.yaml` deploys, started here as processes (no container engine
on CI): Airflow's api-server, scheduler, dag-processor, triggerer and two Celery
workers on a PostgreSQL metadata database and the Redis broker, and an MLflow
server on a PostgreSQL backend. The whole lifecycle goes through the
authenticated REST API: train, score two landed partitions, monitor. One topology
serves the module; its databases, broker keys and processes are removed at the end,
and the last test proves that nothing is left.

Needs PostgreSQL (trust auth, user postgres) and Redis on 127.0.0.1 and the
`production` extra (`./run` syncs it); without them the module skips with a WARNING.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from mlops.monitoring.reports import report_dir
from mlops.naming import monitoring_experiment
from mlops.platform import scaleout
from mlops.platform.airflow_api import AirflowAPI
from mlops.processes import group_alive
from mlops.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(3600)]

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PROJECT_ROOT = Path(__file__).resolve().parents[2]
USE_CASE, MODEL_NAME = "bike_sharing", "bike_sharing_cnt"
PARTITIONS = ("2011-04-04", "2011-04-05")
MONITOR_AS_OF = "2011-04-06"
START_HINT = "start it on 127.0.0.1, or deselect these tests with -m 'not postgres'"
INSTALL_HINT = "install the production extra: `uv sync --frozen --extra production` (./run does it)"


def _skip(request: pytest.FixtureRequest, reason: str) -> NoReturn:
    # Straight to the terminal, past output capture: a skipped scale-out proof must not pass unnoticed.
    line = f"WARNING: tests/integration/test_celery_postgres.py skipped: {reason}"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\n{line}", file=sys.stderr, flush=True)
    pytest.skip(reason)


def _pg_url(database: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, start time) of every process, from /proc/<pid>/stat."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[19])
    return table


def _tree(leaders: set[int]) -> set[tuple[int, str]]:
    """(pid, start time) of every process in the leaders' sessions or descending from them."""
    table = _proc_table()
    found = {pid for pid, (_, sid, _) in table.items() if sid in leaders or pid in leaders}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return {(pid, table[pid][2]) for pid in found}


def _processes_with_env(name: str, value: str) -> list[int]:
    """Pids (other than ours) whose environment still shows `name=value`.

    Processes that set their title (api-server, Celery) overwrite this area, so it
    complements the process tree and never replaces it.
    """
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class Infra:
    """Everything the module created outside its tmp dir, and how to remove it (idempotent)."""

    token: str
    databases: dict[str, str]
    key_prefix: str
    admin: Any  # psycopg2 connection to the `postgres` database
    redis: Any
    home: Path
    running: scaleout.Running | None = None
    stopped: list[str] = field(default_factory=list)
    cleaned: bool = False

    def existing_databases(self) -> set[str]:
        with self.admin.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (list(self.databases.values()),))
            return {row[0] for row in cur.fetchall()}

    def broker_keys(self) -> list[bytes]:
        return list(self.redis.scan_iter(match=f"{self.key_prefix}*", count=1000))

    def query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                rows: list[tuple[Any, ...]] = cur.fetchall()
        finally:
            conn.close()
        return rows

    def cleanup(self) -> None:
        if self.running is not None:
            self.stopped += scaleout.stop(self.running)
        if self.cleaned:
            return
        errors = []
        for name in self.databases.values():
            try:
                with self.admin.cursor() as cur:
                    # FORCE: a leftover connection must not keep the database alive.
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # keep going: the other database and the broker still need cleaning
                errors.append(f"drop {name}: {exc}")
        keys = self.broker_keys()
        if keys:
            self.redis.delete(*keys)
        self.cleaned = True
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture(scope="module")
def infra(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    for module in ("psycopg2", "redis", "airflow.providers.celery"):
        if importlib.util.find_spec(module) is None:
            _skip(request, f"python module {module} missing: {INSTALL_HINT}")
    import psycopg2
    import redis

    try:
        admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        _skip(
            request, f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({str(exc).strip()}); {START_HINT}"
        )
    admin.autocommit = True
    broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=5)
    try:
        broker.ping()
    except redis.RedisError as exc:
        admin.close()
        _skip(request, f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc}); {START_HINT}")

    token = uuid.uuid4().hex[:10]
    state = Infra(
        token=token,
        databases={"airflow": f"mlops_ci_{token}_airflow", "mlflow": f"mlops_ci_{token}_mlflow"},
        key_prefix=f"mlops-ci-{token}:",
        admin=admin,
        redis=broker,
        home=tmp_path_factory.mktemp("scaleout-home"),
    )
    try:
        for name in state.databases.values():
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        yield state
    finally:
        try:
            state.cleanup()
        finally:
            admin.close()
            broker.close()


@pytest.fixture(scope="module")
def running(infra: Infra) -> scaleout.Running:
    settings = scaleout.topology_settings(get_settings(), infra.home)
    topology = scaleout.Topology(
        settings=settings,
        airflow_db_url=_pg_url(infra.databases["airflow"]),
        mlflow_db_url=_pg_url(infra.databases["mlflow"]),
        broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
        broker_key_prefix=infra.key_prefix,
        workers=("w1", "w2"),
        worker_concurrency=2,
    )
    # start() stops what it started when it fails; afterwards cleanup() stops it.
    infra.running = scaleout.start(topology, timeout=600)
    return infra.running


@dataclass
class DagRun:
    dag_id: str
    run_id: str
    state: str
    task_instances: list[dict[str, Any]]
    failures: str


def _failure_report(api: AirflowAPI, dag_id: str, run_id: str, instances: list[dict[str, Any]]) -> str:
    """Each failed task with the tail of its log, read through the REST API."""
    lines = []
    for ti in instances:
        if ti["state"] not in ("failed", "upstream_failed"):
            continue
        lines.append(f"{dag_id}.{ti['task_id']}[{ti['map_index']}] {ti['state']} on {ti.get('hostname')}")
        if ti["state"] != "failed":
            continue
        params = {"map_index": ti["map_index"]} if ti["map_index"] >= 0 else {}
        try:
            log = api.request(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{max(ti['try_number'], 1)}",
                params=params,
                headers={"Accept": "application/json"},
            )
            content = log.get("content") if isinstance(log, dict) else log
            lines += [f"    {_log_line(entry)}" for entry in (content or [])[-40:]]
        except RuntimeError as exc:
            lines.append(f"    (log unavailable: {exc})")
    return "\n".join(lines)


def _log_line(entry: Any) -> str:
    """One structured task-log entry as text; an exception shows as `Type: message`."""
    if not isinstance(entry, dict):
        return str(entry)
    text = str(entry.get("event", entry))
    for error in entry.get("error_detail") or []:
        if isinstance(error, dict):
            text += f" | {error.get('exc_type')}: {error.get('exc_value')}"
    return text


def _run(api: AirflowAPI, dag_id: str, conf: dict[str, Any], run_id: str, timeout: float) -> DagRun:
    api.wait_for_dag(dag_id, timeout=300)
    api.unpause(dag_id)
    api.trigger(dag_id, conf=conf, run_id=run_id)
    state = api.wait_for_run(dag_id, run_id, timeout=timeout, poll=5)
    instances = api.task_instances(dag_id, run_id)
    return DagRun(dag_id, run_id, state, instances, _failure_report(api, dag_id, run_id, instances))


def _land(home: Path, partition: str) -> Path:
    """Drop one day of raw rows as CSV where the scoring DAG looks, as an upstream producer would."""
    import pandas as pd

    raw = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
    rows = raw[raw["dteday"] == partition].drop(columns=["cnt", "casual", "registered"])
    assert len(rows) > 0, f"no raw rows for {partition}"
    folder = home / "landing" / USE_CASE / f"date={partition}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rows.csv"
    rows.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def lifecycle(running: scaleout.Running, infra: Infra) -> dict[str, DagRun]:
    """train -> score two partitions -> monitor, each through the REST API; later steps need a champion."""
    api = AirflowAPI(running.topology.airflow_url, running.username, running.password)
    runs: dict[str, DagRun] = {}
    runs["train"] = _run(
        api, f"train_{USE_CASE}", {"as_of": "2011-03-01", "reason": "celery test"}, "celery_train", timeout=1800
    )
    if runs["train"].state != "success":
        return runs
    for partition in PARTITIONS:
        _land(infra.home, partition)
        runs[f"score {partition}"] = _run(
            api, f"score_{USE_CASE}", {"partition": partition}, f"celery_score_{partition}", timeout=900
        )
    runs["monitor"] = _run(api, f"monitor_{USE_CASE}", {"as_of": MONITOR_AS_OF}, "celery_monitor", timeout=900)
    return runs


def _require_success(runs: dict[str, DagRun], *names: str) -> None:
    for name in names:
        assert name in runs, f"{name} never ran: an earlier DAG failed\n" + "\n".join(
            r.failures for r in runs.values() if r.failures
        )
        run = runs[name]
        assert run.state == "success", f"{run.dag_id}/{run.run_id} ended {run.state}:\n{run.failures}"


def test_topology_is_celery_on_postgres_with_auth(running: scaleout.Running, infra: Infra) -> None:
    env = running.env
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{running.topology.airflow_url}/execution/"
    assert env["MLFLOW_TRACKING_URI"] == running.topology.mlflow_url
    # Authentication is on: no token, no API; a wrong password, no token.
    import httpx

    assert httpx.get(f"{running.topology.airflow_url}/api/v2/dags", timeout=30).status_code == 401
    with pytest.raises(RuntimeError, match="login"):
        AirflowAPI(running.topology.airflow_url, running.username, "wrong-password").request("GET", "/dags")
    # The metadata lives in our PostgreSQL database, the queue in our Redis keys.
    assert infra.query(infra.databases["airflow"], "SELECT count(*) FROM alembic_version")[0][0] == 1
    assert infra.broker_keys(), f"no broker key with prefix {infra.key_prefix!r}: workers are not on our Redis"


def test_lifecycle_succeeds_with_tasks_on_both_workers(lifecycle: dict[str, DagRun], infra: Infra) -> None:
    _require_success(lifecycle, "train", *(f"score {p}" for p in PARTITIONS), "monitor")
    ran = [ti for run in lifecycle.values() for ti in run.task_instances if ti["state"] == "success"]
    hosts = {ti["hostname"] for ti in ran}
    workers = {host.split("@", 1)[0] for host in hosts}
    assert workers == {"w1", "w2"}, f"tasks ran on {sorted(hosts)}; want both w1@ and w2@"
    # The REST API and the metadata database agree.
    rows = infra.query(infra.databases["airflow"], "SELECT DISTINCT split_part(hostname, '@', 1) FROM task_instance")
    assert {r[0] for r in rows} >= {"w1", "w2"}


def test_champion_registered_through_remote_mlflow(lifecycle: dict[str, DagRun], infra: Infra) -> None:
    from mlflow.tracking import MlflowClient

    _require_success(lifecycle, "train")
    running = infra.running
    assert running is not None
    client = MlflowClient(tracking_uri=running.topology.mlflow_url)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert int(champion.version) >= 1
    assert client.get_run(champion.run_id).info.status == "FINISHED"
    # ...and it is the PostgreSQL backend that holds the alias.
    aliases = infra.query(infra.databases["mlflow"], "SELECT name, alias, version FROM registered_model_aliases")
    assert (MODEL_NAME, "champion", int(champion.version)) in aliases


def test_scoring_and_monitoring_reports_stored(lifecycle: dict[str, DagRun], infra: Infra) -> None:
    from mlflow.tracking import MlflowClient

    _require_success(lifecycle, *(f"score {p}" for p in PARTITIONS), "monitor")
    run = lifecycle["monitor"]
    # Unpausing also starts today's scheduled run (an empty window): look at ours by its run key.
    run_key = f"{run.dag_id}/{run.run_id}"
    folder = report_dir(USE_CASE, run_key, infra.home / "reports")
    assert (folder / "summary.json").exists(), f"no monitoring summary in {folder}"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["rows"] == 24 * len(PARTITIONS), summary  # both scored days reached monitoring
    assert (folder / "decision.json").exists() and (folder / "drift.html").exists(), sorted(folder.iterdir())

    running = infra.running
    assert running is not None
    client = MlflowClient(tracking_uri=running.topology.mlflow_url)
    experiment = client.get_experiment_by_name(monitoring_experiment(USE_CASE))
    assert experiment is not None, "monitoring logged no experiment to the remote MLflow"
    ours = client.search_runs([experiment.experiment_id], filter_string=f"tags.run_key = '{run_key}'")
    assert len(ours) == 1, f"{len(ours)} monitoring runs tagged {run_key}"
    assert ours[0].data.metrics["rows"] == summary["rows"]
    assert {a.path for a in client.list_artifacts(ours[0].info.run_id)} >= {"reports", "decision.json"}


def test_stop_leaves_no_process_database_or_broker_key(running: scaleout.Running, infra: Infra) -> None:
    home = str(infra.home)
    groups = {name: p.pid for name, p in running.processes.items()}
    tree = _tree(set(groups.values()))
    # Non-vacuous: the snapshot holds every leader and the processes they forked.
    assert len(groups) == 7 and set(groups.values()) <= {pid for pid, _ in tree}, (groups, tree)
    assert len(tree) > len(groups)

    infra.cleanup()

    assert set(infra.stopped) == set(groups), f"stopped {infra.stopped}, started {sorted(groups)}"
    assert not [name for name, pgid in groups.items() if group_alive(pgid)]
    table = _proc_table()
    survivors = [pid for pid, started in tree if pid in table and table[pid][2] == started]
    assert survivors == [], f"processes of the topology outlived stop(): {survivors}"
    assert _tree(set(groups.values())) == set(), "a process is still in a session of the topology"
    assert _processes_with_env("MLOPS_HOME", home) == [], "a process with the topology's MLOPS_HOME is left"
    assert infra.existing_databases() == set()
    assert infra.broker_keys() == []
