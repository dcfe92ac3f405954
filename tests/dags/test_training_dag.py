"""The training DAG end to end under `dag.test()`, against a real MLflow server.

Covers promotion of the first model, lineage, the refusal of a worse model, the
rollback DAG (to a given version and back to @previous) and the two classification use
cases (config only, no new Python). Bad source data: test_bad_source_data.py.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from airflow_xcom import task_xcom

from mlops.config import UseCase, find_use_case

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RAW = PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv"
AS_OF = "2011-03-01"


def _run(use_case: UseCase, conf: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
    """Run the training DAG once; returns the run state and each task's state."""
    from mlops.orchestration.training import build_training_dag

    dag = build_training_dag(use_case)
    dag_run = dag.test(run_conf=conf or {"as_of": AS_OF, "reason": "test"})
    states = {}
    for ti in dag_run.get_task_instances():
        states[ti.task_id] = str(ti.state)
    return str(dag_run.state), states


def _versions(model_name: str) -> list[Any]:
    from mlflow import MlflowClient

    return list(MlflowClient().search_model_versions(f"name='{model_name}'"))


def _champion_events(use_case: UseCase) -> list[dict[str, Any]]:
    """The extras of every event of the use case's champion Asset, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from mlops.orchestration.assets import champion_asset

    with create_session() as session:
        rows = (
            session.query(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetModel.uri == champion_asset(use_case).uri)
            .order_by(AssetEvent.id)
        )
        return [dict(extra or {}) for (extra,) in rows]


def _requested_by(use_case: UseCase, version: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version(use_case.model_name, version).tags["mlops.rollback.requested_by"])


def _alias(model_name: str, alias: str) -> str | None:
    from mlops.mlflow import registry

    return registry.alias_version(model_name, alias)


@pytest.fixture(scope="module")
def bike(mlflow_server: str, airflow_home: Path) -> UseCase:
    use_case = find_use_case("bike_sharing")
    # A small, quick slice of the real config: same data and features, lighter candidates.
    light = [c.model_copy(update={"params": {k: v[:1] for k, v in c.params.items()}}) for c in use_case.candidates]
    training = use_case.training.model_copy(update={"window": use_case.training.window.model_copy(update={"days": 45})})
    return use_case.model_copy(update={"candidates": light[:2], "training": training})


@pytest.fixture(scope="module")
def first_champion(bike: UseCase) -> str:
    state, tasks = _run(bike)
    assert state == "success", tasks
    version = _alias(bike.model_name, "champion")
    assert version is not None
    return version


def _last_run_id(dag_id: str) -> str:
    """The run id of the DAG run created last."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        (run_id,) = session.query(DagRun.run_id).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        return str(run_id)


def _git_head() -> str:
    """What the lineage should record as the code version: `git rev-parse HEAD`, or "unknown" outside git."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def _git_dirty() -> str:
    """What the lineage should record as the tree's state: uncommitted changes or not ("unknown" outside git)."""
    if _git_head() == "unknown":
        return "unknown"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    return "true" if status.stdout.strip() else "false"


def _champion_run_tags(use_case: UseCase) -> dict[str, str]:
    """The tags of the MLflow run behind the use case's @champion version."""
    from mlflow import MlflowClient

    from mlops.mlflow import registry

    info = registry.champion(use_case.model_name)
    assert info is not None
    return dict(MlflowClient().get_run(info.run_id).data.tags)


