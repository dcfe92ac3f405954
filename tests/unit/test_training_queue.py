"""Why a training run started later than asked: the record its first task writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlops.orchestration.training_slot import QUEUE_NOTICE_SECONDS, queue_wait

ASKED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PREVIOUS = {"run_id": "manual_trigger", "started": "2026-11-26T12:00:01+00:00"}


def test_a_run_held_behind_another_names_it_and_the_wait() -> None:
    record = queue_wait("train_bike", "monitoring_trigger", ASKED, ASKED + timedelta(seconds=36.4), False, PREVIOUS)
    assert record == {
        "queued_seconds": "36.4",
        "queued_behind": "manual_trigger",
        "queue_reason": "queued 36 s: train_bike runs one run at a time (max_active_runs=1); the run started "
        "before it is manual_trigger (started 2026-11-26T12:00:01+00:00)",
    }


def test_no_record_when_the_run_did_not_wait() -> None:
    quick = ASKED + timedelta(seconds=QUEUE_NOTICE_SECONDS - 0.1)
    assert queue_wait("train_bike", "run", ASKED, quick, False, PREVIOUS) == {}
    # The first run of a DAG has no run before it.
    assert queue_wait("train_bike", "run", ASKED, ASKED + timedelta(minutes=5), False, None) == {}


def test_no_record_for_a_cleared_run_or_its_own_earlier_attempt() -> None:
    late = ASKED + timedelta(hours=2)
    # A cleared run's start is hours after its original request: that is no queue.
    assert queue_wait("train_bike", "run", ASKED, late, True, PREVIOUS) == {}
    assert queue_wait("train_bike", "manual_trigger", ASKED, late, False, PREVIOUS) == {}
