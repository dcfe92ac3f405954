"""Human approval of promotions: reading Airflow's answer, and what the MLOps page links to and shows."""

from __future__ import annotations

from datetime import UTC, datetime

from mlops.promotion.approval import approval_outcome
from mlops.ui import urls, views


def test_a_persons_approval_names_them() -> None:
    answer = {"chosen_options": ["Approve"], "responded_by_user": {"id": "7", "name": "ana"},
              "responded_at": "2026-01-02T03:04:05.678+00:00", "timed_out": False}  # fmt: skip
    outcome = approval_outcome(answer, timeout_hours=24)
    assert outcome.approved and outcome.by == "ana" and outcome.at == "2026-01-02T03:04:05+00:00"
    assert outcome.reason == "promotion approved by ana"


def test_a_persons_rejection_keeps_the_champion() -> None:
    answer = {"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "ana"},
              "responded_at": datetime(2026, 1, 2, tzinfo=UTC)}  # fmt: skip
    outcome = approval_outcome(answer, timeout_hours=24)
    assert not outcome.approved and outcome.decision == "rejected"
    assert outcome.reason == "promotion rejected by ana; champion kept"
    assert outcome.at == "2026-01-02T00:00:00+00:00"


def test_the_time_out_default_is_not_a_persons_rejection() -> None:
    # Airflow applies the default ("Reject") and records no responder.
    answer = {"chosen_options": ["Reject"], "responded_by_user": None, "responded_at": None, "timed_out": True}
    outcome = approval_outcome(answer, timeout_hours=0.5)
    assert outcome.decision == "timed out" and outcome.by == "nobody" and not outcome.approved
    assert "nobody answered within 0.5 h" in outcome.reason and "champion kept" in outcome.reason


def test_no_answer_at_all_is_said_so() -> None:
    outcome = approval_outcome(None, timeout_hours=24)
    assert outcome.decision == "not answered" and not outcome.approved


def test_the_page_says_who_answered() -> None:
    def version(tags: dict[str, str]) -> views.VersionView:
        return views.VersionView("2", [], None, None, None, {}, None, [], {}, tags, "", None)

    assert version({}).approval is None
    approved = {"mlops.approval.decision": "approved", "mlops.approval.by": "ana", "mlops.approval.at": "T"}
    assert version(approved).approval == "approved by ana at T"
    assert version({"mlops.approval.decision": "timed out", "mlops.approval.by": "nobody"}).approval == (
        "approval timed out"
    )


def test_review_link_is_airflows_required_actions_tab() -> None:
    path = urls.required_action_path("train_uc", "manual__2026-01-01T00:00:00+00:00", "approve_promotion")
    run = "manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    assert path == f"/dags/train_uc/runs/{run}/tasks/approve_promotion/required_actions"
    assert urls.required_action_path("d", "r", "t", map_index=3).endswith("/tasks/t/mapped/3/required_actions")
