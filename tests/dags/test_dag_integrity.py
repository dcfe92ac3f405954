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

    expected = {"platform_self_check", "rollback_model"} | {f"train_{u.name}" for u in load_all()}
    assert expected <= set(dagbag.dag_ids)


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


def test_gates_never_retry(dagbag: Any) -> None:
    gates = [t for d in dagbag.dags.values() for t in d.tasks if t.task_id.startswith(("validate_", "evaluate_"))]
    assert gates, "expected gate tasks"
    assert all(t.retries == 0 for t in gates), [t.task_id for t in gates if t.retries]


@pytest.mark.parametrize("path", DAG_SOURCES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_schedule_is_explicit(path: Path) -> None:
    """Airflow's default schedule changed between versions; every DAG must say its own."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in {"dag", "DAG"}:
                assert any(k.arg == "schedule" for k in node.keywords), f"{path}:{node.lineno} lacks schedule="


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
