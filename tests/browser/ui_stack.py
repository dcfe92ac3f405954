"""A local stack with the MLOps plugin, for UI tests; real pipeline runs or seeded state.

Shared by tests/integration/test_ui_plugin.py and tests/browser/test_mlops_page.py
(each starts ONE stack for its module: starting one costs minutes on a busy machine).

The browser test walks state the platform produces itself (`run_the_loop`): the stack's
scheduler trains a use case, replayed traffic fills the prediction log, monitoring runs
write real Evidently reports, and the drift they find triggers a real retraining.

The plugin test needs fixed facts in seconds (`seed_stores`, `create_task_results`): it
writes them into the same stores the pipeline writes (the stack's MLflow server, with
the tags `mlops.registry` writes; the reports and Data Docs folders; XCom through
Airflow's REST API), so no part of the plugin is stubbed.

The stack reads copies of configs/ and great_expectations/ from its temporary folder,
so a test can change a use case (LOOP_CONFIG trims training, APPROVAL_CONFIG turns on
human approval) and a real run validates against the committed suites without writing
into the repo.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlops.config import UseCase, find_use_case
from mlops.monitoring.reports import report_dir
from mlops.platform import stack
from mlops.platform.airflow_api import AirflowAPI
from mlops.processes import free_port
from mlops.settings import Settings, get_settings

USE_CASE = "bike_sharing"
TRAIN_DAG = f"train_{USE_CASE}"
MONITOR_DAG = f"monitor_{USE_CASE}"
SECRET = "TOP-SECRET-OUTSIDE-THE-SERVED-FOLDERS"
STACK_TIMEOUT = 900.0
RUN_TIMEOUT = 900.0  # an upper bound for a loaded machine; a run takes about 30 s on an idle one
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The use case whose loop the browser test walks, trimmed to run in about 30 s per DAG
# run on two cores: 30 days of training data, two quick candidates, and no schedules,
# so that only the test starts runs (monitoring's own trigger aside).
LOOP_CONFIG: dict[str, Any] = {
    "training": {"window": {"end": "2011-03-01", "days": 30}},
    "candidates": [
        {"name": "ridge", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": [1.0]}},
        {"name": "gradient_boosting", "estimator": "sklearn.ensemble.HistGradientBoostingRegressor",
         "params": {"max_iter": [100], "learning_rate": [0.1]}},
    ],
    "schedule": {"training": None, "scoring": None, "monitoring": None},
}  # fmt: skip
FIRST_TRAINING_AS_OF = "2011-03-01"
# Replayed traffic, one monitoring window (config: 14 days) each. Early March looks like
# the winter the model learned; by late March spring has moved temperature and season,
# and monitoring triggers the retraining itself.
TRAFFIC_WINDOWS = (("2011-03-01", "2011-03-15"), ("2011-03-15", "2011-03-29"))

# The use case whose promotions wait for a person. Breast cancer (569 rows, no time
# window) trains in seconds, so a real run reaches the approval within minutes on two
# cores: one candidate, and no schedule so that unpausing the DAG starts no second run.
APPROVAL_USE_CASE = "breast_cancer"
APPROVAL_DAG = f"train_{APPROVAL_USE_CASE}"
APPROVAL_CONFIG: dict[str, Any] = {
    "approval": {"required": True, "timeout_hours": 24},
    "schedule": {"training": None},
    "candidates": [
        {"name": "logistic_regression", "estimator": "sklearn.linear_model.LogisticRegression",
         "params": {"C": [1.0], "max_iter": [1000]}},
    ],
}  # fmt: skip
# The champion the approval run has to beat: a majority-class baseline, clearly worse.
BASELINE = {"name": "majority_baseline", "estimator": "sklearn.dummy.DummyClassifier",
            "params": {"strategy": "prior"}}  # fmt: skip

# SimpleAuthManager's roles all read every DAG (viewer and up); the one thing that narrows
# DAG access below a role is multi-team mode: a DAG bundle belongs to a team, and a
# non-admin user reads only the DAGs of their own teams. With `teams=True` the stack puts
# every DAG of the project in TEAM's bundle and adds two viewers, one in each team.
TEAM, OTHER_TEAM = "mlops", "analytics"
TEAM_USERS = {"bo": TEAM, "ana": OTHER_TEAM}


@dataclass
class UIStack:
    settings: Settings
    base: str
    api: AirflowAPI
    token: str
    secret_file: Path
    seeded: dict[str, Any]
    passwords: dict[str, str] = field(default_factory=dict)
    """Passwords of the team users (`teams=True`), by user name."""

    def get(self, path: str, token: str | None = None, cookie: bool = False, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        cookies = {}
        if token and cookie:
            cookies["_token"] = token
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.get(f"{self.base}{path}", headers=headers, cookies=cookies, timeout=60, **kwargs)


def start_ui_stack(
    tmp: Path,
    config_changes: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    seed: bool = True,
    teams: bool = False,
) -> Iterator[UIStack]:
    """Start the stack on free ports with MLOPS_HOME, configs and MLOPS_GE_DIR under `tmp`; stop it afterwards.

    `config_changes` maps a use case to the top-level keys its copied config gets instead.
    `seed` writes `seed_stores`' fixed history; without it the stores start empty.
    `teams` runs Airflow in multi-team mode with the users of TEAM_USERS (see there).
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(tmp / "home"))
        mp.setenv("MLOPS_CONFIGS_DIR", str(copy_configs(tmp / "configs", config_changes or {})))
        shutil.copytree(
            PROJECT_ROOT / "great_expectations",
            tmp / "great_expectations",
            ignore=shutil.ignore_patterns("uncommitted"),
        )
        mp.setenv("MLOPS_GE_DIR", str(tmp / "great_expectations"))
        for var in ("MLOPS_AIRFLOW_PORT", "MLOPS_MLFLOW_PORT", "MLOPS_SERVING_PORT"):
            mp.setenv(var, str(free_port()))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLOPS_MLFLOW_UI_URL", raising=False)
        settings = get_settings()
        # Something worth stealing next to the served folders: traversal must never reach it.
        secret = tmp / "secret.txt"
        secret.write_text(SECRET)
        passwords = {user: secrets.token_urlsafe(12) for user in TEAM_USERS} if teams else {}
        try:
            if teams:
                mp.setattr(stack, "airflow_env", with_team_users(stack.airflow_env, passwords))
                create_teams(settings)
            urls = stack.up(timeout=STACK_TIMEOUT)
            mp.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
            api = AirflowAPI(urls["airflow"], stack.AIRFLOW_USER, stack.airflow_password(settings))
            token = login(urls["airflow"], stack.AIRFLOW_USER, stack.airflow_password(settings))
            seeded = seed_stores(settings, secret) if seed else {}
            yield UIStack(settings, urls["airflow"], api, token, secret, seeded, passwords)
        finally:
            stack.down()


