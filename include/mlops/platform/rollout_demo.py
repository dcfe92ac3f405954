"""The rollout demo (`mlops demo --rollout`): a shadow promoted and a worse canary rolled back, automatically.

On a stack of its own under `<MLOPS_HOME>/demo-rollout` (fresh at every run, so the
timeline is this run's; the main demo's state is left alone), with bike_sharing's
`deployment` switched in a copy of the configs:

1. train on early 2011: the first champion is promoted directly (nothing to compare with);
2. shadow: retrain on March-April; the gate passes it and, under `strategy: shadow`, it
   becomes `@shadow`; replay May-June through the service, which scores every request with
   both; `rollout_bike_sharing` promotes it on the paired labelled requests;
3. canary: switch to `strategy: canary` and restart the prediction service; retrain on the
   winter window again, a deliberately stale model for summer traffic that the gate passes
   (it judges on that window's own holdout); it becomes `@canary`; replay July-August; the
   rollout DAG rolls it back on the labelled requests of each side;
4. print the timeline with both rollouts' evidence, read back from the registry.

Every decision is the real one: the training DAG's promote step sets the aliases, the
service routes and logs, the rollout DAG judges and moves them. The demo only triggers the
DAG runs, replays traffic and switches the strategy between the two rollouts.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from mlops.config import UseCase, find_use_case
from mlops.naming import rollout_dag_id, training_dag_id
from mlops.platform import stack
from mlops.platform.airflow_api import AirflowAPI
from mlops.platform.demo import (
    INITIAL_AS_OF,
    announce,
    print_timeline,
    report_training,
    run_dag,
    task_result,
    wait_for_new_run,
)
from mlops.settings import Settings, get_settings

# bike_sharing, its weather sent by the clients: the rollouts need no feature store (the main demo runs
# bike_sharing_store).
USE_CASE = "bike_sharing"
DEMO_FOLDER = "demo-rollout"
# The two strategies, one after the other. Only the prediction service reads `strategy` once
# (at start): the training and rollout tasks read the config file at every run. So between the
# rollouts the service alone restarts, as a deployment would after a config change, and the
# Airflow and MLflow processes (and their state) carry on.
SHADOW_DEPLOYMENT: dict[str, Any] = {"strategy": "shadow"}
CANARY_DEPLOYMENT: dict[str, Any] = {
    "strategy": "canary",
    # The default first step, 5 %, needs about 4 000 hourly rows of traffic before the canary
    # has its `min_labeled_rows` (200) labelled rows; at 25 % two replayed months give it ~370.
    "canary_steps": [0.25, 1.0],
    # The canary answers about 50 requests here, so its guard judges p99 once, over 50 answers:
    # their slowest. On a shared 2-core machine one request held up by another process breaches
    # the default 5 ms slack; a recorded run rolled back an identical ridge model that way (p99
    # 84 ms against the champion's 28.5 ms). This demo is about the labelled evidence, so its
    # guard only trips on gross slowness (as tests/integration/test_serving_canary.py's does); the
    # error-rate guard and the 1 s time-out keep their defaults; tests/unit/test_serving_canary.py
    # shows the latency check itself.
    "canary_latency_slack_ms": 250,
}
SHADOW_AS_OF, SHADOW_TRAFFIC = "2011-05-01", ("2011-05-01", "2011-07-01")
CANARY_TRAFFIC = ("2011-07-01", "2011-09-01")
# Smaller requests than the main demo's day per request: routing is per request, so the
# canary's share of rows follows its fraction closely instead of by whole days.
CANARY_ROWS_PER_REQUEST = 6
SERVICE = "prediction-service"


def demo_settings() -> Settings:
    """Point this process, and so every service it starts, at the demo's own home and configs."""
    base = get_settings()
    home = base.home / DEMO_FOLDER
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLOPS_CONFIGS_DIR"] = str(home / "configs")
    return get_settings()


def start_fresh(settings: Settings) -> None:
    """Stop an earlier run's stack and remove its state: a leftover `@canary` would refuse the next rollout."""
    stack.down(settings)
    if settings.home.name == DEMO_FOLDER and settings.home.exists():
        shutil.rmtree(settings.home)


