"""Faults under the real scheduler: a training task SIGKILLed, two triggers at once, a scheduler
restart, and the MLflow server stopped in the middle of training.

One private local stack for the module (api-server, scheduler, dag-processor,
triggerer, MLflow, prediction service; LocalExecutor on SQLite), started by
`mlops.stack.private_stack` on free ports under a temporary MLOPS_HOME, with its
alerts going to a local webhook sink. Each fault gets DAG runs of its own of
`train_bike_sharing`, triggered through the REST API on the benchmark's small window,
and is judged by what Airflow's REST API, MLflow's registry and the alerts say
afterwards. The tests do not depend on their order: each compares the registry with
what it was before its own runs.

MLflow's client retries each request 7 times with backoff factor 2 (about 4 minutes)
before a task sees an error; the stack's tasks get 3 retries with factor 1 (seconds).
Airflow's own retries are the DAG's profiles (counts, exponential backoff) with their
delays times RETRY_SCALE (the test-only MLOPS_TEST_RETRY_SCALE of
mlops.orchestration.defaults), so a retry comes seconds after a failure instead of
minutes; test_mlflow_outage.py checks the unscaled policy on the DAG itself.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from alert_sink import AlertSink, alert_sink
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops.config import find_use_case
from mlops.monitoring.assessment import Assessment
from mlops.monitoring.decision import MonitoringDecision
from mlops.naming import TAG_CANDIDATE_KEY, TAG_DAG_RUN_ID, TAG_MODEL_URI, TAG_RUN_KEY, TAG_RUN_TYPE
from mlops.orchestration.defaults import COMPUTE_BOUND, RETRY_SCALE_VARIABLE
from mlops.orchestration.training_slot import QUEUE_XCOM_KEY
from mlops.platform import stack
from mlops.platform.airflow_api import AirflowAPI
from mlops.processes import group_alive, stop_process_group
from mlops.settings import Settings
from mlops.training.candidates import CandidateSpec

pytestmark = pytest.mark.integration

USE_CASE = "bike_sharing"
DAG_ID = f"train_{USE_CASE}"
# The training benchmark's window: two months of early 2011, a run of about a minute.
AS_OF = "2011-03-01"
# Generous: a loaded 2-core machine runs the DAG several times slower than an idle one.
RUN_TIMEOUT = 900.0
# How long the stop waits before SIGKILL, as a deployment's grace period does (systemd's
# default is 90 s, Kubernetes' 30 s): long enough here for the scheduler to drain its
# running tasks on a loaded machine, which is the path this test proves.
SCHEDULER_STOP_GRACE = 120.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MLFLOW_CLIENT_FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
# The stack's retry delays are the profiles' times this: train_candidate's 30 s becomes 3 s.
RETRY_SCALE = 0.1


@dataclass
class TrainingStack:
    settings: Settings
    api: AirflowAPI
    mlflow: MlflowClient
    model_name: str
    alerts: AlertSink

    def trigger(self, run_id: str, conf: dict[str, Any]) -> str:
        return self.api.trigger(DAG_ID, conf={"as_of": AS_OF, **conf}, run_id=run_id)

    def task(self, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}"
        result: dict[str, Any] = self.api.request("GET", f"{path}/{map_index}" if map_index >= 0 else path)
        return result

    def tries(self, run_id: str, task_id: str, map_index: int) -> list[tuple[int, str]]:
        path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        return sorted((t["try_number"], t["state"]) for t in self.api.request("GET", path)["task_instances"])

    def return_value(self, run_id: str, task_id: str) -> Any:
        return self.xcom(run_id, task_id, "return_value")

    def xcom(self, run_id: str, task_id: str, key: str) -> Any:
        path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api.request("GET", path)["value"]

    def try_history(self, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        return sorted(self.api.request("GET", path)["task_instances"], key=lambda t: t["try_number"])

    def versions(self, run_id: str | None = None) -> list[ModelVersion]:
        """All versions of the model, or those one DAG run registered (found by the run key, as registry does)."""
        query = f"name = '{self.model_name}'"
        if run_id is not None:
            query += f" and tags.`{TAG_RUN_KEY}` = '{DAG_ID}/{run_id}'"
        return list(self.mlflow.search_model_versions(query))

    def aliases(self) -> dict[str, str]:
        try:
            return dict(self.mlflow.get_registered_model(self.model_name).aliases)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # nothing registered yet
                return {}
            raise

    def training_runs(self, run_id: str, run_type: str) -> list[Run]:
        """The live MLflow runs of one DAG run: its parent run or its candidate runs."""
        experiment = self.mlflow.get_experiment_by_name(USE_CASE)
        assert experiment is not None, f"no MLflow experiment {USE_CASE}"
        return list(
            self.mlflow.search_runs(
                [experiment.experiment_id],
                f"tags.{TAG_DAG_RUN_ID} = '{run_id}' and tags.`{TAG_RUN_TYPE}` = '{run_type}'",
                run_view_type=ViewType.ACTIVE_ONLY,
            )
        )


@pytest.fixture(scope="module")
def training_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingStack]:
    tmp = tmp_path_factory.mktemp("scheduler-faults")
    # A copy of the Great Expectations context, so Data Docs of these runs stay in tmp.
    ge_dir = tmp / "great_expectations"
    shutil.copytree(PROJECT_ROOT / "great_expectations", ge_dir, ignore=shutil.ignore_patterns("uncommitted"))
    with (
        alert_sink() as alerts,
        stack.private_stack(
            tmp / "home",
            extra_env={
                "MLOPS_GE_DIR": str(ge_dir),
                "MLOPS_ALERT_WEBHOOK_URL": alerts.url,
                RETRY_SCALE_VARIABLE: str(RETRY_SCALE),
                **MLFLOW_CLIENT_FAST_FAIL,
            },
            timeout=600,
        ) as settings,
    ):
        api = stack.airflow_api(settings)
        api.wait_for_dag(DAG_ID, timeout=600)
        api.unpause(DAG_ID)
        uri = settings.mlflow_tracking_uri
        # Its own client, not mlops.tracking.client(): that one repoints MLflow's
        # process-global fluent API, which later modules of the session rely on.
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        yield TrainingStack(settings, api, client, find_use_case(USE_CASE).model_name, alerts)


def _wait(what: str, check: Any, timeout: float = RUN_TIMEOUT, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(poll)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def _title(process: psutil.Process) -> str:
    # setproctitle rewrites argv, so the title is the command line.
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def task_runner_process(scheduler_pid: int, ti_id: str) -> psutil.Process:
    """The process that runs a task instance's code, found below the scheduler.

    With the LocalExecutor, a worker forked by the scheduler supervises the task
    ("airflow worker -- LocalExecutor: <ti id>") and forks the task runner
    ("airflow worker -- <ti id>"): both titles name the task instance, and the
    runner is the one whose parent does too.
    """
    titled = {p.pid: p for p in psutil.Process(scheduler_pid).children(recursive=True) if ti_id in _title(p)}
    runners = [p for p in titled.values() if p.ppid() in titled]
    assert len(runners) == 1, (
        f"expected one supervisor and one runner for {ti_id}: {[_title(p) for p in titled.values()]}"
    )
    return runners[0]


def _finished_value(ts: TrainingStack, run_id: str, task_id: str) -> Any:
    if ts.task(run_id, task_id)["state"] != "success":
        return None
    return ts.return_value(run_id, task_id)


def _candidate_keys(ts: TrainingStack, run_id: str) -> list[str]:
    """The candidate key of each train_candidate map index, from what list_candidates returned."""
    specs = _wait("list_candidates returned", lambda: _finished_value(ts, run_id, "list_candidates"))
    return [CandidateSpec.from_dict(spec).key for spec in specs]


def _candidate_mid_logging(ts: TrainingStack, run_id: str, keys: list[str]) -> tuple[dict[str, Any], Run] | None:
    """A running train_candidate whose MLflow run exists but is not complete: inside the task's own code."""
    running = [t for t in ts.api.task_instances(DAG_ID, run_id)
               if t["task_id"] == "train_candidate" and t["state"] == "running"]  # fmt: skip
    if not running:
        return None
    by_key = {keys[ti["map_index"]]: ti for ti in running}
    for candidate_run in ts.training_runs(run_id, "candidate"):
        ti = by_key.get(candidate_run.data.tags[TAG_CANDIDATE_KEY])
        if ti is not None and TAG_MODEL_URI not in candidate_run.data.tags:
            return ti, candidate_run
    return None


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _retry_policy(ts: TrainingStack, task_id: str) -> tuple[int, timedelta, float]:
    """A task's retries, retry delay and backoff multiplier, as the stack's Airflow serves the DAG."""
    task = ts.api.request("GET", f"/dags/{DAG_ID}/tasks/{task_id}")
    delay = timedelta(**{unit: task["retry_delay"][unit] for unit in ("days", "seconds", "microseconds")})
    return int(task["retries"]), delay, float(task["retry_exponential_backoff"])