def test_first_model_is_promoted_with_lineage(bike: UseCase, first_champion: str) -> None:
    from mlflow import MlflowClient

    from mlops.mlflow import registry

    info = registry.champion(bike.model_name)
    assert info is not None and info.version == first_champion
    run = MlflowClient().get_run(info.run_id)
    tags = run.data.tags
    # The values, each checked against its source: the snapshot file, git, uv.lock and the DAG run.
    run_id = _last_run_id("train_bike_sharing")  # the fixture's run: nothing in this module ran since
    snapshot = task_xcom("train_bike_sharing", "ingest_snapshot", run_id)
    assert tags["snapshot_path"] == snapshot["path"] and Path(snapshot["path"]).is_file()
    assert tags["dvc_md5"] == snapshot["md5"] == hashlib.md5(Path(snapshot["path"]).read_bytes()).hexdigest()
    assert tags["git_commit"] == _git_head()
    assert tags["git_dirty"] == _git_dirty()  # no file of the checkout changes while the suite runs
    assert tags["uv_lock_sha256"] == hashlib.sha256((PROJECT_ROOT / "uv.lock").read_bytes()).hexdigest()
    assert tags["snapshot_rows"] == str(snapshot["rows"])
    validation = task_xcom("train_bike_sharing", "validate_snapshot", run_id)
    assert tags["validation_success"] == "true" and tags["data_docs_page"] == validation["data_docs_page"]
    evaluated = validation["statistics"]["evaluated_expectations"]
    assert tags["validation_statistics"] == f"{evaluated:g} of {evaluated:g} expectations met"
    assert tags["airflow_dag_id"] == "train_bike_sharing"
    assert tags["airflow_run_id"] == run_id
    version_tags = MlflowClient().get_model_version(bike.model_name, first_champion).tags
    assert version_tags["mlops.run_key"] == f"train_bike_sharing/{run_id}"
    assert version_tags["mlops.model_card"] == f"model_card/v{first_champion}.md"
    assert run.inputs.dataset_inputs, "the training dataset is logged with mlflow.log_input"
    promotion = task_xcom("train_bike_sharing", "publish_champion", run_id)
    assert promotion["action"] == "promoted" and promotion["version"] == first_champion


