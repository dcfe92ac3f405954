"""Candidate grids, pipelines on both use cases, metrics and determinism, without MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.config import CLASSIFICATION_METRICS, REGRESSION_METRICS, UseCase, find_use_case
from mlops.training.candidates import (
    CandidateSpec,
    FitResult,
    build_pipeline,
    candidate_key,
    compute_metrics,
    diagnostic_figures,
    expand_candidates,
    feature_importance,
    fit_candidate,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def split(df: pd.DataFrame, fraction: float = 0.25) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A plain ordered split, enough for the training logic (mlops.ingestion owns the real rule)."""
    cut = int(len(df) * (1 - fraction))
    return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True)


@pytest.fixture(scope="module")
def bike() -> UseCase:
    return find_use_case("bike_sharing", PROJECT_ROOT / "configs")


@pytest.fixture(scope="module")
def cancer() -> UseCase:
    return find_use_case("breast_cancer", PROJECT_ROOT / "configs")


@pytest.fixture(scope="module")
def bike_df() -> pd.DataFrame:
    # Raw source columns unchanged: strings for categoricals (with missing values), floats, int target.
    return pd.read_csv(PROJECT_ROOT / "data/raw/bike_sharing_hourly.csv", nrows=400)


@pytest.fixture(scope="module")
def cancer_df() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    df = bunch.data.copy()
    df.columns = [c.replace(" ", "_") for c in df.columns]
    df["target"] = bunch.target.to_numpy()
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)


def spec(use_case: UseCase, key_prefix: str) -> CandidateSpec:
    return next(s for s in expand_candidates(use_case) if s.key.startswith(key_prefix))


# ----------------------------------------------------------------------------- grid


def test_expand_candidates_is_every_combination_with_stable_keys(bike: UseCase, cancer: UseCase) -> None:
    keys = [s.key for s in expand_candidates(bike)]
    assert keys == [
        "ridge-alpha=1.0",
        "ridge-alpha=10.0",
        "random_forest-max_depth=12,min_samples_leaf=2,n_estimators=60",
        "gradient_boosting-learning_rate=0.1,max_iter=200",
    ]
    assert [s.key for s in expand_candidates(cancer)] == [
        "logistic_regression-C=0.1,max_iter=1000",
        "logistic_regression-C=1.0,max_iter=1000",
        "random_forest-max_depth=6,n_estimators=100",
    ]
    first = expand_candidates(bike)[0]
    assert first.params == {"alpha": 1.0} and first.estimator == "sklearn.linear_model.Ridge"
    assert CandidateSpec.from_dict(first.to_dict()) == first


def test_grid_with_two_lists_gives_the_cartesian_product(bike: UseCase) -> None:
    raw = bike.model_dump()
    raw["candidates"] = [
        {"name": "rf", "estimator": "sklearn.ensemble.RandomForestRegressor",
         "params": {"n_estimators": [5, 10], "max_depth": [2, 3, None]}},
        {"name": "plain", "estimator": "sklearn.linear_model.LinearRegression"},
    ]  # fmt: skip
    specs = expand_candidates(UseCase.model_validate(raw))
    assert len(specs) == 7
    assert len({s.key for s in specs}) == 7
    assert specs[-1].key == "plain" and specs[-1].params == {}
    assert "rf-max_depth=None,n_estimators=5" in [s.key for s in specs]


def test_candidate_key_does_not_depend_on_parameter_order() -> None:
    assert candidate_key("rf", {"b": 1, "a": 2.0}) == candidate_key("rf", {"a": 2.0, "b": 1}) == "rf-a=2.0,b=1"


