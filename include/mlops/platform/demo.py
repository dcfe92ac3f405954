"""The end-to-end demo: the whole loop on the bundled bike data, with no manual step.

The use case is `bike_sharing_store`: the bike data with its weather from the feature store
(docs/features.md), so the demo shows the store too, at the cost of one materialization.

1. start the local stack (Airflow, MLflow, prediction service);
2. load the feature store (`materialize_features`: the hourly weather into the offline and online stores);
3. train on early 2011 through the real scheduler, the weather joined point-in-time from the store;
4. replay the later months as production traffic through the prediction service: the clients
   send the hour and the calendar, the service reads the weather from the online store;
5. after each month, run the monitoring DAG: drift is found as the seasons change, and the
   training/serving skew check compares every served weather value with the offline store's;
6. monitoring triggers retraining by itself; the new model is promoted or rejected;
7. print a timeline of which versions became champion, when and why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from mlops.config import UseCase, find_use_case
from mlops.mlflow.client import client as mlflow_client
from mlops.naming import (
    MATERIALIZE_FEATURES_DAG_ID,
    ROLLOUT_ALIASES,
    TAG_CANARY_AT,
    TAG_GATE_CHAMPION_VERSION,
    TAG_GATE_PASSED,
    TAG_GATE_REASONS,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_REJECTED_AT,
    TAG_REJECTED_BY,
    TAG_REJECTION_REASON,
    TAG_ROLLOUT_CANDIDATE_METRIC,
    TAG_ROLLOUT_CHAMPION_METRIC,
    TAG_ROLLOUT_CHAMPION_VERSION,
    TAG_ROLLOUT_DECIDED_AT,
    TAG_ROLLOUT_DECIDED_BY,
    TAG_ROLLOUT_DECISION,
    TAG_ROLLOUT_EVIDENCE,
    TAG_ROLLOUT_INTERVAL,
    TAG_ROLLOUT_METRIC,
    TAG_ROLLOUT_PROGRESS,
    TAG_ROLLOUT_REASONS,
    TAG_ROLLOUT_ROWS,
    TAG_SHADOW_AT,
    card_dag_id,
)
from mlops.platform import stack
from mlops.platform.airflow_api import AirflowAPI
from mlops.settings import Settings, get_settings

# bike_sharing with its weather from the feature store: the demo's clients send the hour and the calendar only.
USE_CASE = "bike_sharing_store"
INITIAL_AS_OF = "2011-03-01"
# Month ends at which monitoring looks back; spring and summer bring the drift.
FULL_MONTHS = ["2011-04-01", "2011-05-01", "2011-06-01", "2011-07-01", "2011-08-01"]
FAST_MONTHS = ["2011-04-01", "2011-06-01"]


def announce(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def task_result(api: AirflowAPI, dag_id: str, run_id: str, task_id: str) -> Any:
    try:
        entry = api.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
    except RuntimeError:
        return None
    return entry.get("value") if entry else None


def run_dag(api: AirflowAPI, dag_id: str, conf: dict[str, Any], timeout: float = 1200) -> tuple[str, str]:
    run_id = api.trigger(dag_id, conf=conf)
    state = api.wait_for_run(dag_id, run_id, timeout=timeout)
    if state != "success":
        failed = [t["task_id"] for t in api.task_instances(dag_id, run_id) if t["state"] == "failed"]
        announce(f"  {dag_id} ended {state}; failed tasks: {failed} (see the Airflow UI)")
    return run_id, state


def wait_for_new_run(api: AirflowAPI, dag_id: str, known: set[str], timeout: float = 1200) -> str | None:
    """Wait for a run of `dag_id` that another DAG or an Asset started (one not in `known`) to finish."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fresh = [r for r in api.dag_runs(dag_id) if r["dag_run_id"] not in known]
        if fresh:
            run = fresh[0]
            api.wait_for_run(dag_id, run["dag_run_id"], timeout=timeout)
            return str(run["dag_run_id"])
        time.sleep(2)
    return None


