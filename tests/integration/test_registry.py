"""Registry versions and aliases against a real MLflow server: first model, promotion, rollback.

One tiny candidate is trained once; every test registers versions of its logged
model under a registered model of its own, so tests do not share alias state.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops.config import UseCase, find_use_case
from mlops.evaluation import champion as evaluation
from mlops.evaluation.gate import GateDecision, check_gate
from mlops.mlflow import registry
from mlops.promotion import approval, decisions, rollback
from mlops.training import runs as training_runs
from mlops.training.results import CandidateResult

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "training_it_registry"


def make_use_case(model_name: str, thresholds: dict[str, dict[str, float]] | None = None) -> UseCase:
    raw = find_use_case("bike_sharing", PROJECT_ROOT / "configs").model_dump()
    raw.update(name="it_registry", model_name=model_name)
    raw["candidates"] = [{"name": "ridge", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": [1.0]}}]
    raw["gate"] = {"primary_metric": "rmse", "thresholds": thresholds or {"rmse": {"max": 120}}, "max_regression": 0.05}
    return UseCase.model_validate(raw)


@pytest.fixture(scope="module")
def trained(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[CandidateResult, str]:
    """One logged candidate (model URI + metrics) and the snapshot it was trained on."""
    uc = make_use_case("it_registry_seed")
    path = tmp_path_factory.mktemp("registry") / "bike.parquet"
    pd.read_csv(PROJECT_ROOT / "data/raw/bike_sharing_hourly.csv", nrows=300).to_parquet(path, index=False)
    parent = training_runs.start_parent_run(uc, DAG_ID, "seed", {"snapshot_path": str(path)})
    spec = {"name": "ridge", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}, "key": "ridge"}
    return training_runs.train_and_log_candidate(uc, spec, str(path), parent, {}), str(path)


def passed(uc: UseCase, candidate: CandidateResult) -> GateDecision:
    return check_gate(uc, candidate.metrics, None)


def failed(reason: str) -> GateDecision:
    return GateDecision(False, [reason], {"rmse": 99.0}, "1", {"rmse": 50.0}, "rmse")


def aliases(name: str) -> dict[str, str]:
    return dict(MlflowClient().get_registered_model(name).aliases)


def assert_written_between(stamp: str, earliest: datetime, latest: datetime) -> None:
    """An ISO 8601 UTC time to the second, written while the test ran."""
    when = datetime.fromisoformat(stamp)
    assert when.utcoffset() == timedelta(0) and stamp == when.isoformat(timespec="seconds")
    assert earliest.replace(microsecond=0) <= when <= latest


def test_first_model_below_thresholds_is_not_promoted(trained: tuple[CandidateResult, str]) -> None:
    candidate, snapshot = trained
    uc = make_use_case("it_registry_strict", thresholds={"rmse": {"max": 1.0}})
    parent = training_runs.start_parent_run(uc, DAG_ID, "strict", {"snapshot_path": snapshot})
    decision = evaluation.evaluate_against_champion(uc, candidate, snapshot, parent)
    assert not decision.passed and decision.champion_version is None
    assert decision.reasons == [f"rmse {candidate.metrics['rmse']:.4g} > max 1"]

    version = decisions.register_candidate(uc, candidate, f"{DAG_ID}/strict")
    started = datetime.now(UTC)
    result = decisions.apply_decision(uc, version, decision, f"{DAG_ID}/strict")
    assert result.action == "challenger" and result.champion is None
    assert registry.champion(uc.model_name) is None
    assert aliases(uc.model_name) == {"challenger": version}
    tags = MlflowClient().get_model_version(uc.model_name, version).tags
    assert tags["mlops.rejection_reason"] == decision.reasons[0]
    # When and by which run it was kept back, for the MLOps page.
    assert tags["mlops.rejected_by"] == f"{DAG_ID}/strict"
    assert_written_between(tags["mlops.rejected_at"], started, datetime.now(UTC))


def test_promotion_keeps_the_old_champion_as_previous(trained: tuple[CandidateResult, str]) -> None:
    candidate, _ = trained
    uc = make_use_case("it_registry_promote")
    v1 = decisions.register_candidate(uc, candidate, "dag/r1")
    v2 = decisions.register_candidate(uc, candidate.to_dict(), "dag/r2")  # XCom form
    v3 = decisions.register_candidate(uc, candidate, "dag/r3")
    assert (v1, v2, v3) == ("1", "2", "3")
    assert decisions.apply_decision(uc, v1, passed(uc, candidate), "dag/r1").action == "promoted"
    assert decisions.apply_decision(uc, v2, failed("rmse too high"), "dag/r2").action == "challenger"
    # A run's decision is final: the same run key deciding again, even otherwise, moves nothing.
    again = decisions.apply_decision(uc, v2, passed(uc, candidate).to_dict(), "dag/r2")
    assert again.action == "unchanged" and "v2 was already kept as @challenger by dag/r2" in again.reasons[-1]
    assert aliases(uc.model_name) == {"champion": v1, "challenger": v2}
    assert MlflowClient().get_model_version(uc.model_name, v2).tags["mlops.gate.passed"] == "false"

    started = datetime.now(UTC)
    result = decisions.apply_decision(uc, v3, passed(uc, candidate).to_dict(), "dag/r3")
    assert (result.action, result.champion, result.previous) == ("promoted", "3", "1")
    assert aliases(uc.model_name) == {"champion": "3", "previous": "1", "challenger": "2"}
    info = registry.champion(uc.model_name)
    assert info is not None and info.version == "3" and info.aliases == ["champion"]
    assert info.metrics == pytest.approx(candidate.metrics) and info.run_id == candidate.run_id
    assert info.tags["mlops.promoted_by"] == "dag/r3" and info.tags["mlops.replaced"] == "1"
    assert_written_between(info.tags["mlops.promoted_at"], started, datetime.now(UTC))
    assert json.loads(json.dumps(info.to_dict()))["model_uri"] == f"models:/{uc.model_name}/3"


def test_a_promotion_interrupted_after_the_alias_moved_is_finished_on_retry(
    trained: tuple[CandidateResult, str],
) -> None:
    """The task died between moving @champion and writing its mark: the retry completes the record."""
    candidate, _ = trained
    uc = make_use_case("it_registry_interrupted")
    client = MlflowClient()
    v1 = decisions.register_candidate(uc, candidate, "dag/r1")
    assert decisions.apply_decision(uc, v1, passed(uc, candidate), "dag/r1").action == "promoted"
    v2 = decisions.register_candidate(uc, candidate, "dag/r2")
    # What apply_decision had done for r2 when it was killed: @previous, then @champion, no mark yet.
    client.set_registered_model_alias(uc.model_name, "previous", v1)
    client.set_registered_model_alias(uc.model_name, "champion", v2)

    started = datetime.now(UTC)
    retry = decisions.apply_decision(uc, v2, passed(uc, candidate), "dag/r2")
    assert (retry.action, retry.champion, retry.previous) == ("promoted", v2, v1)
    tags = client.get_model_version(uc.model_name, v2).tags
    assert tags["mlops.promoted_by"] == "dag/r2" and tags["mlops.replaced"] == v1
    assert_written_between(tags["mlops.promoted_at"], started, datetime.now(UTC))
    assert aliases(uc.model_name) == {"champion": v2, "previous": v1}
    # And once finished, a further retry is a no-op like any replay.
    assert decisions.apply_decision(uc, v2, passed(uc, candidate), "dag/r2").action == "unchanged"


def test_a_failed_gate_never_demotes_the_champion(trained: tuple[CandidateResult, str]) -> None:
    candidate, _ = trained
    uc = make_use_case("it_registry_no_demotion")
    v1 = decisions.register_candidate(uc, candidate, "dag/r1")
    # @champion by hand (rollback), then its own run's late, failed decision arrives.
    rollback.rollback(uc.model_name, v1, reason="first model, placed by hand", requested_by="erin")
    kept = decisions.apply_decision(uc, v1, failed("late failure"), "dag/r1")
    assert kept.action == "unchanged" and kept.reasons[-1].startswith("v1 is @champion and stays so")
    assert aliases(uc.model_name) == {"champion": v1}
    assert "mlops.rejection_reason" not in MlflowClient().get_model_version(uc.model_name, v1).tags


def test_a_replayed_decision_moves_no_alias(trained: tuple[CandidateResult, str]) -> None:
    """Run A promoted v1, run B then promoted v2; clearing A's promotion must not bring v1 back."""
    candidate, _ = trained
    uc = make_use_case("it_registry_replay")
    v1, v2, v3, v4 = (decisions.register_candidate(uc, candidate, f"dag/{run}") for run in "ABCD")
    assert decisions.apply_decision(uc, v1, passed(uc, candidate), "dag/A").action == "promoted"
    assert decisions.apply_decision(uc, v2, passed(uc, candidate), "dag/B").action == "promoted"
    assert decisions.apply_decision(uc, v3, failed("rmse too high"), "dag/C").action == "challenger"
    assert decisions.apply_decision(uc, v4, failed("rmse far too high"), "dag/D").action == "challenger"
    settled = {"champion": v2, "previous": v1, "challenger": v4}
    assert aliases(uc.model_name) == settled
    client = MlflowClient()
    tags_before = {v: client.get_model_version(uc.model_name, v).tags for v in (v1, v3)}

    replay_a = decisions.apply_decision(uc, v1, passed(uc, candidate), "dag/A")
    assert (replay_a.action, replay_a.champion, replay_a.previous) == ("unchanged", v2, v1)
    assert replay_a.reasons[-1].startswith("v1 was already promoted to @champion by dag/A")
    replay_c = decisions.apply_decision(uc, v3, failed("rmse too high"), "dag/C")
    assert replay_c.action == "unchanged" and replay_c.reasons[-1].startswith("v3 was already kept as @challenger")
    assert aliases(uc.model_name) == settled
    # Nothing rewritten either: the versions carry what their runs wrote the first time.
    assert {v: client.get_model_version(uc.model_name, v).tags for v in (v1, v3)} == tags_before
    assert tags_before[v1]["mlops.promoted_by"] == "dag/A" and tags_before[v3]["mlops.rejected_by"] == "dag/C"


