"""The rollout's evidence and decision on hand-built log frames: pairing, the bootstrap (paired for a shadow,
unpaired for a canary), the rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.config import Deployment
from mlops.rollout.decision import decide, decide_canary
from mlops.rollout.evidence import Evidence, compare, pair_rows, split_rows, weighted_metric
from mlops.training.candidates import compute_metrics

SINCE = datetime(2026, 5, 1)
RULES = Deployment(strategy="shadow", min_labeled_rows=200, deadline_hours=72, confidence=0.95)


def _log(n: int, champion_noise: float, shadow_noise: float, *, labelled: int | None = None, seed: int = 1) -> Any:
    """A log frame as read_predictions(with_labels=True) returns it: champion v1 and shadow v2 on the same ids."""
    rng = np.random.default_rng(seed)
    y = rng.normal(100, 20, n)
    ids = [f"r{i}" for i in range(n)]
    label = pd.Series(y).where(pd.Series(range(n)) < (n if labelled is None else labelled))
    rows = []
    for role, version, noise in (("champion", "1", champion_noise), ("shadow", "2", shadow_noise)):
        pred = y + rng.normal(0, 1, n) * noise if noise else y.copy()
        rows.append(pd.DataFrame({"request_id": ids, "model_version": version, "role": role,
                                  "prediction": pred, "label": label}))  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def _evidence(frame: Any, task: str = "regression", metric: str = "rmse") -> Evidence:
    return compare(task, metric, pair_rows(frame, "2"), "2", confidence=0.95, resamples=500)


def test_a_better_shadow_is_promoted_with_its_interval() -> None:
    evidence = _evidence(_log(400, champion_noise=10, shadow_noise=5))
    assert evidence.rows == 400 and evidence.champion_versions == ["1"]
    assert evidence.candidate_metric < evidence.champion_metric
    low, high = evidence.interval
    assert 0 < low <= evidence.gain <= high
    decision = decide(evidence, RULES, SINCE, SINCE + timedelta(hours=1))
    assert decision.action == "promote", decision.reasons
    assert "better than the required gain 0.00% with 95% confidence" in decision.reasons[0]


def test_a_worse_shadow_is_rejected() -> None:
    decision = decide(_evidence(_log(400, 5, 10)), RULES, SINCE, SINCE + timedelta(hours=1))
    assert decision.action == "reject", decision.reasons
    assert "worse than the champion" in decision.reasons[0]


def test_too_few_labelled_rows_wait_even_for_a_clearly_better_shadow() -> None:
    evidence = _evidence(_log(400, 10, 1, labelled=150))
    assert evidence.rows == 150 and evidence.candidate_rows == 400
    decision = decide(evidence, RULES, SINCE, SINCE + timedelta(hours=1))
    assert decision.action == "wait"
    assert decision.reasons == [
        "150 of 200 labelled requests scored by both champion and shadow (400 scored by the shadow so far)"
    ]


def test_the_deadline_ends_a_wait_in_a_rejection_with_the_reason() -> None:
    evidence = _evidence(_log(400, 10, 1, labelled=150))
    decision = decide(evidence, RULES, SINCE, SINCE + timedelta(hours=72))
    assert decision.action == "reject"
    assert decision.reasons[0].startswith("no decision by the deadline (72 h after @shadow was set")
    assert "150 of 200" in decision.reasons[1]


def test_a_tie_waits_then_is_rejected_at_the_deadline() -> None:
    evidence = _evidence(
        _log(400, 5, 5, seed=3).assign(prediction=lambda f: f.groupby("request_id")["prediction"].transform("first"))
    )
    assert evidence.interval == (0.0, 0.0)
    assert decide(evidence, RULES, SINCE, SINCE + timedelta(hours=71)).action == "wait"
    assert decide(evidence, RULES, SINCE, SINCE + timedelta(hours=73)).action == "reject"


def test_a_required_gain_the_interval_lies_below_is_a_rejection() -> None:
    evidence = _evidence(_log(400, 10, 9.5))
    rules = RULES.model_copy(update={"min_improvement": 0.5})
    decision = decide(evidence, rules, SINCE, SINCE + timedelta(hours=1))
    assert decision.action == "reject" and "not better by the required gain 50.00%" in decision.reasons[0]


def test_the_bootstrap_is_seeded() -> None:
    frame = _log(300, 10, 8)
    assert _evidence(frame).interval == _evidence(frame).interval


def test_pairing_keeps_requests_both_scored_with_labels_and_the_shadow_version_only() -> None:
    frame = _log(10, 1, 1)
    stale = frame[frame["role"] == "shadow"].head(3).assign(model_version="7")  # an earlier shadow's rows
    extra = frame[frame["role"] == "shadow"].head(2).assign(request_id=["x1", "x2"])  # no champion row
    paired = pair_rows(pd.concat([frame.iloc[1:], stale, extra]), "2")  # r0's champion row is missing
    assert len(paired.champion) == len(paired.candidate) == 9
    assert paired.candidate_rows == 12
    assert (paired.champion["label"].to_numpy() == paired.candidate["label"].to_numpy()).all()


def _classification_log(n: int, champion_flip: float, shadow_flip: float) -> Any:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, n)
    ids = [f"c{i}" for i in range(n)]
    parts = []
    for role, version, flip in (("champion", "1", champion_flip), ("shadow", "2", shadow_flip)):
        p1 = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, flip, n), 0.01, 0.99)
        parts.append(pd.DataFrame({"request_id": ids, "model_version": version, "role": role,
                                   "prediction": (p1 >= 0.5).astype(int), "proba__0": 1 - p1, "proba__1": p1,
                                   "label": y.astype(float)}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "precision", "recall", "roc_auc", "log_loss"])
def test_weighted_classification_metrics_equal_compute_metrics_at_unit_weights(metric: str) -> None:
    side = pair_rows(_classification_log(300, 0.3, 0.2), "2").candidate
    truth, pred = side["label"].astype(int).astype(str), side["prediction"].astype(str)
    expected = compute_metrics("classification", truth, pred, side[["proba__0", "proba__1"]].to_numpy(),
                               labels=["0", "1"])[metric]  # fmt: skip
    assert weighted_metric("classification", metric, side, np.ones((1, len(side))))[0] == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["rmse", "mae", "mape", "r2"])
def test_weighted_regression_metrics_equal_compute_metrics_at_unit_weights(metric: str) -> None:
    side = pair_rows(_log(200, 3, 2), "2").candidate
    expected = compute_metrics("regression", side["label"], side["prediction"])[metric]
    assert weighted_metric("regression", metric, side, np.ones((1, len(side))))[0] == pytest.approx(expected)


def test_a_classifier_judged_on_roc_auc_from_the_proba_columns() -> None:
    evidence = _evidence(_classification_log(600, 0.35, 0.1), "classification", "roc_auc")
    assert evidence.candidate_metric > evidence.champion_metric
    assert decide(evidence, RULES, SINCE, SINCE + timedelta(hours=1)).action == "promote"
    worse = _evidence(_classification_log(600, 0.1, 0.35), "classification", "log_loss")
    assert worse.direction == "min" and decide(worse, RULES, SINCE, SINCE).action == "reject"


CANARY = Deployment(strategy="canary", canary_steps=[0.05, 0.25, 1.0], canary_min_requests=100,
                    min_labeled_rows=200, deadline_hours=72)  # fmt: skip


def _canary_log(n: int, champion_noise: float, canary_noise: float, *, seed: int = 3) -> Any:
    """A canary's log: each request answered by one side only (other ids), both sides labelled."""
    rng = np.random.default_rng(seed)
    parts = []
    for role, version, noise, prefix in (("champion", "1", champion_noise, "h"), ("canary", "2", canary_noise, "c")):
        y = rng.normal(100, 20, n)
        parts.append(pd.DataFrame({"request_id": [f"{prefix}{i}" for i in range(n)], "model_version": version,
                                   "role": role, "prediction": y + rng.normal(0, 1, n) * noise, "label": y,
                                   "logged_at": pd.Timestamp(SINCE + timedelta(minutes=5))}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def _canary_evidence(frame: Any) -> Evidence:
    return compare("regression", "rmse", split_rows(frame, "2"), "2", confidence=0.95, resamples=500)


def test_canary_evidence_is_unpaired_each_side_on_its_own_requests() -> None:
    evidence = _canary_evidence(_canary_log(300, 5, 5))
    assert not evidence.paired
    assert evidence.candidate_labelled == evidence.champion_rows == evidence.rows == 300
    assert evidence.interval is not None and evidence.interval[0] < 0 < evidence.interval[1]


def test_a_worse_canary_is_rolled_back_at_its_first_step_once_labels_say_so() -> None:
    evidence = _canary_evidence(_canary_log(300, 5, 20))
    decision = decide_canary(evidence, CANARY, SINCE, SINCE + timedelta(hours=1), step=0, step_requests=300)
    assert decision.action == "reject"
    assert "rolled back at 5%" in decision.reasons[0] and "worse than the champion" in decision.reasons[0]


def test_a_canary_with_no_labels_yet_moves_a_step_on_after_enough_requests() -> None:
    evidence = _canary_evidence(_canary_log(300, 5, 20).assign(label=np.nan))
    early = decide_canary(evidence, CANARY, SINCE, SINCE, step=0, step_requests=99)
    assert early.action == "wait" and "99 of 100 requests answered at 5%" in early.reasons[0]
    on = decide_canary(evidence, CANARY, SINCE, SINCE, step=0, step_requests=100)
    assert on.action == "advance" and "on to 25%" in on.reasons[0]
    assert any("moves to 25% after 100 requests" in s for s in on.ends_when)


def test_a_guard_breach_is_a_rollback_whatever_the_labels_say() -> None:
    evidence = _canary_evidence(_canary_log(300, 20, 5))  # better on labels
    decision = decide_canary(evidence, CANARY, SINCE, SINCE, step=1, step_requests=500,
                             breach="p99 40.0 ms > 1.5x the champion's 2.0 ms + 5 ms")  # fmt: skip
    assert decision.action == "reject" and "breach its guard: p99 40.0 ms" in decision.reasons[0]


def test_at_the_last_step_a_better_canary_is_promoted_and_a_tie_waits_until_the_deadline() -> None:
    better = _canary_evidence(_canary_log(400, 20, 5))
    assert decide_canary(better, CANARY, SINCE, SINCE, step=2, step_requests=0).action == "promote"
    tie = _canary_evidence(_canary_log(300, 5, 5))
    assert decide_canary(tie, CANARY, SINCE, SINCE, step=2, step_requests=10_000).action == "wait"
    late = decide_canary(tie, CANARY, SINCE, SINCE + timedelta(hours=72), step=2, step_requests=10_000)
    assert late.action == "reject" and "deadline" in late.reasons[0]


def test_the_step_counts_only_the_canary_versions_requests_since_the_step_began() -> None:
    from mlops.rollout.apply import _answered_since

    frame = _canary_log(50, 5, 5)
    older = (
        frame[frame["role"] == "canary"]
        .head(20)
        .assign(request_id=[f"old{i}" for i in range(20)], logged_at=pd.Timestamp(SINCE - timedelta(hours=1)))
    )
    other_version = frame[frame["role"] == "canary"].head(5).assign(model_version="9", request_id=list("abcde"))
    assert _answered_since(pd.concat([frame, older, other_version]), "2", SINCE) == 50


@pytest.mark.parametrize("steps", [[0.5, 0.25], [0.0, 1.0], [0.5, 1.5], [0.5, 0.5]])
def test_canary_steps_must_be_increasing_fractions(steps: list[float]) -> None:
    with pytest.raises(ValueError, match="canary step"):
        Deployment(strategy="canary", canary_steps=steps)


@pytest.mark.parametrize(("tag", "step"), [(None, 0), ("", 0), ("1", 1), ("7", 2), ("-3", 0), ("two", 0)])
def test_the_step_tag_is_read_within_the_configured_steps(tag: str | None, step: int) -> None:
    assert CANARY.canary_step(tag) == step  # the service and the rollout DAG read it alike