def test_duplicate_grid_values_are_rejected(bike: UseCase) -> None:
    raw = bike.model_dump()
    raw["candidates"] = [{"name": "r", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": [1.0, 1.0]}}]
    with pytest.raises(ValueError, match="repeats keys"):
        expand_candidates(UseCase.model_validate(raw))


# ----------------------------------------------------------------------------- pipelines


def test_pipeline_preprocesses_both_kinds_and_seeds_the_estimator(bike: UseCase) -> None:
    pipe = build_pipeline(bike, spec(bike, "random_forest"))
    assert pipe.named_steps["model"].random_state == bike.training.seed
    transformers = {name: cols for name, _, cols in pipe.named_steps["preprocess"].transformers}
    assert transformers["numeric"] == bike.features.numeric
    assert transformers["categorical"] == bike.features.categorical
    onehot = pipe.named_steps["preprocess"].transformers[1][1].named_steps["onehot"]
    assert onehot.handle_unknown == "ignore"


def test_bike_pipeline_handles_missing_and_unseen_categories(bike: UseCase, bike_df: pd.DataFrame) -> None:
    train, holdout = split(bike_df)
    assert train["weekday"].isna().any() or train["weathersit"].isna().any()  # the raw data has gaps
    result = fit_candidate(bike, spec(bike, "ridge-alpha=1.0"), train, holdout)
    assert isinstance(result, FitResult)
    assert set(result.metrics) == set(REGRESSION_METRICS)
    assert result.n_train == len(train) and result.n_holdout == len(holdout)
    odd = holdout.head(3).copy()
    odd.loc[:, "weathersit"] = ["Volcanic ash", None, "Clear"]
    odd.loc[:, "temp"] = [np.nan, 10.0, 20.0]
    assert np.isfinite(result.pipeline.predict(odd[bike.features.all])).all()
    assert result.to_dict()["spec"]["key"] == "ridge-alpha=1.0" and "pipeline" not in result.to_dict()


def test_cancer_pipeline_fits_every_candidate(cancer: UseCase, cancer_df: pd.DataFrame) -> None:
    train, holdout = split(cancer_df)
    for s in expand_candidates(cancer):
        result = fit_candidate(cancer, s, train, holdout)
        assert set(result.metrics) == set(CLASSIFICATION_METRICS)
        assert result.metrics["roc_auc"] > 0.9, s.key


def test_missing_feature_column_is_named(bike: UseCase, bike_df: pd.DataFrame) -> None:
    train, holdout = split(bike_df.drop(columns=["hum"]))
    with pytest.raises(ValueError, match=r"lacks columns \['hum'\]"):
        fit_candidate(bike, spec(bike, "ridge-alpha=1.0"), train, holdout)


def test_estimator_rejecting_params_says_which(bike: UseCase, bike_df: pd.DataFrame) -> None:
    bad = CandidateSpec("ridge", "sklearn.linear_model.Ridge", {"depth": 3}, "ridge-depth=3")
    with pytest.raises(ValueError, match="rejects the params"):
        build_pipeline(bike, bad)


def test_two_fits_give_identical_metrics(bike: UseCase, bike_df: pd.DataFrame) -> None:
    train, holdout = split(bike_df)
    s = spec(bike, "random_forest")
    small = CandidateSpec(s.name, s.estimator, {**s.params, "n_estimators": 8}, s.key + "-small")
    first = fit_candidate(bike, small, train, holdout).metrics
    second = fit_candidate(bike, small, train, holdout).metrics
    assert first == second


# ----------------------------------------------------------------------------- metrics


def test_regression_metrics_values_and_directions() -> None:
    m = compute_metrics("regression", [10, 20, 30], [12, 18, 30])
    assert m["rmse"] == pytest.approx(math.sqrt(8 / 3))
    assert m["mae"] == pytest.approx(4 / 3)
    assert m["mape"] == pytest.approx((0.2 + 0.1 + 0) / 3)
    assert m["r2"] == pytest.approx(1 - 8 / 200)
    perfect = compute_metrics("regression", [1, 2, 3], [1, 2, 3])
    assert perfect["rmse"] == 0 and perfect["r2"] == 1


def test_binary_classification_metrics() -> None:
    y = [0, 0, 1, 1]
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    m = compute_metrics("classification", y, [0, 1, 1, 1], proba, labels=[0, 1])
    assert m["accuracy"] == 0.75
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0
    assert m["f1"] == pytest.approx(0.8)
    assert m["roc_auc"] == 1.0
    assert 0 < m["log_loss"] < 1


def test_multiclass_metrics_are_macro_and_safe() -> None:
    y = ["a", "b", "c", "a", "b", "c"]
    pred = ["a", "b", "b", "a", "b", "c"]
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.5, 0.4],
                      [0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])  # fmt: skip
    m = compute_metrics("classification", y, pred, proba, labels=["a", "b", "c"])
    assert set(m) == set(CLASSIFICATION_METRICS)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["roc_auc"] == 1.0


def test_undefined_metrics_are_left_out_not_nan() -> None:
    # A one-class holdout has no ROC AUC; leaving it out lets the gate say so instead of comparing NaN.
    m = compute_metrics("classification", [1, 1, 1], [1, 0, 1], np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]))
    assert "roc_auc" not in m and "log_loss" not in m
    assert all(math.isfinite(v) for v in m.values())
    assert "accuracy" in compute_metrics("classification", [0, 1], [0, 1])  # no probabilities: label metrics only


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="empty holdout"):
        compute_metrics("regression", [], [])
    with pytest.raises(ValueError, match="unknown task"):
        compute_metrics("ranking", [1], [1])


# ----------------------------------------------------------------------------- plots


def test_plots_and_importance(bike: UseCase, cancer: UseCase, bike_df: pd.DataFrame, cancer_df: pd.DataFrame) -> None:
    train, holdout = split(bike_df)
    fitted = fit_candidate(bike, spec(bike, "ridge-alpha=1.0"), train, holdout).pipeline
    importance = feature_importance(bike, fitted, holdout, max_rows=50)
    assert set(importance) == set(bike.features.all)
    assert list(importance.values()) == sorted(importance.values(), reverse=True)
    assert set(diagnostic_figures(bike, fitted, holdout)) == {"predicted_vs_actual.png", "feature_importance.png"}

    ctrain, choldout = split(cancer_df)
    cfit = fit_candidate(cancer, spec(cancer, "logistic_regression-C=0.1"), ctrain, choldout).pipeline
    assert set(diagnostic_figures(cancer, cfit, choldout)) == {"confusion_matrix.png", "feature_importance.png"}
