"""The promotion gate: thresholds, the allowed regression against the champion, the first model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.config import METRIC_DIRECTIONS, UseCase, find_use_case
from mlops.evaluation.gate import GateDecision, check_gate, fmt, is_better, relative_loss

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def bike() -> UseCase:
    # rmse <= 120, r2 >= 0.5, at most 5 % worse than the champion on rmse.
    return find_use_case("bike_sharing", CONFIGS)


@pytest.fixture(scope="module")
def cancer() -> UseCase:
    # f1 >= 0.9, roc_auc >= 0.95, at most 2 % worse on f1.
    return find_use_case("breast_cancer", CONFIGS)


GOOD = {"rmse": 95.0, "mae": 60.0, "r2": 0.7, "mape": 0.3}


def test_first_model_passes_on_thresholds_alone(bike: UseCase) -> None:
    decision = check_gate(bike, GOOD, None)
    assert decision.passed
    assert decision.champion_version is None and decision.champion_metrics is None
    assert "no champion yet: judged on the absolute thresholds only" in decision.reasons
    assert "rmse 95 <= max 120" in decision.reasons and "r2 0.7 >= min 0.5" in decision.reasons


def test_first_model_below_thresholds_fails_with_every_reason(bike: UseCase) -> None:
    decision = check_gate(bike, {**GOOD, "rmse": 130.2, "r2": 0.41}, None)
    assert not decision.passed
    assert decision.reasons == ["rmse 130.2 > max 120", "r2 0.41 < min 0.5"]
    assert "no champion yet: judged on the absolute thresholds only" in decision.checks


def test_better_than_champion_passes(bike: UseCase) -> None:
    decision = check_gate(bike, GOOD, {**GOOD, "rmse": 100.0}, champion_version="3")
    assert decision.passed
    assert "rmse 95 is 5.0% better than champion v3 (100)" in decision.reasons


def test_worse_within_margin_passes(bike: UseCase) -> None:
    decision = check_gate(bike, {**GOOD, "rmse": 95.0}, {**GOOD, "rmse": 91.4}, champion_version="3")
    assert decision.passed
    assert "rmse 95 is 3.9% worse than champion v3 (91.4); allowed 5.0%" in decision.reasons


def test_worse_beyond_margin_fails_with_the_numbers(bike: UseCase) -> None:
    decision = check_gate(bike, {**GOOD, "rmse": 98.1}, {**GOOD, "rmse": 91.4}, champion_version="3")
    assert not decision.passed
    assert decision.reasons == ["rmse 98.1 is 7.3% worse than champion v3 (91.4); allowed 5.0%"]
    assert decision.champion_metrics == {**GOOD, "rmse": 91.4}


def test_margin_on_a_maximised_metric(cancer: UseCase) -> None:
    base = {"f1": 0.96, "roc_auc": 0.99, "accuracy": 0.95}
    assert check_gate(cancer, {**base, "f1": 0.95}, base, champion_version="1").passed  # 1.0 % worse
    failed = check_gate(cancer, {**base, "f1": 0.93}, base, champion_version="1")
    assert not failed.passed
    assert failed.reasons == ["f1 0.93 is 3.1% worse than champion v1 (0.96); allowed 2.0%"]


def test_thresholds_and_regression_fail_together(bike: UseCase) -> None:
    decision = check_gate(bike, {**GOOD, "rmse": 130.0}, {**GOOD, "rmse": 90.0}, champion_version="2")
    assert not decision.passed
    assert len(decision.reasons) == 2
    assert decision.reasons[0] == "rmse 130 > max 120"
    assert decision.reasons[1].startswith("rmse 130 is 44.4% worse than champion v2 (90)")


def test_equal_to_champion_passes(bike: UseCase) -> None:
    # A re-run compares the new champion with itself: it must not fail on float noise.
    decision = check_gate(bike, GOOD, dict(GOOD), champion_version="4")
    assert decision.passed and "rmse 95 equals champion v4 (95)" in decision.reasons


def test_unscorable_champion_fails_clearly(bike: UseCase) -> None:
    decision = check_gate(bike, GOOD, None, champion_version="5", champion_error="MlflowException: missing column hum")
    assert not decision.passed
    assert decision.champion_error == "MlflowException: missing column hum"
    (reason,) = decision.reasons
    assert "champion v5 could not be scored on this holdout (MlflowException: missing column hum)" in reason
    assert "not promoted automatically" in reason and "rollback" in reason


def test_missing_metric_fails_instead_of_passing(cancer: UseCase) -> None:
    decision = check_gate(cancer, {"f1": 0.97, "accuracy": 0.97}, None)  # no roc_auc on a one-class holdout
    assert not decision.passed
    assert decision.reasons == ["roc_auc is missing from the candidate's metrics (undefined on this holdout?)"]


def test_champion_without_the_primary_metric_is_not_comparable(cancer: UseCase) -> None:
    good = {"f1": 0.97, "roc_auc": 0.99}
    decision = check_gate(cancer, good, {"roc_auc": 0.98}, champion_version="2")
    assert not decision.passed and "champion v2 has no f1" in decision.reasons[0]


def test_zero_regression_allowed(bike: UseCase) -> None:
    strict = UseCase.model_validate({**bike.model_dump(), "gate": {**bike.gate.model_dump(), "max_regression": 0.0}})
    assert not check_gate(strict, {**GOOD, "rmse": 95.1}, GOOD, champion_version="1").passed
    assert check_gate(strict, GOOD, GOOD, champion_version="1").passed


def test_decision_round_trips_through_xcom(bike: UseCase) -> None:
    import json

    decision = check_gate(bike, GOOD, {**GOOD, "rmse": 94.0}, champion_version="3", candidate_key="ridge-alpha=1.0")
    again = GateDecision.from_dict(json.loads(json.dumps(decision.to_dict())))
    assert again == decision
    assert decision.summary.startswith("passed: ")


def test_helpers_follow_metric_directions() -> None:
    for metric, direction in METRIC_DIRECTIONS.items():
        low, high = 1.0, 2.0
        assert is_better(metric, low, high) == (direction == "min")
        assert (relative_loss(metric, high, low) > 0) == (direction == "min")
    assert relative_loss("rmse", 0.0, 0.0) == 0.0
    assert relative_loss("rmse", 1.0, 0.0) == float("inf")
    assert relative_loss("r2", -0.2, -0.1) == pytest.approx(1.0)  # negative baseline: magnitude keeps direction
    assert fmt(130.2) == "130.2" and fmt(120.0) == "120" and fmt(12345.67) == "12345.7"


# --------------------------------------------------------------------------- slices


def _judging_slices(bike: UseCase, margin: float | None) -> UseCase:
    gate = {**bike.gate.model_dump(), "slices": ["season", "weathersit"], "max_slice_regression": margin}
    return UseCase.model_validate({**bike.model_dump(), "gate": gate})


CHAMPION_SLICES = {"season": {"spring": 50.0, "summer": 80.0}, "weathersit": {"Clear": 60.0, "Rain": 100.0}}


def test_a_slice_worse_beyond_the_margin_fails_the_gate_naming_it(bike: UseCase) -> None:
    uc = _judging_slices(bike, 0.10)
    # Better on average, and on every slice but rainy hours: 30 % worse there.
    candidate = {"season": {"spring": 45.0, "summer": 70.0}, "weathersit": {"Clear": 50.0, "Rain": 130.0}}
    decision = check_gate(uc, GOOD, {**GOOD, "rmse": 99.0}, champion_version="4",
                          candidate_slices=candidate, champion_slices=CHAMPION_SLICES)  # fmt: skip
    assert not decision.passed
    assert decision.reasons == [
        "worst slice weathersit=Rain: rmse 130 vs champion v4 100 (+30.0%) beyond allowed 10.0%"
    ]
    # The season's worst slice is better than the champion's: recorded, not a reason.
    assert "worst slice season=spring: rmse 45 vs champion v4 50 (-10.0%) within allowed 10.0%" in decision.checks
    assert decision.candidate_slices == candidate and decision.champion_slices == CHAMPION_SLICES


def test_slices_within_the_margin_pass_and_unjudged_slices_are_only_recorded(bike: UseCase) -> None:
    candidate = {"season": {"spring": 52.0, "summer": 80.0}, "weathersit": {"Clear": 60.0, "Rain": 105.0}}
    judged = check_gate(_judging_slices(bike, 0.10), GOOD, GOOD, champion_version="4",
                        candidate_slices=candidate, champion_slices=CHAMPION_SLICES)  # fmt: skip
    assert judged.passed and any("weathersit=Rain" in c and "within allowed 10.0%" in c for c in judged.checks)
    worse = {"season": {"spring": 500.0}, "weathersit": {"Rain": 900.0}}
    unjudged = check_gate(_judging_slices(bike, None), GOOD, GOOD, champion_version="4",
                          candidate_slices=worse, champion_slices=CHAMPION_SLICES)  # fmt: skip
    assert unjudged.passed
    assert any(c.endswith("not judged: gate.max_slice_regression is unset)") for c in unjudged.checks)


def test_slices_are_not_compared_without_a_comparable_champion(bike: UseCase) -> None:
    uc = _judging_slices(bike, 0.0)
    worse = {"season": {"spring": 500.0}, "weathersit": {"Rain": 900.0}}
    first = check_gate(uc, GOOD, None, candidate_slices=worse, champion_slices=None)
    assert first.passed and not any("slice" in c for c in first.checks)
    # Values only one model was scored on say nothing about a regression.
    disjoint = check_gate(uc, GOOD, GOOD, champion_version="2",
                          candidate_slices={"season": {"winter": 9e9}, "weathersit": {}},
                          champion_slices=CHAMPION_SLICES)  # fmt: skip
    assert disjoint.passed
    assert "slices of season: none scored for both candidate and champion v2" in disjoint.checks


def test_score_slices_scores_each_value_as_the_holdout_is_scored(bike: UseCase) -> None:
    import numpy as np
    import pandas as pd

    from mlops.evaluation.slices import score_slices
    from mlops.training.candidates import compute_metrics

    uc = _judging_slices(bike, None)
    holdout = pd.DataFrame({
        "season": ["spring", "spring", "summer", "summer", None],
        "weathersit": ["Clear", "Rain", "Clear", "Clear", "Clear"],
        "cnt": [10.0, 20.0, 30.0, 40.0, 50.0],
    })  # fmt: skip
    predictions = np.array([12.0, 18.0, 33.0, 36.0, 50.0])
    slices = score_slices(uc, holdout, predictions)
    assert slices.rows == {"season": {"spring": 2, "summer": 2, "missing": 1},
                           "weathersit": {"Clear": 4, "Rain": 1}}  # fmt: skip
    spring = compute_metrics("regression", [10.0, 20.0], [12.0, 18.0])["rmse"]
    assert slices.scores["season"]["spring"] == spring and slices.scores["season"]["missing"] == 0.0
    assert slices.scores["weathersit"]["Rain"] == 2.0