def test_register_is_idempotent_per_run_key(trained: tuple[CandidateResult, str]) -> None:
    candidate, _ = trained
    uc = make_use_case("it_registry_idem")
    first = decisions.register_candidate(uc, candidate, "dag/same")
    assert decisions.register_candidate(uc, candidate, "dag/same") == first
    assert registry.find_version_by_run_key(uc.model_name, "dag/same") == first
    assert len(MlflowClient().search_model_versions(f"name = '{uc.model_name}'")) == 1
    assert decisions.register_candidate(uc, candidate, "dag/other") != first


def test_rollback_to_previous_and_to_a_given_version(trained: tuple[CandidateResult, str]) -> None:
    candidate, _ = trained
    uc = make_use_case("it_registry_rollback")
    v1, v2, v3 = (decisions.register_candidate(uc, candidate, f"dag/r{i}") for i in (1, 2, 3))
    decisions.apply_decision(uc, v1, passed(uc, candidate), "dag/r1")
    decisions.apply_decision(uc, v2, passed(uc, candidate), "dag/r2")
    decisions.apply_decision(uc, v3, failed("rmse 98.1 is 7.3% worse than champion v2 (91.4); allowed 5.0%"), "dag/r3")
    assert aliases(uc.model_name) == {"champion": v2, "previous": v1, "challenger": v3}

    back = rollback.rollback(uc.model_name, None, reason="v2 drops weekend traffic", requested_by="alice")
    assert (back.action, back.champion, back.previous, back.replaced) == ("rolled_back", v1, v2, v2)
    assert aliases(uc.model_name) == {"champion": v1, "previous": v2, "challenger": v3}
    client = MlflowClient()
    restored = client.get_model_version(uc.model_name, v1).tags
    assert restored["mlops.rollback.reason"] == "v2 drops weekend traffic"
    assert restored["mlops.rollback.requested_by"] == "alice"
    assert restored["mlops.rollback.from_version"] == v2
    replaced = client.get_model_version(uc.model_name, v2).tags
    assert replaced["mlops.rolled_back.by"] == "alice" and replaced["mlops.rolled_back.to"] == v1

    # A given version: here the challenger, promoted by hand; its challenger alias goes away.
    manual = rollback.rollback(uc.model_name, v3, reason="schema change reviewed", requested_by="bob")
    assert (manual.champion, manual.previous) == (v3, v1)
    assert aliases(uc.model_name) == {"champion": v3, "previous": v1}
    assert json.loads(json.dumps(manual.to_dict()))["requested_by"] == "bob"

    same = rollback.rollback(uc.model_name, v3, reason="again", requested_by="bob")
    assert same.action == "unchanged" and aliases(uc.model_name) == {"champion": v3, "previous": v1}