def with_team_users(
    airflow_env: Callable[[Settings], dict[str, str]], passwords: Mapping[str, str]
) -> Callable[[Settings], dict[str, str]]:
    """`stack.airflow_env` plus multi-team mode, the project's DAGs in TEAM's bundle, and TEAM_USERS."""

    def env(settings: Settings) -> dict[str, str]:
        result = airflow_env(settings)
        users = ",".join(f"{user}:viewer:{team}" for user, team in TEAM_USERS.items())
        result["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] += f",{users}"
        password_file = Path(result["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        password_file.write_text(json.dumps({**json.loads(password_file.read_text()), **passwords}))
        result["AIRFLOW__CORE__MULTI_TEAM"] = "True"
        # Airflow's default bundle (the DAGs folder), owned by TEAM.
        bundle = {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                  "kwargs": {}, "team_name": TEAM}  # fmt: skip
        result["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps([bundle])
        return result

    return env


def create_teams(settings: Settings) -> None:
    """Both teams in the metadata DB before Airflow starts: its API server refuses users of unknown teams."""
    env = stack.airflow_env(settings)
    log = settings.run_dir / "logs" / "airflow-teams.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    stack.migrate_airflow(env, log)
    for team in (TEAM, OTHER_TEAM):
        done = subprocess.run(
            [str(stack.VENV_BIN / "airflow"), "teams", "create", team], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"`airflow teams create {team}` failed: {done.stdout}{done.stderr}"


def copy_configs(target: Path, changes: Mapping[str, Mapping[str, Any]]) -> Path:
    target.mkdir(parents=True)
    for path in sorted((PROJECT_ROOT / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        for key, value in changes.get(path.stem, {}).items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
        (target / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    unknown = set(changes) - {p.stem for p in target.glob("*.yaml")}
    assert not unknown, f"config_changes name use cases that do not exist: {sorted(unknown)}"
    return target


def login(base: str, user: str, password: str) -> str:
    response = httpx.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=60)
    response.raise_for_status()
    return str(response.json()["access_token"])


def seed_stores(settings: Settings, secret: Path) -> dict[str, Any]:
    """A champion/previous/challenger history, monitoring runs, an Evidently report and a Data Docs page.

    For the plugin's own tests (file routes, traversal, extra links), which need fixed
    facts in seconds. The registry's own functions judge and tag the versions
    (`evaluation.check_gate`, `promotion.decisions.apply_decision`), so the page reads the tag
    names and reason texts the pipeline writes; only the models are not fitted.
    """
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from mlops.evaluation.gate import check_gate
    from mlops.mlflow import registry
    from mlops.promotion import decisions

    use_case = find_use_case(USE_CASE)
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    experiment = client.create_experiment(USE_CASE)
    client.create_registered_model(use_case.model_name)
    run_key = f"{TRAIN_DAG}/ui_test_train"
    # Candidate runs carry the DAG run as the training task tags them (mlops.tracking lineage).
    lineage = {"airflow_dag_id": TRAIN_DAG, "airflow_run_id": "ui_test_train"}
    history = {"1": {"rmse": 110.0, "r2": 0.71}, "2": {"rmse": 95.5, "r2": 0.75}, "3": {"rmse": 131.0, "r2": 0.6}}
    runs = {}
    for version, metrics in history.items():
        run = client.create_run(experiment, run_name=f"gradient_boosting-v{version}", tags=lineage)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
        client.set_terminated(run.info.run_id)
        client.create_model_version(
            use_case.model_name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            tags={registry.TAG_RUN_KEY: run_key, "mlops.run_id": run.info.run_id},
        )  # fmt: skip
        champion = registry.champion(use_case.model_name)
        decision = check_gate(
            use_case, metrics, champion.metrics if champion else None,
            champion_version=champion.version if champion else None,
        )  # fmt: skip
        decisions.apply_decision(use_case, version, decision, run_key)
        runs[version] = run.info.run_id

    monitoring = client.create_experiment(f"{USE_CASE}-monitoring")
    start = datetime(2011, 3, 1, tzinfo=UTC)
    for week, share in enumerate([0.1, 0.2, 0.3, 0.7]):
        end = start + timedelta(days=7 * week)
        run = client.create_run(monitoring, tags={"monitoring.action": "retrain" if share >= 0.5 else "none"})
        client.log_batch(run.info.run_id, metrics=[Metric("drift_share", share, int(end.timestamp() * 1000), 0)])
        client.set_terminated(run.info.run_id)

    monitor_key = f"{MONITOR_DAG}/ui_test_monitor"
    folder = report_dir(USE_CASE, monitor_key, settings.reports_dir)
    folder.mkdir(parents=True)
    (folder / "drift.html").write_text(
        "<html><body><h1 id='evidently-report'>Data Drift: 7 of 10 columns drifted</h1></body></html>"
    )
    (folder / "summary.json").write_text("{}")
    (settings.reports_dir / USE_CASE / "escape.html").symlink_to(secret)

    docs_page = settings.data_docs_dir / "validations" / USE_CASE / "ui_test_train" / "page.html"
    docs_page.parent.mkdir(parents=True)
    docs_page.write_text("<html><body><h1 id='data-docs'>Validation passed</h1></body></html>")
    # The Data Docs site's index (lists every suite) and a stylesheet (shared by all pages).
    (settings.data_docs_dir / "index.html").write_text("<html><body>bike_sharing breast_cancer</body></html>")
    (settings.data_docs_dir / "static" / "styles").mkdir(parents=True)
    (settings.data_docs_dir / "static" / "styles" / "data_docs.css").write_text("body { margin: 0 }")
    return {
        "run_ids": runs,
        "report_html": str(folder / "drift.html"),
        "data_docs_page": str(docs_page),
        "model_name": use_case.model_name,
    }


def create_task_results(ui: UIStack) -> dict[str, str]:
    """A run of each DAG (paused, so nothing executes) with task return values in XCom, as tasks would push them."""
    runs = {}
    for dag_id, run_id in ((TRAIN_DAG, "ui_test_train"), (MONITOR_DAG, "ui_test_monitor")):
        ui.api.wait_for_dag(dag_id, timeout=STACK_TIMEOUT)
        ui.api.trigger(dag_id, run_id=run_id)
        runs[dag_id] = run_id
    champion_run = ui.seeded["run_ids"]["2"]
    values = {
        (TRAIN_DAG, "train_candidate"): {"run_id": champion_run, "model_uri": f"runs:/{champion_run}/model",
                                         "key": "gradient_boosting", "metrics": {"rmse": 95.5}},
        (TRAIN_DAG, "validate_snapshot"): {"success": True, "data_docs_page": ui.seeded["data_docs_page"]},
        (TRAIN_DAG, "promote_candidate"): {"action": "promoted", "version": "2", "champion": "2",
                                           "previous": "1", "reasons": []},
        (MONITOR_DAG, "assess_window"): {"report_html": ui.seeded["report_html"], "decision": {"action": "retrain"}},
        (MONITOR_DAG, "validate_window"): {"passed": True, "details": [], "data_docs_page": "/etc/passwd"},
    }  # fmt: skip
    for (dag_id, task_id), value in values.items():
        ui.api.request(
            "POST",
            f"/dags/{dag_id}/dagRuns/{runs[dag_id]}/taskInstances/{task_id}/xcomEntries",
            json={"key": "return_value", "value": value, "map_index": -1},
        )
    return runs


def seed_baseline_champion(use_case: UseCase) -> str:
    """Train, register and promote BASELINE the way a training run does (same functions); returns its version.

    Runs in the test process against the stack's MLflow: seconds, where a second
    DAG run would cost minutes. The approval run is then judged against a champion.
    """
    from mlops.data import ingestion
    from mlops.evaluation.gate import GateDecision
    from mlops.promotion import decisions
    from mlops.training import runs as training_runs
    from mlops.training.candidates import CandidateSpec, candidate_key

    dag_id, run_id = f"train_{use_case.name}", "ui_test_baseline"
    key = f"{dag_id}/{run_id}"
    snapshot = ingestion.ingest_snapshot(use_case, run_id=run_id)
    parent = training_runs.start_parent_run(
        use_case, dag_id, run_id, {"snapshot_path": snapshot.path, "reason": "ui test: a weak champion to beat"}
    )
    spec = CandidateSpec(**BASELINE, key=candidate_key(BASELINE["name"], BASELINE["params"]))
    result = training_runs.train_and_log_candidate(
        use_case, spec.to_dict(), snapshot.path, parent, {"dag_id": dag_id, "run_id": run_id}
    )
    training_runs.end_parent_run(parent)
    version = decisions.register_candidate(use_case, result, key)
    decision = GateDecision(
        passed=True, reasons=["seeded baseline for the approval test"], candidate_metrics=result.metrics,
        champion_version=None, champion_metrics=None, primary_metric=use_case.gate.primary_metric,
    )  # fmt: skip
    promotion = decisions.apply_decision(use_case, version, decision, key)
    assert promotion.action == "promoted", promotion
    return version


def start_approval_run(ui: UIStack, run_id: str) -> str:
    """Unpause the approval use case's training DAG and trigger one run; the stack's scheduler runs it."""
    ui.api.wait_for_dag(APPROVAL_DAG, timeout=STACK_TIMEOUT)
    ui.api.unpause(APPROVAL_DAG)
    return ui.api.trigger(APPROVAL_DAG, conf={"reason": "ui test: a promotion that needs approval"}, run_id=run_id)


def extra_links(ui: UIStack, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, str | None]:
    result = ui.api.request(
        "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links", params={"map_index": map_index}
    )
    links: dict[str, str | None] = result["extra_links"]
    return links


def return_value(ui: UIStack, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """What a task returned, read back through Airflow's REST API."""
    entry = ui.api.request(
        "GET",
        f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
        params={"map_index": map_index},
    )
    return entry["value"]


def run_dag(ui: UIStack, dag_id: str, run_id: str, conf: dict[str, Any]) -> None:
    """Trigger `dag_id` (unpaused) and wait until the stack's scheduler has run it; fails unless it succeeded."""
    ui.api.wait_for_dag(dag_id, timeout=STACK_TIMEOUT)
    ui.api.unpause(dag_id)
    ui.api.trigger(dag_id, conf=conf, run_id=run_id)
    wait_for_success(ui, dag_id, run_id)


def wait_for_success(ui: UIStack, dag_id: str, run_id: str) -> None:
    state = ui.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    if state != "success":
        states = {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in ui.api.task_instances(dag_id, run_id)}
        pytest.fail(f"{dag_id}/{run_id} ended {state}: {states}; logs in {ui.settings.run_dir / 'logs'}")


@dataclass(frozen=True)
class LoopRuns:
    """The DAG runs of one walk through the loop, with what monitoring decided."""

    first_training: str
    monitoring: list[str]
    assessments: list[dict[str, Any]]
    """`assess_window`'s return value of each monitoring run: the decision, report path, window end."""
    retraining: str
    """The training run monitoring triggered."""


def run_the_loop(ui: UIStack) -> LoopRuns:
    """Train, serve replayed traffic, monitor it, and let drift retrain: all through the stack's scheduler.

    The first training run promotes a first champion. Each traffic window is scored
    by batch (`mlops.replay`, the scoring path, with labels one simulated day later)
    into the prediction log, then the monitoring DAG reads it, writes Evidently
    reports and decides. The second window drifts: monitoring triggers training, and
    the new model meets the gate against the first.
    """
    from mlops.platform import replay

    run_dag(ui, TRAIN_DAG, "ui_test_train", {"as_of": FIRST_TRAINING_AS_OF, "reason": "ui test: first champion"})
    monitoring, assessments = [], []
    for start, end in TRAFFIC_WINDOWS:
        served = replay.replay(
            USE_CASE, start, end, speed=0, via="batch", deliver_remaining_labels=True, progress=lambda _: None
        )
        assert served.rows > 0 and served.failed_rows == 0, served
        known = {r["dag_run_id"] for r in ui.api.dag_runs(TRAIN_DAG)}
        run_id = f"ui_test_monitor_{end}"
        run_dag(ui, MONITOR_DAG, run_id, {"as_of": end})
        monitoring.append(run_id)
        assessments.append(return_value(ui, MONITOR_DAG, run_id, "assess_window"))
    decisions = [a["decision"]["action"] for a in assessments]
    assert decisions == ["none", "retrain"], f"monitoring decided {decisions}: {assessments}"
    triggered = [r["dag_run_id"] for r in ui.api.dag_runs(TRAIN_DAG) if r["dag_run_id"] not in known]
    assert len(triggered) == 1, f"monitoring should have triggered one training run, found {triggered}"
    wait_for_success(ui, TRAIN_DAG, triggered[0])
    return LoopRuns("ui_test_train", monitoring, assessments, triggered[0])


def env_summary() -> str:
    return ", ".join(f"{k}={os.environ.get(k)}" for k in ("MLOPS_HOME", "MLOPS_AIRFLOW_PORT", "MLOPS_MLFLOW_PORT"))