def _shortest_retry_gaps(retries: int, delay: timedelta, multiplier: float) -> list[float]:
    """The least time Airflow waits before each retry (its exponential formula, the low end of its jitter)."""
    return [float(math.ceil(delay.total_seconds() * multiplier ** (attempt - 1))) for attempt in range(1, retries + 1)]


def test_sigkilled_train_candidate_is_retried_and_registers_one_version(training_stack: TrainingStack) -> None:
    ts = training_stack
    champion_before = ts.aliases().get("champion")
    versions_before = len(ts.versions())
    run_id = ts.trigger("sigkill_train_candidate", {"reason": "reliability test: SIGKILL a train_candidate"})
    triggered = time.monotonic()
    keys = _candidate_keys(ts, run_id)

    victim, half_written = _wait("a train_candidate mid-run", lambda: _candidate_mid_logging(ts, run_id, keys))
    # Kill the task runner, the process running our code, not its supervisor: that is what
    # the OOM killer or a crash in native code does to a fit. The supervisor (a LocalExecutor
    # worker) sees the exit and hands the workload back; the scheduler, finding the task
    # still "running", marks it up_for_retry at once and the retry policy takes over.
    # (Killing the supervisor instead takes the runner down with it, but nothing reports:
    # the task stays "running" until the scheduler's heartbeat time-out, 300 s by default,
    # and only then is retried; see docs/reliability.md.)
    runner = task_runner_process(stack.service_pid("airflow-scheduler", ts.settings), victim["id"])
    assert runner.pid == victim["pid"], "the REST API and the process tree disagree on the task's process"
    runner.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    # Dead now, so this is what the attempt left: a candidate run without its model.
    assert TAG_MODEL_URI not in ts.mlflow.get_run(half_written.info.run_id).data.tags

    index = victim["map_index"]
    _wait("try 2 to be scheduled", lambda: ts.task(run_id, "train_candidate", index)["try_number"] == 2)
    retry_scheduled = time.monotonic()
    assert ts.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT) == "success"
    finished = time.monotonic()

    retried = ts.task(run_id, "train_candidate", index)
    assert (retried["try_number"], retried["state"]) == (2, "success")
    assert ts.tries(run_id, "train_candidate", index) == [(1, "failed"), (2, "success")]
    # The half-written run was replaced, not kept beside the new one: one live run per candidate.
    assert ts.mlflow.get_run(half_written.info.run_id).info.lifecycle_stage == "deleted"
    live = ts.training_runs(run_id, "candidate")
    assert sorted(r.data.tags[TAG_CANDIDATE_KEY] for r in live) == sorted(keys)
    assert all(TAG_MODEL_URI in r.data.tags for r in live)

    # One version for the DAG run, and the aliases moved once, by the one promotion.
    [version] = ts.versions(run_id)
    assert len(ts.versions()) == versions_before + 1
    promotion = ts.task(run_id, "promote_candidate")
    assert promotion["try_number"] == 1
    assert ts.return_value(run_id, "promote_candidate")["action"] == "promoted"
    expected = {"champion": version.version}
    if champion_before is not None:
        expected["previous"] = champion_before
    assert ts.aliases() == expected
    print(f"\nscheduler faults / SIGKILL: killed {keys[index]} (try 1) mid-logging "
          f"{killed - triggered:.1f} s after the trigger; try 2 scheduled {retry_scheduled - killed:.1f} s later; "
          f"run succeeded {finished - triggered:.1f} s after the trigger; v{version.version} is @champion")  # fmt: skip


