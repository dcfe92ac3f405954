"""Checks that the platform's own plumbing works; used by the `platform_self_check` DAG."""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from mlops.config import load_all
from mlops.settings import get_settings


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_configs() -> CheckResult:
    """Every use-case file parses, and every candidate's grid names parameters its estimator accepts.

    The parse already refused a broken file; the grid check needs scikit-learn, which the
    parse must not import, so a misspelt hyperparameter is caught here (daily, by
    `platform_self_check`) rather than only when that candidate is fitted.
    """
    from mlops.config import check_hyperparameters

    use_cases = load_all()
    names = [use_case.name for use_case in use_cases]
    problems = [f"{uc.name}: {line}" for uc in use_cases for line in check_hyperparameters(uc)]
    if problems:
        # A failure, not a report: the task fails and the failure alert names the keys.
        raise ValueError(
            "use-case configs name hyperparameters their estimators do not accept: "
            + "; ".join(problems)
            + ". Fix the keys in configs/ (`mlops config check` lists them)."
        )
    return CheckResult("configs", bool(names), f"use cases: {', '.join(names) or 'none found'}")


def check_mlflow(timeout: float = 10.0) -> CheckResult:
    """The tracking server answers and lists experiments."""
    uri = get_settings().mlflow_tracking_uri.rstrip("/")
    headers = {"Content-Type": "application/json"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        # MLflow's basic-auth app (MLOPS_MLFLOW_AUTH): the credentials its own clients send.
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/experiments/search", data=json.dumps({"max_results": 1}).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            json.loads(response.read())
    except OSError as exc:
        raise RuntimeError(
            f"MLflow at {uri} is not reachable ({exc}). Start the stack with `mlops stack up` "
            "or set MLFLOW_TRACKING_URI."
        ) from exc
    return CheckResult("mlflow", True, f"tracking server {uri} answers")


def check_state_dir() -> CheckResult:
    """The state folder is writable: snapshots, reports and the prediction log live there."""
    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    probe = home / ".write-probe"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RuntimeError(
            f"state folder {home} is not writable ({exc}); fix its permissions or set MLOPS_HOME"
        ) from exc
    return CheckResult("state_dir", True, f"{home} is writable")


def check_feature_store(repo: Any = None) -> CheckResult:
    """The feature repository's definitions match its registry, and every store-backed config its definitions.

    A registry that differs from `features/` (a view edited, added or removed without
    `feast apply`) fails the check, naming each view and what to run: training would refuse
    the snapshot and serving would read views the definitions no longer describe. A
    registry never written (a fresh stack before its first `materialize_features` run) is
    reported, not failed.
    """
    from mlops.config import ConfigError
    from mlops.features import store
    from mlops.features.check import check_use_case

    backed = [uc for uc in load_all() if uc.feature_store is not None]
    if not backed:
        return CheckResult("feature_store", True, "no use case reads the feature store")
    repo = repo or store.FeatureRepo.default()
    names = ", ".join(uc.name for uc in backed)
    where = repo.registry_location
    if not store.registry_written(repo):
        return CheckResult(
            "feature_store", False, f"{names} read the store, whose registry {where} is not written yet: "
            "trigger the materialize_features DAG (or run `mlops features apply`)",
        )  # fmt: skip
    problems = store.stale_definitions(repo)
    for use_case in backed:
        try:
            check_use_case(use_case, repo)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("the feature store does not match features/ or the configs: " + "; ".join(problems))
    return CheckResult("feature_store", True, f"features/ matches the registry {where}; used by {names}")


def check_warm_start() -> CheckResult:
    """Whether this task process started with the task libraries already imported.

    Informational, never a failure: task processes start warm only under a LocalExecutor
    scheduler that preloads (mlops.orchestration.preload); Celery workers and `dag.test()`
    start cold, which costs seconds per task, not correctness.
    """
    import sys

    wanted = get_settings().scheduler_preload
    missing = [name for name in wanted if name not in sys.modules]
    if not wanted:
        return CheckResult("warm_start", False, "preloading is off (MLOPS_SCHEDULER_PRELOAD is empty)")
    if missing:
        return CheckResult("warm_start", False, f"{len(missing)}/{len(wanted)} not preloaded: {', '.join(missing)}")
    return CheckResult("warm_start", True, f"all {len(wanted)} task libraries were preloaded by the scheduler")