def test_the_champions_dvc_md5_restores_its_training_snapshot(
    bike: UseCase, first_champion: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The md5 on the champion's run names a DVC object that `mlops data restore` brings back byte for byte."""
    from mlops import cli
    from mlops.settings import get_settings

    tags = _champion_run_tags(bike)
    md5 = tags["dvc_md5"]
    # The object was pushed to the DVC remote under its md5 (DVC 3 layout: files/md5/<2>/<30>).
    pushed = get_settings().dvc_remote_dir / "files" / "md5" / md5[:2] / md5[2:]
    assert pushed.is_file(), sorted(str(p) for p in get_settings().dvc_remote_dir.rglob("*"))[:20]

    destination = tmp_path / "restored" / "snapshot.parquet"
    assert cli.main(["data", "restore", md5, str(destination)]) == 0
    assert capsys.readouterr().out.strip() == str(destination)
    restored = destination.read_bytes()
    assert hashlib.md5(restored).hexdigest() == md5
    assert restored == Path(tags["snapshot_path"]).read_bytes()
    assert tags["uv_lock_sha256"] == hashlib.sha256((PROJECT_ROOT / "uv.lock").read_bytes()).hexdigest()


def test_the_champion_retrains_to_the_same_metrics(
    bike: UseCase, first_champion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mlops reproduce` on the bike champion: the config it was trained under (this module's lighter
    copy of bike_sharing, not configs/bike_sharing.yaml) comes from its run, and every metric agrees."""
    from mlops import cli

    capsys.readouterr()
    assert cli.main(["reproduce", f"{bike.model_name}/{first_champion}"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "reproduced: every recorded metric agrees exactly"
    for metric in ("rmse", "mae", "r2", "mape"):
        assert f"\n{metric} " in out
    assert "note: config: recorded with run" in out


@pytest.fixture(scope="module")
def worse_run(bike: UseCase, first_champion: str) -> dict[str, Any]:
    """One training run whose only candidate is a mean baseline: worse than the champion."""
    dummy = bike.candidates[0].model_copy(
        update={"name": "mean_baseline", "estimator": "sklearn.dummy.DummyRegressor", "params": {}}
    )
    worse = bike.model_copy(update={"candidates": [dummy]})
    before = len(_versions(bike.model_name))
    state, tasks = _run(worse)
    return {
        "state": state,
        "tasks": tasks,
        "versions_before": before,
        "versions_after": len(_versions(bike.model_name)),
        "promotion": task_xcom("train_bike_sharing", "promote_candidate"),
        "champion_after": _alias(bike.model_name, "champion"),
        "challenger_after": _alias(bike.model_name, "challenger"),
    }


def test_worse_model_is_not_promoted(first_champion: str, worse_run: dict[str, Any]) -> None:
    assert worse_run["state"] == "success", worse_run["tasks"]
    assert worse_run["tasks"]["publish_champion"] == "skipped"  # no Asset event for a rejected model
    assert worse_run["champion_after"] == first_champion
    challenger = worse_run["challenger_after"]
    assert challenger is not None and challenger != first_champion
    assert worse_run["versions_after"] == worse_run["versions_before"] + 1
    assert worse_run["promotion"]["action"] == "challenger" and worse_run["promotion"]["reasons"]


def test_rollback_dag_moves_the_champion_and_records_who_and_why(
    bike: UseCase, first_champion: str, worse_run: dict[str, Any]
) -> None:
    from mlflow import MlflowClient

    from mlops.orchestration.rollback import build_rollback_dag

    challenger = worse_run["challenger_after"]
    rollback = build_rollback_dag([bike])
    events_before = _champion_events(bike)

    # To a given version (here: promoting the challenger by hand).
    run = rollback.test(run_conf={"model_name": bike.model_name, "version": challenger, "reason": "try the baseline"})
    assert str(run.state) == "success"
    # Consumers of the champion Asset hear about a rollback as about a promotion.
    (event,) = _champion_events(bike)[len(events_before) :]
    assert event == {"action": "rollback", "champion": challenger, "replaced": first_champion,
                     "reason": "try the baseline", "requested_by": _requested_by(bike, challenger)}  # fmt: skip
    assert _alias(bike.model_name, "champion") == challenger
    assert _alias(bike.model_name, "previous") == first_champion
    assert _alias(bike.model_name, "challenger") is None  # it is the champion now
    tags = MlflowClient().get_model_version(bike.model_name, challenger).tags
    assert tags["mlops.rollback.reason"] == "try the baseline"
    assert tags["mlops.rollback.from_version"] == first_champion
    assert tags["mlops.rollback.requested_by"]  # dag.test has no user: recorded as "unknown", never blank
    moved = task_xcom("rollback_model", "move_champion")
    assert moved["action"] == "rolled_back" and moved["champion"] == challenger

    # Without a version: back to @previous, which restores the first champion.
    run = rollback.test(run_conf={"model_name": bike.model_name, "version": None, "reason": "baseline is worse"})
    assert str(run.state) == "success"
    assert _alias(bike.model_name, "champion") == first_champion
    assert _champion_events(bike)[-1]["champion"] == first_champion
    assert len(_champion_events(bike)) == len(events_before) + 2

    # Nothing to move (already @champion): no event.
    run = rollback.test(run_conf={"model_name": bike.model_name, "version": first_champion, "reason": "again"})
    assert str(run.state) == "success" and task_xcom("rollback_model", "move_champion")["action"] == "unchanged"
    assert len(_champion_events(bike)) == len(events_before) + 2
    assert _alias(bike.model_name, "previous") == challenger
    replaced = MlflowClient().get_model_version(bike.model_name, challenger).tags
    assert replaced["mlops.rolled_back.reason"] == "baseline is worse"
    assert replaced["mlops.rolled_back.to"] == first_champion


def test_classification_use_case_from_config_only(mlflow_server: str, airflow_home: Path) -> None:
    use_case = find_use_case("breast_cancer")
    state, tasks = _run(use_case, {"reason": "test"})
    assert state == "success", tasks
    version = _alias(use_case.model_name, "champion")
    assert version is not None
    from mlops.mlflow import registry

    info = registry.champion(use_case.model_name)
    assert info is not None and info.metrics["f1"] >= 0.9


def test_flight_delays_trains_from_config_only(mlflow_server: str, airflow_home: Path) -> None:
    """Integer features, string categoricals, a timestamp time column and a probability metric for the gate."""
    import pandas as pd

    from mlops.mlflow import registry

    use_case = find_use_case("flight_delays")
    state, tasks = _run(use_case, {"reason": "test"})
    assert state == "success", tasks
    info = registry.champion(use_case.model_name)
    assert info is not None and info.metrics["roc_auc"] >= 0.65, info
    snapshot = task_xcom("train_flight_delays", "ingest_snapshot", _last_run_id("train_flight_delays"))
    # January and February only: the configured window, before any weather goes missing.
    assert (snapshot["window_start"][:10], snapshot["window_end"][:10]) == ("2023-01-01", "2023-03-01")
    frame = pd.read_parquet(snapshot["path"])
    assert frame.notna().all().all() and frame["dep_hour"].dtype == "int64" and frame["carrier"].dtype == object