def report_training(api: AirflowAPI, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """Say what the training run's promote step did; returns its result (None when it did not get there)."""
    promotion: dict[str, Any] | None = task_result(api, dag_id, run_id, "promote_candidate")
    evaluation = task_result(api, dag_id, run_id, "evaluate_candidate") or {}
    metrics = (evaluation.get("candidate") or {}).get("metrics", {})
    if not promotion:
        announce("  training did not reach promotion (see the Airflow UI for the failed gate)")
        return None
    headline = ", ".join(f"{k} {v:.3g}" for k, v in sorted(metrics.items()) if k in ("rmse", "r2", "mae"))
    if promotion["action"] == "promoted":
        announce(f"  v{promotion['version']} promoted to @champion ({headline})")
    elif promotion["action"] in ROLLOUT_ALIASES:
        announce(f"  v{promotion['version']} passed the gate ({headline}) and is @{promotion['action']}")
    else:
        reasons = "; ".join(promotion.get("reasons") or [])
        announce(f"  v{promotion['version']} {promotion['action']}: {reasons}")
    return promotion


def load_feature_store(api: AirflowAPI) -> bool:
    """One `materialize_features` run, waited for; True when it succeeded.

    Once unpaused, the scheduler starts the latest hourly run at once (no catch-up) and keeps the
    online store loaded every hour after: on a fresh stack that run is the one waited for (triggering
    one besides would load the store twice, the second time beside the first training). A DAG already
    unpaused (a second demo on the same MLOPS_HOME) gets a triggered run.
    """
    dag_id = MATERIALIZE_FEATURES_DAG_ID
    api.wait_for_dag(dag_id)
    known = {r["dag_run_id"] for r in api.dag_runs(dag_id)}
    run_id = None
    if api.request("GET", f"/dags/{dag_id}").get("is_paused", True):
        api.unpause(dag_id)
        run_id = wait_for_new_run(api, dag_id, known)
    if run_id is None:
        run_id, state = run_dag(api, dag_id, {})
    else:
        state = str(api.dag_run(dag_id, run_id)["state"])
        if state != "success":
            announce(f"  {dag_id} ended {state} (see the Airflow UI)")
    if state != "success":
        return False
    report_materialization(api, run_id)
    return True


def report_materialization(api: AirflowAPI, run_id: str) -> None:
    """Say what `materialize_features` loaded: the offline rows per view and how far the online store reaches."""
    loaded = task_result(api, MATERIALIZE_FEATURES_DAG_ID, run_id, "materialize_online") or {}
    rows = ", ".join(f"{view} {n} rows" for view, n in sorted((loaded.get("offline_rows") or {}).items()))
    announce(f"  offline store: {rows or '?'}; online store loaded up to {str(loaded.get('end', '?'))[:19]}")


def report_skew(assessment: dict[str, Any]) -> None:
    """The monitoring run's training/serving skew check, in the words the MLOps page uses (from its summary.json)."""
    from pathlib import Path

    from mlops.ui.files import skew_line

    directory = assessment.get("report_dir")
    try:
        summary = json.loads((Path(directory) / "summary.json").read_text()) if directory else None
    except (OSError, ValueError):
        summary = None
    line = skew_line(summary)
    if line is not None:
        announce(f"  {line[0]}")


def print_timeline(use_case: UseCase, settings: Settings, say: Callable[[str], None] = announce) -> None:
    """Which versions became champion, when, and why, with each rollout's evidence (read back from the registry)."""
    from mlops.mlflow import browse, registry

    versions = browse.all_versions(mlflow_client(settings.mlflow_tracking_uri), use_case.model_name)
    say(f"timeline of {use_case.model_name}:")
    for version in versions:
        info = registry.version_info(use_case.model_name, version.version)
        outcome = _outcome(info.tags)
        aliases = " ".join(f"@{a}" for a in info.aliases)
        metric = use_case.gate.primary_metric
        score = f"{metric} {info.metrics[metric]:.3g}" if metric in info.metrics else ""
        # The first reason is the one that fired (drift before decay); the rest are on the run.
        reason = info.lineage.get("reason", "?").split("; ")[0]
        when = _decided_at(info.tags, version.created)
        say(f"  v{info.version:<3} {when} {outcome:<9} {score:<12} {aliases:<22} trained because: {reason}")
        rollout = rollout_lines(info.tags)
        for line in rollout:
            say(f"       {line}")
        if outcome == "rejected" and not rollout:
            why = info.tags.get(TAG_REJECTION_REASON) or info.tags.get(TAG_GATE_REASONS, "")
            say(f"       rejected because: {why[:160]}")


def rollout_lines(tags: dict[str, str]) -> list[str]:
    """A version's shadow or canary rollout and its live evidence, from its `mlops.rollout.*` tags.

    Empty for a version that was never rolled out. A decided rollout shows its decision, the
    labelled requests compared, both sides' metric, the interval of the gain and the reasons;
    one in progress shows its last run's decision (`mlops.rollout.progress`).
    """
    if TAG_SHADOW_AT in tags:
        strategy, began = "shadow", tags[TAG_SHADOW_AT]
    elif TAG_CANARY_AT in tags:
        strategy, began = "canary", tags[TAG_CANARY_AT]
    else:
        return []
    champion = tags.get(TAG_ROLLOUT_CHAMPION_VERSION) or tags.get(TAG_GATE_CHAMPION_VERSION, "?")
    decision = tags.get(TAG_ROLLOUT_DECISION)
    if decision is None:
        progress = _json(tags.get(TAG_ROLLOUT_PROGRESS))
        head = f"{strategy} rollout beside v{champion} since {_clock(began)}: in progress"
        if not progress:
            return [f"{head}, not judged yet"]
        return [f"{head}, last run: {progress.get('action')}", *(f"  {r}" for r in progress.get("reasons") or [])]
    evidence = _json(_json(tags.get(TAG_ROLLOUT_EVIDENCE)).get("evidence"))
    if evidence.get("paired", strategy == "shadow"):
        compared = f"{tags.get(TAG_ROLLOUT_ROWS, '?')} labelled requests scored by both"
    else:
        compared = (
            f"{evidence.get('candidate_labelled', '?')} canary and {evidence.get('champion_rows', '?')} champion "
            "labelled requests (unpaired)"
        )
    metric = tags.get(TAG_ROLLOUT_METRIC, "?")
    scores = (
        f"{metric} {strategy} {_number(tags.get(TAG_ROLLOUT_CANDIDATE_METRIC))} vs champion v{champion} "
        f"{_number(tags.get(TAG_ROLLOUT_CHAMPION_METRIC))}"
    )
    decided = _clock(tags.get(TAG_ROLLOUT_DECIDED_AT))
    by = tags.get(TAG_ROLLOUT_DECIDED_BY, "?").split("/")[0]
    return [
        f"{strategy} rollout from {_clock(began)}, decided {decided} by {by}: {decision.upper()}",
        f"  evidence: {compared}; {scores}; relative gain {tags.get(TAG_ROLLOUT_INTERVAL, 'none')}",
        f"  because: {tags.get(TAG_ROLLOUT_REASONS, '')}",
    ]


def _json(raw: Any) -> dict[str, Any]:
    """A JSON object from a tag (or an already decoded one); {} when absent or unreadable."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _number(raw: str | None) -> str:
    try:
        return f"{float(raw):.4g}" if raw not in (None, "none") else "none"
    except (TypeError, ValueError):
        return str(raw)


def _clock(iso: str | None) -> str:
    """An ISO time from a tag as local HH:MM:SS, as the timeline's other times; `?` when absent."""
    return time.strftime("%H:%M:%S", time.localtime(datetime.fromisoformat(iso).timestamp())) if iso else "?"


def _decided_at(tags: dict[str, str], registered: datetime | None) -> str:
    """When the registry applied the version's decision (the alias moved), else when it was registered; local time."""
    decided_at = tags.get(TAG_PROMOTED_AT) or tags.get(TAG_REJECTED_AT)
    moment = datetime.fromisoformat(decided_at) if decided_at else registered
    return time.strftime("%H:%M:%S", time.localtime(moment.timestamp())) if moment else "?"


def _outcome(tags: dict[str, str]) -> str:
    """`promoted`, `rejected`, or `passed` (the gate passed and no decision is applied yet)."""
    if tags.get(TAG_PROMOTED_BY):
        return "promoted"
    if tags.get(TAG_REJECTED_BY) or tags.get(TAG_GATE_PASSED) != "true":
        return "rejected"
    return "passed"


def run(keep_running: bool = True, fast: bool = False) -> int:
    from mlops.platform import replay

    settings = get_settings()
    use_case = find_use_case(USE_CASE)
    announce("starting the local stack (Airflow, MLflow, prediction service) ...")
    urls = stack.up()
    announce(f"Airflow UI:  {urls['airflow']}   login {urls['login']}")
    announce(f"MLflow UI:   {urls['mlflow']}")
    announce(f"Predictions: {urls['prediction_service']}")
    api = AirflowAPI(urls["airflow"], stack.AIRFLOW_USER, stack.airflow_password(settings))
    train_id, monitor_id = f"train_{use_case.name}", f"monitor_{use_case.name}"
    # The model-card DAG runs on its own after each promotion (scheduled on the champion Asset).
    for dag_id in (train_id, monitor_id, card_dag_id(use_case.name)):
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)

    if use_case.feature_store is not None:
        announce("loading the feature store (materialize_features: the hourly weather, offline and online) ...")
        if not load_feature_store(api):
            return 1

    announce(f"training on {use_case.training.window.days} days before {INITIAL_AS_OF} (early 2011) ...")
    run_id, state = run_dag(api, train_id, {"as_of": INITIAL_AS_OF, "reason": "initial training on early 2011"})
    if state != "success":
        return 1
    report_training(api, train_id, run_id)

    previous_end = date.fromisoformat(INITIAL_AS_OF)
    for month_end in FAST_MONTHS if fast else FULL_MONTHS:
        end = date.fromisoformat(month_end)
        label = previous_end.strftime("%Y-%m")
        target = urls["prediction_service"].removesuffix("/docs")
        sent = ", ".join(use_case.client_fields)
        announce(f"replaying {label} … through {target} (each record: {sent})")
        replayed = replay.replay(
            use_case, previous_end, end, speed=60.0, label_delay=1.0, via="http",
            deliver_remaining_labels=True, progress=lambda m: None,
        )  # fmt: skip
        if replayed.failed_rows:
            refused = ", ".join(f"{reason}: {n}" for reason, n in sorted(replayed.failures.items()))
            announce(f"  {replayed.failed_rows} of {replayed.rows} rows got no prediction ({refused})")
        known = {r["dag_run_id"] for r in api.dag_runs(train_id)}
        monitor_run, _ = run_dag(api, monitor_id, {"as_of": month_end})
        assessment = task_result(api, monitor_id, monitor_run, "assess_window") or {}
        decision = assessment.get("decision") or {}
        share = decision.get("drift_share")
        action = decision.get("action", "unknown")
        share_text = f"drift share {share:.2f}" if isinstance(share, int | float) else "no drift figure"
        arrow = "retraining" if action == "retrain" else action
        announce(f"replaying {label} … {share_text} → {arrow}")
        for reason in decision.get("reasons", [])[:3]:
            announce(f"  {reason}")
        report_skew(assessment)
        if action == "retrain":
            training_run = wait_for_new_run(api, train_id, known)
            if training_run:
                report_training(api, train_id, training_run)
        previous_end = end

    print_timeline(use_case, settings)
    announce(f"open {urls['airflow']} (login {urls['login']}) and {urls['mlflow']} to explore the runs")
    if keep_running:
        announce("the stack keeps running; stop it with `./run down`")
    else:
        stack.down()
    return 0