def monitoring_conf(settings: Settings, champion: str | None) -> dict[str, str]:
    """The conf monitoring's TriggerDagRunOperator renders from assess_window's return value."""
    decision = MonitoringDecision(
        use_case=USE_CASE, action="retrain", reasons=["drift share 0.70 >= 0.5 (7 of 10 features drifted)"],
        drift_share=0.7, drifted_columns=["temp", "atemp", "hum", "windspeed", "season", "hr", "weekday"],
        performance={}, primary_metric="rmse", degradation=None,
    )  # fmt: skip
    report = settings.reports_dir / USE_CASE / "monitor_bike_sharing" / "scheduled__2011-03-01"
    assessment = Assessment(decision, champion, str(report), str(report / "drift.html"), None, AS_OF)
    values = assessment.to_dict()
    return {"reason": values["trigger_reason"], "report": values["report_html"], "as_of": values["window_end"]}


def test_two_simultaneous_triggers_run_one_at_a_time_each_with_its_reason(training_stack: TrainingStack) -> None:
    ts = training_stack
    confs = {
        "monitoring_trigger": monitoring_conf(ts.settings, ts.aliases().get("champion")),
        "manual_trigger": {"reason": "manual", "as_of": AS_OF},
    }
    versions_before = len(ts.versions())
    ts.api.dag_runs(DAG_ID)  # logged in once, so both requests leave together
    start = threading.Barrier(len(confs))

    def post(run_id: str) -> str:
        start.wait()
        return ts.trigger(run_id, confs[run_id])

    with ThreadPoolExecutor(len(confs)) as pool:
        assert sorted(pool.map(post, confs)) == sorted(confs)

    # Throughout, never two running; at least once, one running with the other queued behind it.
    most_running, queued_behind = 0, False
    states: dict[str, str] = {}
    deadline = time.monotonic() + 2 * RUN_TIMEOUT
    while time.monotonic() < deadline:
        running = ts.api.request("GET", f"/dags/{DAG_ID}/dagRuns", params={"state": ["running"]})
        most_running = max(most_running, running["total_entries"])
        states = {run_id: ts.api.dag_run(DAG_ID, run_id)["state"] for run_id in confs}
        queued_behind |= sorted(states.values()) == ["queued", "running"]
        if all(state in ("success", "failed") for state in states.values()):
            break
        time.sleep(0.5)
    assert states == dict.fromkeys(confs, "success"), states
    assert most_running == 1
    assert queued_behind, "never saw one run queued behind the other"

    first, second = sorted((ts.api.dag_run(DAG_ID, run_id) for run_id in confs), key=lambda r: r["start_date"])
    assert _seconds(first["end_date"], second["start_date"]) >= 0, "the two training runs overlapped"
    for run_id, conf in confs.items():
        [parent] = ts.training_runs(run_id, "parent")
        assert parent.data.tags["reason"] == conf["reason"]
        assert conf["reason"] in parent.data.tags["mlflow.note.content"]
        assert len(ts.versions(run_id)) == 1
    [monitoring_parent] = ts.training_runs("monitoring_trigger", "parent")
    assert monitoring_parent.data.tags["monitoring_report"] == confs["monitoring_trigger"]["report"]
    assert len(ts.versions()) == versions_before + 2

    # Why the second one waited is recorded on it: by its first task (XCom and task log)
    # and on its MLflow parent run, naming the run it waited for.
    waited = _seconds(second["queued_at"], second["start_date"])
    record = ts.xcom(second["dag_run_id"], "ingest_snapshot", QUEUE_XCOM_KEY)
    assert record["queued_behind"] == first["dag_run_id"], record
    assert abs(float(record["queued_seconds"]) - waited) < 5, (record, waited)
    assert "max_active_runs=1" in record["queue_reason"] and first["dag_run_id"] in record["queue_reason"]
    [second_parent] = ts.training_runs(second["dag_run_id"], "parent")
    assert {k: second_parent.data.tags.get(k) for k in record} == record
    assert ts.xcom(first["dag_run_id"], "ingest_snapshot", QUEUE_XCOM_KEY).get("queued_behind") != second["dag_run_id"]
    print(f"\nscheduler faults / two triggers: {first['dag_run_id']} ran first "
          f"({_seconds(first['start_date'], first['end_date']):.1f} s); {second['dag_run_id']} stayed queued "
          f"{_seconds(second['queued_at'], second['start_date']):.1f} s, then ran "
          f"({_seconds(second['start_date'], second['end_date']):.1f} s); at most {most_running} running; "
          f"recorded: {record['queue_reason']}")  # fmt: skip


