"""The rollout's evidence and decision on hand-built log frames: pairing, the bootstrap (paired for a shadow,
unpaired for a canary), the rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from math import comb
from pathlib import Path
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


# --------------------------------------------------------------------------- McNemar (paired classification)


def _disagreeing_log(b: int, c: int, agree: int = 300) -> Any:
    """A paired classification log with `b` requests only the champion got right, `c` only the shadow, and
    `agree` both got right; the probabilities follow each side's prediction."""
    n = b + c + agree
    y = np.ones(n, dtype=int)
    champion = np.r_[np.ones(b), np.zeros(c), np.ones(agree)].astype(int)
    shadow = np.r_[np.zeros(b), np.ones(c), np.ones(agree)].astype(int)
    ids = [f"m{i}" for i in range(n)]
    y[::2] = 1 - y[::2]  # both classes among the labels: flip label and both predictions alike
    champion[::2], shadow[::2] = 1 - champion[::2], 1 - shadow[::2]
    parts = [
        pd.DataFrame(
            {
                "request_id": ids,
                "model_version": version,
                "role": role,
                "prediction": pred,
                "proba__0": np.where(pred == 1, 0.3, 0.7),
                "proba__1": np.where(pred == 1, 0.7, 0.3),
                "label": y.astype(float),
            }
        )
        for role, version, pred in (("champion", "1", champion), ("shadow", "2", shadow))
    ]
    return pd.concat(parts, ignore_index=True)