def test_rollback_errors_are_clear(trained: tuple[CandidateResult, str]) -> None:
    candidate, _ = trained
    uc = make_use_case("it_registry_single")
    v1 = decisions.register_candidate(uc, candidate, "dag/only")
    decisions.apply_decision(uc, v1, passed(uc, candidate), "dag/only")
    with pytest.raises(rollback.RollbackError, match=r"no @previous version to roll back to.*versions: \['1'\]"):
        rollback.rollback(uc.model_name, None, reason="bad", requested_by="carol")
    with pytest.raises(rollback.RollbackError, match=r"has no version '7'; registered versions: \['1'\]"):
        rollback.rollback(uc.model_name, "7", reason="bad", requested_by="carol")
    with pytest.raises(rollback.RollbackError, match="no @previous"):
        rollback.rollback("it_registry_never_registered", None, reason="bad", requested_by="carol")
    assert aliases(uc.model_name) == {"champion": v1}
    assert registry.champion("it_registry_never_registered") is None


ANSWERS = {
    "rejected": {"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "ana"},
                 "responded_at": "2026-03-04T05:06:07.890+00:00", "timed_out": False},
    # Airflow's time-out sweep applies the default ("Reject") with no responder.
    "timed out": {"chosen_options": ["Reject"], "responded_by_user": None,
                  "responded_at": "2026-03-05T05:06:07+00:00", "timed_out": True},
}  # fmt: skip
REJECTION_REASONS = {
    "rejected": "promotion rejected by ana; champion kept",
    "timed out": "approval timed out: nobody answered within 2 h; champion kept",
}


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_a_rejected_or_timed_out_promotion_keeps_the_champion(
    trained: tuple[CandidateResult, str], answer: str
) -> None:
    """record_approval_outcome's logic: Airflow's answer read as the task reads it, then recorded."""
    candidate, _ = trained
    uc = make_use_case(f"it_registry_{answer.replace(' ', '_')}")
    v1 = decisions.register_candidate(uc, candidate, "dag/A")
    decisions.apply_decision(uc, v1, passed(uc, candidate), "dag/A")
    v2 = decisions.register_candidate(uc, candidate, "dag/B")
    # The gate passed v2 (it equals the champion), so a person was asked; promote_candidate was skipped.
    gate = check_gate(uc, candidate.metrics, candidate.metrics, champion_version=v1)
    assert gate.passed

    outcome = approval.approval_outcome(ANSWERS[answer], timeout_hours=2)
    result = approval.apply_approval(uc, v2, gate.to_dict(), outcome, "dag/B")
    assert (result.action, result.champion, result.reasons) == ("challenger", v1, [REJECTION_REASONS[answer]])
    assert aliases(uc.model_name) == {"champion": v1, "challenger": v2}
    tags = MlflowClient().get_model_version(uc.model_name, v2).tags
    # The gate's verdict as the gate gave it; the person's answer beside it, in its own tags.
    assert tags["mlops.gate.passed"] == "true" and tags["mlops.gate.reasons"] == "; ".join(gate.reasons)
    assert tags["mlops.gate.champion_version"] == v1 and tags["mlops.gate.run_key"] == "dag/B"
    by, at = ("ana", "2026-03-04T05:06:07+00:00") if answer == "rejected" else ("nobody", "2026-03-05T05:06:07+00:00")
    assert {k: v for k, v in tags.items() if k.startswith("mlops.approval.")} == {
        "mlops.approval.decision": answer, "mlops.approval.by": by, "mlops.approval.at": at,
        "mlops.approval.reason": REJECTION_REASONS[answer],
    }  # fmt: skip
    assert tags["mlops.rejection_reason"] == REJECTION_REASONS[answer]
    assert (tags["mlops.rejected_by"], tags["mlops.rejected_at"]) == ("dag/B", at)
    assert "mlops.promoted_by" not in tags
    # The champion's own record is untouched.
    assert "mlops.approval.decision" not in MlflowClient().get_model_version(uc.model_name, v1).tags

    # Recorded once: a replay of the task, even with another answer, changes nothing.
    approved = approval.approval_outcome({**ANSWERS["rejected"], "chosen_options": ["Approve"]}, timeout_hours=2)
    for again in (outcome, approved):
        replay = approval.apply_approval(uc, v2, gate, again, "dag/B")
        assert replay.action == "unchanged" and "already kept as @challenger by dag/B" in replay.reasons[-1]
    assert MlflowClient().get_model_version(uc.model_name, v2).tags == tags
    assert aliases(uc.model_name) == {"champion": v1, "challenger": v2}


def test_an_approved_promotion_records_who_approved(trained: tuple[CandidateResult, str]) -> None:
    candidate, _ = trained
    uc = make_use_case("it_registry_approved")
    v1 = decisions.register_candidate(uc, candidate, "dag/A")
    gate = passed(uc, candidate)
    assert decisions.apply_decision(uc, v1, gate, "dag/A").action == "promoted"  # promote_candidate ran
    outcome = approval.approval_outcome({**ANSWERS["rejected"], "chosen_options": ["Approve"]}, timeout_hours=2)
    result = approval.apply_approval(uc, v1, gate, outcome, "dag/A")
    assert (result.action, result.champion, result.reasons) == ("unchanged", v1, ["promotion approved by ana"])
    tags = MlflowClient().get_model_version(uc.model_name, v1).tags
    assert (tags["mlops.approval.decision"], tags["mlops.approval.by"]) == ("approved", "ana")
    assert tags["mlops.gate.passed"] == "true" and tags["mlops.promoted_by"] == "dag/A"
    assert "mlops.rejection_reason" not in tags and aliases(uc.model_name) == {"champion": v1}