def test_scheduler_restarted_mid_run_completes_the_run_with_one_version(training_stack: TrainingStack) -> None:
    ts = training_stack
    versions_before = len(ts.versions())
    run_id = ts.trigger("scheduler_restart", {"reason": "reliability test: scheduler restarted mid-run"})
    triggered = time.monotonic()
    keys = _candidate_keys(ts, run_id)
    mid_run, _ = _wait("a train_candidate mid-run", lambda: _candidate_mid_logging(ts, run_id, keys))
    mid_run_key = (mid_run["task_id"], mid_run["map_index"])
    at_stop = {(t["task_id"], t["map_index"]): t["try_number"]
               for t in ts.api.task_instances(DAG_ID, run_id) if t["state"] == "running"}  # fmt: skip
    old_scheduler = stack.service_pid("airflow-scheduler", ts.settings)
    stopping = time.monotonic()
    # SIGTERM to the whole group, as a deployment stops a service; SIGKILL only after the grace.
    stop_process_group(old_scheduler, grace_seconds=SCHEDULER_STOP_GRACE)
    stopped = time.monotonic()
    try:
        assert not group_alive(old_scheduler)
        # Mid-way: the run is not over and the steps after training have not started.
        assert ts.api.dag_run(DAG_ID, run_id)["state"] == "running"
        not_started = {
            (t["task_id"], t["map_index"]) for t in ts.api.task_instances(DAG_ID, run_id) if not t["start_date"]
        }
        assert {("register_candidate", -1), ("promote_candidate", -1)} <= not_started
        restarted_at = datetime.now(UTC)
    finally:
        # Whatever failed above, the next tests need a scheduler: a failure here must not cascade.
        stack.up(ts.settings, timeout=600)  # starts what is not running: the scheduler, same command and environment
    restarted = time.monotonic()
    assert stack.service_pid("airflow-scheduler", ts.settings) != old_scheduler

    assert ts.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT) == "success"
    finished = time.monotonic()
    final = {(t["task_id"], t["map_index"]): t for t in ts.api.task_instances(DAG_ID, run_id)}
    # The task inside its own code when SIGTERM came was drained: the scheduler waited for it.
    assert (final[mid_run_key]["state"], final[mid_run_key]["try_number"]) == ("success", at_stop[mid_run_key])
    # Others running then may have been ended by the signal while starting up; the new
    # scheduler ran those again, once.
    for key, try_number in at_stop.items():
        assert final[key]["state"] == "success" and final[key]["try_number"] <= try_number + 1, key
    # What had not started ran under the new scheduler.
    for key in not_started:
        assert datetime.fromisoformat(final[key]["start_date"]) > restarted_at, key
    [version] = ts.versions(run_id)
    assert len(ts.versions()) == versions_before + 1
    assert ts.aliases()["champion"] == version.version
    rerun = sorted(f"{k[0]}[{k[1]}]" for k, t in final.items() if k in at_stop and t["try_number"] > at_stop[k])
    print(f"\nscheduler faults / restart: SIGTERM {stopping - triggered:.1f} s after the trigger while "
          f"{len(at_stop)} tasks ran ({mid_run['task_id']}[{mid_run['map_index']}] mid-logging); the scheduler "
          f"drained and exited in {stopped - stopping:.1f} s; restarted and healthy in {restarted - stopped:.1f} s; "
          f"run succeeded {finished - restarted:.1f} s later ({finished - triggered:.1f} s after the trigger); "
          f"run again after the restart: {rerun or 'none'}")  # fmt: skip