def write_configs(settings: Settings, deployment: dict[str, Any]) -> UseCase:
    """The project's configs with bike_sharing's `deployment` replaced, where the stack reads them."""
    import yaml

    from mlops._io import atomic_write_text

    for source in sorted((settings.project_root / "configs").glob("*.yaml")):
        text = source.read_text()
        if source.stem == USE_CASE:
            raw = yaml.safe_load(text)
            raw["deployment"] = deployment
            text = yaml.safe_dump(raw, sort_keys=False)
        # Atomic: a task parsing the configs while they are rewritten must see one or the other.
        atomic_write_text(settings.configs_dir / source.name, text)
    return find_use_case(USE_CASE, settings.configs_dir)


def wait_for_service(url: str, ready: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120) -> None:
    """Poll the service's `/health` until `ready` holds: its poller loads a new alias within a few seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{url}/health", timeout=5).json()
            if ready(health):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise TimeoutError(f"the prediction service did not show {what} within {timeout:.0f} s; /health said {health}")


def rollout_version(health: dict[str, Any], section: str) -> str | None:
    """The version `/health` shows under `shadows` or `canaries` for the demo's use case."""
    found = (health.get(section) or {}).get(USE_CASE) or {}
    version = found.get("version")
    worker = found.get("worker")
    if worker is not None and worker.get("version") != version:
        return None  # the shadow's worker process has not loaded it yet: its batches would be dropped
    return str(version) if version is not None else None


def log_flushed(health: dict[str, Any]) -> bool:
    """Every answered row is in the prediction log: the rollout reads the log, not the service."""
    logs = [health.get("log") or {}]
    # A shadow's rows are logged by its worker process's own writer (as it last reported it).
    logs += [shadow.get("log") or {} for shadow in (health.get("shadows") or {}).values()]
    shadows_idle = all(shadow.get("queue_depth") == 0 for shadow in (health.get("shadows") or {}).values())
    return shadows_idle and all(log.get("queue_depth") == 0 and log.get("pending_rows") == 0 for log in logs)


def train(api: AirflowAPI, use_case: UseCase, as_of: str, reason: str) -> dict[str, Any] | None:
    """One training run through the scheduler; returns what its promote step did."""
    dag_id = training_dag_id(use_case.name)
    run_id, state = run_dag(api, dag_id, {"as_of": as_of, "reason": reason})
    return report_training(api, dag_id, run_id) if state == "success" else None


def judge(api: AirflowAPI, use_case: UseCase, since: str) -> dict[str, Any]:
    """Trigger the rollout DAG on the log from `since` and say what it decided."""
    dag_id = rollout_dag_id(use_case.name)
    # The log is read by event time, and replayed traffic carries 2011's times, long before
    # the alias was set (the default start): `since` makes the replayed requests the evidence.
    run_id, _ = run_dag(api, dag_id, {"since": since})
    result: dict[str, Any] = task_result(api, dag_id, run_id, "apply_rollout") or {}
    announce(f"  {dag_id}: v{result.get('version', '?')} {result.get('action', 'no result')}")
    for reason in result.get("reasons") or []:
        announce(f"    {reason}")
    return result


def wait_for_asset_run(api: AirflowAPI, dag_id: str, known: set[str]) -> None:
    """The challenger Asset wakes the rollout DAG; let that run finish before traffic starts.

    It finds no labelled traffic yet and waits; on two cores its task processes would
    otherwise compete with the service for the replayed requests' CPU.
    """
    run_id = wait_for_new_run(api, dag_id, known, timeout=300)
    if run_id:
        result = task_result(api, dag_id, run_id, "apply_rollout") or {}
        reasons = "; ".join(result.get("reasons") or [])
        announce(f"  {dag_id} ran on the challenger Asset: {result.get('action', 'no result')}: {reasons}")


def replay_months(use_case: UseCase, span: tuple[str, str], url: str, rows_per_request: int = 24) -> None:
    from mlops.platform import replay

    start, end = (date.fromisoformat(d) for d in span)
    announce(f"replaying {start:%Y-%m} to {end:%Y-%m} (exclusive) through {url}, labels a day later ...")
    result = replay.replay(
        use_case, start, end, speed=60.0, label_delay=1.0, via="http", url=url, rows_per_request=rows_per_request,
        deliver_remaining_labels=True, progress=lambda m: None,
    )  # fmt: skip
    answered = ", ".join(f"v{v}: {n}" for v, n in sorted(result.model_versions.items()))
    announce(f"  {result.rows} rows sent, {result.failed_rows} failed; answered by {answered}; "
             f"{result.labels_delivered} labels delivered")  # fmt: skip
    wait_for_service(url, log_flushed, "its prediction log flushed")