def _exact_mcnemar(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value by hand: twice the smaller binomial tail at 1/2, at most 1."""
    n = b + c
    return float(min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n))


@pytest.mark.parametrize(("b", "c"), [(30, 12), (12, 30), (5, 5), (0, 9), (0, 0)])
def test_mcnemar_counts_the_discordant_requests_and_gives_the_exact_p(b: int, c: int) -> None:
    evidence = _evidence(_disagreeing_log(b, c), "classification", "accuracy")
    assert (evidence.champion_only_right, evidence.candidate_only_right) == (b, c)
    assert evidence.mcnemar_p == pytest.approx(_exact_mcnemar(b, c))
    # Recorded with the rest of the evidence, and read back.
    assert Evidence.from_dict(evidence.to_dict()) == evidence


def test_mcnemar_applies_to_paired_classification_only() -> None:
    assert _evidence(_log(300, 5, 5)).mcnemar_p is None  # regression
    canary = compare("classification", "accuracy", split_rows(_disagreeing_log(30, 12).replace(
        {"role": {"shadow": "canary"}}), "2"), "2", resamples=200)  # fmt: skip
    assert canary.paired is False and canary.mcnemar_p is None  # unpaired: no pairs to test
    # An evidence recorded before McNemar existed still reads.
    old = {k: v for k, v in _evidence(_log(300, 5, 5)).to_dict().items() if "right" not in k and "mcnemar" not in k}
    assert Evidence.from_dict(old).mcnemar_p is None


def test_a_shadow_less_often_right_is_rejected_by_mcnemar_even_when_its_primary_metric_is_better() -> None:
    # Better ranked (roc_auc from the probabilities) but wrong more often at its threshold: every prediction 1.
    rng = np.random.default_rng(5)
    n = 400
    y = rng.integers(0, 2, n)
    champion_p1 = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.25, n), 0.01, 0.99)
    shadow_p1 = np.clip(np.where(y == 1, 0.45, 0.15) + rng.normal(0, 0.02, n), 0.01, 0.99)
    ids = [f"t{i}" for i in range(n)]
    frame = pd.concat([
        pd.DataFrame({"request_id": ids, "model_version": v, "role": role, "prediction": pred, "proba__0": 1 - p1,
                      "proba__1": p1, "label": y.astype(float)})
        for role, v, pred, p1 in (("champion", "1", (champion_p1 >= 0.5).astype(int), champion_p1),
                                  ("shadow", "2", np.ones(n, dtype=int), shadow_p1))
    ], ignore_index=True)  # fmt: skip
    evidence = _evidence(frame, "classification", "roc_auc")
    assert evidence.interval is not None and evidence.interval[0] > 0  # the bootstrap alone would promote
    assert evidence.champion_only_right > evidence.candidate_only_right and evidence.mcnemar_p < 0.05
    decision = decide(evidence, RULES, SINCE, SINCE + timedelta(hours=1))
    assert decision.action == "reject", decision.reasons
    assert "less often right than the champion on the same requests with 95% confidence" in decision.reasons[0]
    assert decision.reasons[0].startswith(f"McNemar: {evidence.candidate_only_right} requests right by the candidate")
    assert any("McNemar's exact test finds it less often right" in s for s in decision.ends_when)


def test_a_shadow_better_on_both_tests_is_promoted_with_mcnemar_in_its_reasons_and_tags() -> None:
    from mlops.naming import TAG_ROLLOUT_MCNEMAR
    from mlops.rollout.apply import evidence_tags

    evidence = _evidence(_disagreeing_log(b=10, c=40), "classification", "accuracy")
    decision = decide(evidence, RULES, SINCE, SINCE + timedelta(hours=1))
    assert decision.action == "promote", decision.reasons
    assert decision.reasons[1].startswith("McNemar: 40 requests right by the candidate only, 10 by the champion only")
    assert decision.reasons[1].endswith("not less often right than the champion")
    tags = evidence_tags(decision)
    assert tags[TAG_ROLLOUT_MCNEMAR] == decision.reasons[1].split(": not less")[0]
    assert '"mcnemar_p"' in tags["mlops.rollout.evidence"]


def test_mcnemar_waits_for_the_minimum_of_labelled_rows_too() -> None:
    evidence = _evidence(_disagreeing_log(b=60, c=5, agree=50), "classification", "accuracy")
    assert evidence.rows == 115 and evidence.mcnemar_p < 1e-6
    assert decide(evidence, RULES, SINCE, SINCE + timedelta(hours=1)).action == "wait"


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


CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CLASSIFIERS = sorted(p.stem for p in CONFIGS.glob("*.yaml") if "task: classification" in p.read_text())


def test_the_classifiers_are_found() -> None:
    assert {"breast_cancer", "flight_delays"} <= set(CLASSIFIERS)


@pytest.mark.parametrize("config", CLASSIFIERS)
def test_mcnemar_on_a_real_prediction_log_of_each_classification_use_case(config: str, tmp_path: Any) -> None:
    """Through the log's own writer and reader: labels come back as floats, predictions as logged, and the
    pairs still count right (what `judge_rollout` reads for every classifier in configs/)."""
    from mlops.config import load_use_case
    from mlops.predictionlog.frames import PredictionBatch
    from mlops.predictionlog.labels import write_labels
    from mlops.predictionlog.predictions import append_predictions
    from mlops.rollout.apply import Rollout, judge_rollout

    use_case = load_use_case(CONFIGS / f"{config}.yaml")
    log, labels = str(tmp_path / "log"), str(tmp_path / "labels")
    b, c, agree = 25, 60, 215
    n = b + c + agree
    truth = np.tile([0, 1], n // 2 + 1)[:n]
    champion = np.where(np.arange(n) < b + c, np.where(np.arange(n) < b, truth, 1 - truth), truth)
    shadow = np.where(np.arange(n) < b + c, np.where(np.arange(n) < b, 1 - truth, truth), truth)
    ids = [f"{config}-{i}" for i in range(n)]
    times = [datetime(2026, 5, 1, 12) + timedelta(seconds=i) for i in range(n)]
    batches = [
        PredictionBatch(
            use_case.name,
            use_case.model_name,
            version,
            "online",
            ids,
            times,
            pred.tolist(),
            {"x": list(range(n))},
            role=role,
            classes=[0, 1],
            probabilities=[[1.0 - p, float(p)] for p in pred],
        )
        for role, version, pred in (("champion", "1", champion), ("shadow", "2", shadow))
    ]
    assert append_predictions(use_case, batches, uri=log) == 2 * n
    assert write_labels(use_case, ids, truth.tolist(), uri=labels, log_uri=log).written == n

    rollout = Rollout(use_case.name, use_case.model_name, "shadow", "2", "2026-05-01T12:00:00", "1")
    decision = judge_rollout(use_case, rollout, datetime(2026, 5, 2), uri=log, labels_uri=labels)
    evidence = decision.evidence
    assert (evidence.rows, evidence.champion_only_right, evidence.candidate_only_right) == (n, b, c)
    assert evidence.mcnemar_p == pytest.approx(_exact_mcnemar(b, c))