def test_mlflow_down_mid_training_fails_clearly_keeps_the_champion_and_a_cleared_rerun_promotes_once(
    training_stack: TrainingStack,
) -> None:
    ts = training_stack
    aliases_before = ts.aliases()
    versions_before = len(ts.versions())
    run_id = ts.trigger("mlflow_outage", {"reason": "reliability test: MLflow stopped mid-training"})
    triggered = time.monotonic()
    keys = _candidate_keys(ts, run_id)
    _, half_written = _wait("a train_candidate mid-run", lambda: _candidate_mid_logging(ts, run_id, keys))

    # Stop the tracking server (its whole process group) while a candidate is logging to it.
    stop_process_group(stack.service_pid("mlflow", ts.settings))
    stopped = time.monotonic()
    try:
        state = ts.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
        failed_at = time.monotonic()
    finally:
        # Back on the same port and database, whatever happened above: later tests need it.
        stack.up(ts.settings, timeout=600)
    back = time.monotonic()
    assert state == "failed"

    # Each candidate task retried with growing delays (COMPUTE_BOUND: 2 retries, 30 s times
    # RETRY_SCALE, exponential), then failed; nothing after training started.
    retries, delay, multiplier = _retry_policy(ts, "train_candidate")
    assert (retries, delay, multiplier) == (COMPUTE_BOUND["retries"], COMPUTE_BOUND["retry_delay"] * RETRY_SCALE, 2.0)
    shortest = _shortest_retry_gaps(retries, delay, multiplier)
    instances = {(t["task_id"], t["map_index"]): t for t in ts.api.task_instances(DAG_ID, run_id)}
    failed = sorted(k for k, t in instances.items() if t["state"] == "failed")
    assert failed and {task for task, _ in failed} == {"train_candidate"}, instances
    gaps = []
    for _, index in failed:
        history = ts.try_history(run_id, "train_candidate", index)
        assert [(t["try_number"], t["state"]) for t in history] == [(1, "failed"), (2, "failed"), (3, "failed")]
        gap = [_seconds(a["end_date"], b["start_date"]) for a, b in zip(history, history[1:], strict=False)]
        # Airflow's jittered exponential delays: at least the delay, then twice it (1 s for rounding).
        too_soon = [(g, low) for g, low in zip(gap, shortest, strict=True) if g < low - 1]
        assert not too_soon, (gap, shortest)
        gaps.append(gap)
    for task_id in ("evaluate_candidate", "register_candidate", "promote_candidate", "publish_champion"):
        assert instances[(task_id, -1)]["state"] == "upstream_failed", task_id

    # Nothing half-registered, no alias moved.
    assert ts.versions(run_id) == [] and len(ts.versions()) == versions_before
    assert ts.aliases() == aliases_before

    # Failed clearly: one alert per failed task, naming it, the run and the unreachable server.
    port = str(ts.settings.mlflow_port)
    alerts = [a for a in ts.alerts.wait_for(f"{DAG_ID}.train_candidate failed") if f"Run: {run_id}" in a["body"]]
    assert len(alerts) == len(failed), [a["body"][:300] for a in alerts]
    for alert in alerts:
        error = alert["body"].split("Error: ", 1)[1]
        assert port in error and ("Connection refused" in error or "Max retries" in error), error[:500]

    # MLflow is back: clearing the failed tasks re-runs the same DAG run, which replaces the
    # half-written candidate run, registers one version and promotes it once.
    ts.api.request(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={"dag_run_id": run_id, "only_failed": True, "reset_dag_runs": True, "dry_run": False},
    )
    assert ts.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT) == "success"
    done = time.monotonic()
    [version] = ts.versions(run_id)
    assert len(ts.versions()) == versions_before + 1
    expected = {"champion": version.version}
    if "champion" in aliases_before:
        expected["previous"] = aliases_before["champion"]
    assert ts.aliases() == expected
    assert ts.task(run_id, "promote_candidate")["try_number"] == 1
    assert ts.return_value(run_id, "promote_candidate")["action"] == "promoted"
    assert ts.mlflow.get_run(half_written.info.run_id).info.lifecycle_stage == "deleted"
    live = ts.training_runs(run_id, "candidate")
    assert sorted(r.data.tags[TAG_CANDIDATE_KEY] for r in live) == sorted(keys)
    print(f"\nscheduler faults / MLflow outage: stopped {stopped - triggered:.1f} s after the trigger, mid-logging; "
          f"{len(failed)} train_candidate tasks failed after 3 tries each (gaps between tries, s: "
          f"{[[round(g) for g in gap] for gap in gaps]}); run failed {failed_at - stopped:.1f} s after the stop; "
          f"MLflow back in {back - failed_at:.1f} s; cleared re-run succeeded {done - back:.1f} s later, "
          f"v{version.version} is @champion")  # fmt: skip
