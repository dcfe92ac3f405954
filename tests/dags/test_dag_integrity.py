"""Every DAG file imports through DagBag, and every DAG follows the platform's rules."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAG_SOURCES = [
    *PROJECT_ROOT.joinpath("dags").rglob("*.py"),
    *PROJECT_ROOT.joinpath("include/mlops/orchestration").glob("*.py"),
]


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def test_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}, "\n".join(f"{k}: {v}" for k, v in dagbag.import_errors.items())


def test_expected_dags_exist(dagbag: Any) -> None:
    from mlops.config import load_all

    expected = {"platform_self_check", "rollback_model", "materialize_features"}
    expected |= {f"train_{u.name}" for u in load_all()}
    expected |= {f"model_card_{u.name}" for u in load_all()}
    expected |= {f"ingest_labels_{u.name}" for u in load_all()}
    rolled_out = {f"rollout_{u.name}" for u in load_all() if u.deployment.strategy in ("shadow", "canary")}
    expected |= rolled_out
    assert expected <= set(dagbag.dag_ids)
    assert {d for d in dagbag.dag_ids if d.startswith("rollout_")} == rolled_out


def test_a_shadow_config_gets_a_rollout_dag_on_the_hour_and_its_challenger_asset(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed from the DAG files like any DAG, and held to the same rules."""
    import yaml
    from airflow.dag_processing.dagbag import DagBag

    from mlops.config import find_use_case
    from mlops.orchestration.assets import challenger_asset

    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "bike_sharing.yaml").read_text())
    raw["deployment"] = {"strategy": "shadow", "min_labeled_rows": 300}
    (tmp_path / "bike_sharing.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "training"))
    assert bag.import_errors == {}
    dag = bag.dags["rollout_bike_sharing"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "find_rollout", "judge_rollout", "apply_rollout", "publish_champion",
    ]  # fmt: skip
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule" and "300" in dag.doc_md
    assert dag.timetable.timetable.expression == "0 * * * *"  # @hourly
    use_case = find_use_case("bike_sharing", tmp_path)
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [challenger_asset(use_case).uri]
    assert "publish_challenger" in bag.dags["train_bike_sharing"].task_ids
    test_every_dag_follows_the_rules(bag)
    test_every_task_alerts_when_it_fails(bag)
    test_every_run_alerts_when_it_fails_without_a_failed_task(bag)


def test_each_label_ingestion_dag_runs_on_its_labels_schedule(dagbag: Any) -> None:
    from mlops.config import load_all

    for use_case in load_all():
        dag = dagbag.dags[f"ingest_labels_{use_case.name}"]
        assert dag.schedule == use_case.labels.schedule, dag.schedule
        assert {"settle_unmatched_labels", "ingest_landed_labels"} <= set(dag.task_ids)
        assert ("ingest_queried_labels" in dag.task_ids) == (use_case.labels.sql is not None)


def test_each_model_card_dag_is_scheduled_on_its_champion_asset(dagbag: Any) -> None:
    from mlops.config import load_all
    from mlops.orchestration.assets import champion_asset

    for use_case in load_all():
        dag = dagbag.dags[f"model_card_{use_case.name}"]
        condition = dag.timetable.asset_condition
        assert [asset.uri for asset in condition.objects] == [champion_asset(use_case).uri]


def test_a_store_backed_use_case_reads_the_features_asset_before_training_and_scoring(dagbag: Any) -> None:
    from mlops.config import load_all
    from mlops.orchestration.features import online_features_asset

    backed = [u for u in load_all() if u.feature_store is not None]
    assert backed, "a bundled config reads the feature store (configs/bike_sharing_store.yaml)"
    for use_case in load_all():
        train, score = dagbag.dags[f"train_{use_case.name}"], dagbag.dags[f"score_{use_case.name}"]
        scoring = score.get_task("score_landed_partition")
        if use_case.feature_store is None:
            assert "check_feature_store" not in train.task_ids and scoring.inlets == []
            continue
        check = train.get_task("check_feature_store")
        assert check.downstream_task_ids == {"ingest_snapshot"} and check.upstream_task_ids == set()
        assert [a.uri for a in check.inlets] == [online_features_asset().uri] and check.retries == 0
        assert [a.uri for a in scoring.inlets] == [online_features_asset().uri]


def test_every_dag_follows_the_rules(dagbag: Any) -> None:
    problems = []
    for dag_id, dag in dagbag.dags.items():
        if not dag.owner or dag.owner == "airflow":
            problems.append(f"{dag_id}: set an owner")
        if not dag.tags:
            problems.append(f"{dag_id}: add tags")
        if not (dag.doc_md or "").strip():
            problems.append(f"{dag_id}: add doc_md")
        if dag.start_date is None or dag.start_date.tzinfo is None:
            problems.append(f"{dag_id}: start_date must be time-zone aware")
        if dag.max_active_runs is None or dag.max_active_runs > 1:
            problems.append(f"{dag_id}: set max_active_runs=1")
        if dag.catchup:
            problems.append(f"{dag_id}: catchup must be off")
        for task in dag.tasks:
            if task.retries is None:
                problems.append(f"{dag_id}.{task.task_id}: no retry policy")
            if not isinstance(task.execution_timeout, timedelta):
                problems.append(f"{dag_id}.{task.task_id}: no execution_timeout")
    assert not problems, "\n".join(problems)


def _callbacks(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value] if value else []


def test_every_task_alerts_when_it_fails(dagbag: Any) -> None:
    """The failure notifier of DAG_DEFAULTS must reach every task: a task that overrides it, or a
    DAG built without DAG_DEFAULTS, would fail in silence."""
    from mlops.orchestration.defaults import DAG_DEFAULTS

    notifier = DAG_DEFAULTS["on_failure_callback"]
    silent = [
        f"{dag_id}.{task.task_id}"
        for dag_id, dag in dagbag.dags.items()
        for task in dag.tasks
        if not any(callback is notifier for callback in _callbacks(task.on_failure_callback))
    ]
    assert dagbag.dags and not silent, f"tasks without the failure notifier: {silent}"


def test_every_run_alerts_when_it_fails_without_a_failed_task(dagbag: Any) -> None:
    """A dagrun_timeout fails the run and skips its unfinished tasks: no task callback fires."""
    from mlops.orchestration.defaults import RUN_FAILURE_CALLBACK

    silent = [
        dag_id
        for dag_id, dag in dagbag.dags.items()
        if not any(callback is RUN_FAILURE_CALLBACK for callback in _callbacks(dag.on_failure_callback))
    ]
    assert dagbag.dags and not silent, f"DAGs without the run-level failure notifier: {silent}"


def test_run_level_notifier_reports_a_timeout_once(dagbag: Any, caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from mlops.orchestration.notifiers import MlopsNotifier

    dag = dagbag.dags["monitor_bike_sharing"]
    notifier = MlopsNotifier.on_run_failure()
    ti = SimpleNamespace(task_id="assess_window", dag_id=dag.dag_id, log_url=None)
    # Airflow's DAG callback context: the last unfinished task, and why the run failed.
    with caplog.at_level("ERROR", logger="mlops.alerts"):
        notifier.notify({"dag": dag, "run_id": "scheduled__1", "reason": "timed_out", "ti": ti})
    [delivery] = notifier.deliveries
    assert delivery.channel == "log" and delivery.ok
    assert "monitor_bike_sharing failed" in caplog.text
    assert "the run failed: timed_out (2:00:00); it was at task assess_window" in caplog.text
    # A run failed by a task was reported by that task's own callback already.
    caplog.clear()
    with caplog.at_level("ERROR", logger="mlops.alerts"):
        notifier.notify({"dag": dag, "run_id": "scheduled__2", "reason": "task_failure", "ti": ti})
    assert notifier.deliveries == [] and caplog.text == ""


def _decides(task: Any) -> bool:
    """A task decides when its outcome routes or stops the run: it branches, short-circuits or waits
    for a person (Airflow's SkipMixin: it skips what was not chosen), or it is a quality gate, named
    for what it judges (`validate_*`, `evaluate_*`, `assess_*`, as tasks are named verb_noun)."""
    from airflow.sdk.bases.skipmixin import SkipMixin

    name = task.task_id.rsplit(".", 1)[-1]
    return isinstance(task, SkipMixin) or name.startswith(("validate_", "evaluate_", "assess_"))


def test_gates_never_retry(dagbag: Any) -> None:
    """A decision reads data that will not change on retry: a retry only delays the same verdict
    (or, for a branch, re-decides after downstream tasks were already skipped)."""
    from mlops.config import Approval, find_use_case
    from mlops.orchestration.training import build_training_dag

    use_case = find_use_case("bike_sharing")
    # The approval branch exists only when a use case asks for it: include such a DAG too.
    gated = build_training_dag(use_case.model_copy(update={"approval": Approval(required=True, timeout_hours=2)}))
    dags = [*dagbag.dags.values(), gated]
    decisions = {f"{d.dag_id}.{t.task_id}": t for d in dags for t in d.tasks if _decides(t)}
    # The rule must find the known decisions of each kind (a guard against a rule that finds nothing).
    expected = {
        "train_bike_sharing.validate_snapshot", "train_bike_sharing.evaluate_candidate",
        "train_bike_sharing.route_for_approval", "train_bike_sharing.approve_promotion",
        "monitor_bike_sharing.validate_window", "monitor_bike_sharing.assess_window",
        "monitor_bike_sharing.should_retrain",
    }  # fmt: skip
    assert expected <= set(decisions), expected - set(decisions)
    retried = {name: task.retries for name, task in decisions.items() if task.retries != 0}
    assert not retried, f"decision tasks must not retry: {retried}"


@pytest.mark.parametrize("path", DAG_SOURCES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_schedule_is_explicit(path: Path) -> None:
    """Airflow's default schedule changed between versions; every DAG must say its own."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in {"dag", "DAG"}:
                assert any(k.arg == "schedule" for k in node.keywords), f"{path}:{node.lineno} lacks schedule="


def test_a_use_case_with_access_gives_its_roles_on_each_of_its_dags_only(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`access` becomes every DAG's `access_control` of that use case, through serialization (what FAB syncs from)."""
    import shutil

    import yaml
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    for path in (PROJECT_ROOT / "configs").glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    raw = yaml.safe_load((tmp_path / "bike_sharing.yaml").read_text())
    raw["access"] = {"readers": ["team-a-viewers"], "operators": ["team-a-ops"]}
    (tmp_path / "bike_sharing.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    expected = {
        "team-a-viewers": {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}},
        "team-a-ops": {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}},
    }
    ours = {d for d in bag.dag_ids if d.endswith("_bike_sharing")}
    assert {"train_bike_sharing", "monitor_bike_sharing", "score_bike_sharing", "ingest_labels_bike_sharing"} <= ours
    for dag_id in sorted(ours):
        assert bag.dags[dag_id].access_control == expected, dag_id
        serialized = DagSerialization.to_dict(bag.dags[dag_id])
        assert DagSerialization.from_dict(serialized).access_control == expected, dag_id
    others = {d: bag.dags[d].access_control for d in bag.dag_ids if d not in ours}
    assert others and {d: a for d, a in others.items() if a is not None} == {}, "no `access`: Airflow's roles alone"


def test_broken_config_stops_the_parse_naming_file_and_key(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml
    from airflow.dag_processing.dagbag import DagBag

    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "bike_sharing.yaml").read_text())
    raw["gate"]["max_regression"] = "five percent"
    (tmp_path / "bike_sharing.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(tmp_path))
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "training" / "training.py"))
    assert bag.dags == {}
    (message,) = bag.import_errors.values()
    assert str(tmp_path / "bike_sharing.yaml") in message and "gate.max_regression" in message