def stopped_early(settings: Settings, why: str) -> int:
    """Say why the demo stops here and how to stop its stack, which is left running to look into."""
    announce(f"stopping the demo: {why} (see the Airflow UI); the stack keeps running: "
             f"`MLOPS_HOME={settings.home} ./run down` stops it")  # fmt: skip
    return 1


def run(keep_running: bool = True) -> int:
    settings = demo_settings()
    start_fresh(settings)
    use_case = write_configs(settings, SHADOW_DEPLOYMENT)
    announce(f"starting a stack of its own under {settings.home} (configs: {settings.configs_dir}) ...")
    urls = stack.up(settings)
    announce(f"Airflow UI:  {urls['airflow']}   login {urls['login']}")
    announce(f"MLflow UI:   {urls['mlflow']}")
    service = urls["prediction_service"].removesuffix("/docs")
    api = stack.airflow_api(settings)
    train_id, rollout_id = training_dag_id(use_case.name), rollout_dag_id(use_case.name)
    for dag_id in (train_id, rollout_id):
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)

    announce(f"training on {use_case.training.window.days} days before {INITIAL_AS_OF} (winter 2011) ...")
    first = train(api, use_case, INITIAL_AS_OF, "initial training on early 2011")
    if first is None or first["action"] != "promoted":
        return stopped_early(settings, "the first training did not promote a champion")

    announce(f"shadow rollout: retraining on the {use_case.training.window.days} days before {SHADOW_AS_OF} ...")
    known = {r["dag_run_id"] for r in api.dag_runs(rollout_id)}
    shadow = train(api, use_case, SHADOW_AS_OF, "shadow rollout: retrained on March-April 2011")
    if shadow is None or shadow["action"] != "shadow":
        return stopped_early(settings, "the retraining did not become @shadow")
    wait_for_asset_run(api, rollout_id, known)
    version = str(shadow["version"])
    wait_for_service(service, lambda h: rollout_version(h, "shadows") == version, f"@shadow v{version}")
    replay_months(use_case, SHADOW_TRAFFIC, service)
    shadow_result = judge(api, use_case, SHADOW_TRAFFIC[0])

    announce(f"canary rollout: deployment.strategy canary, steps {CANARY_DEPLOYMENT['canary_steps']}; restarting the "
             "prediction service, which reads the configs at start ...")  # fmt: skip
    use_case = write_configs(settings, CANARY_DEPLOYMENT)
    stack.restart(SERVICE, settings)
    wait_for_service(service, lambda h: USE_CASE in (h.get("canaries") or {}), "the canary strategy")
    announce(
        f"training a deliberately worse model: the stale winter window again ({INITIAL_AS_OF}), for summer traffic"
    )
    known = {r["dag_run_id"] for r in api.dag_runs(rollout_id)}
    canary = train(
        api, use_case, INITIAL_AS_OF,
        "deliberately worse for the canary demo: retrained on the stale winter window (Jan-Feb 2011)",
    )  # fmt: skip
    if canary is None or canary["action"] != "canary":
        return stopped_early(settings, "the stale retraining did not become @canary")
    wait_for_asset_run(api, rollout_id, known)
    version = str(canary["version"])
    wait_for_service(service, lambda h: rollout_version(h, "canaries") == version, f"@canary v{version}")
    replay_months(use_case, CANARY_TRAFFIC, service, rows_per_request=CANARY_ROWS_PER_REQUEST)
    canary_result = judge(api, use_case, CANARY_TRAFFIC[0])

    print_timeline(use_case, settings)
    outcomes = (shadow_result.get("action"), canary_result.get("action"))
    if outcomes != ("promoted", "rejected"):
        announce(f"expected the shadow promoted and the canary rolled back; got {outcomes} (see the Airflow UI)")
    announce(f"open {urls['airflow']} (login {urls['login']}) and {urls['mlflow']} to explore the runs")
    if keep_running:
        announce(f"the stack keeps running; stop it with `MLOPS_HOME={settings.home} ./run down`")
    else:
        stack.down(settings)
    return 0 if outcomes == ("promoted", "rejected") else 1