def test_approval_flag_puts_a_person_between_the_gate_and_the_alias_move() -> None:
    """With approval.required the DAG waits on Airflow's HITL operator; without it, no trace of it."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from mlops.config import Approval, find_use_case
    from mlops.orchestration.training import build_training_dag

    plain = build_training_dag(find_use_case("bike_sharing"))
    assert not {"route_for_approval", "approve_promotion", "record_approval_outcome"} & set(plain.task_ids)

    use_case = find_use_case("bike_sharing")
    gated = build_training_dag(use_case.model_copy(update={"approval": Approval(required=True, timeout_hours=2)}))
    approve = gated.get_task("approve_promotion")
    assert isinstance(approve, ApprovalOperator)
    assert approve.retries == 0 and approve.response_timeout == timedelta(hours=2)
    assert approve.defaults == ["Reject"]  # silence is not consent
    # Only a passed gate is routed to the person; both paths end at the promotion step.
    assert gated.get_task("route_for_approval").downstream_task_ids == {"approve_promotion", "no_approval_needed"}
    assert "promote_candidate" in approve.downstream_task_ids
    assert "promote_candidate" in gated.get_task("no_approval_needed").downstream_task_ids
    assert "record_approval_outcome" in gated.get_task("promote_candidate").downstream_task_ids
    assert gated.get_task("record_approval_outcome").trigger_rule == "all_done"
