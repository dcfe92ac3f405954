"""The reference scored by the champion: the window's columns on the training data, so the
prediction drift compares the model's probabilities with its own probabilities.

A real fitted scikit-learn pipeline scores real frames; MLflow is not involved (the DAG
test loads the champion from a real server).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops.config import UseCase, find_use_case
from mlops.monitoring.assessment import scored_reference
from mlops.monitoring.reference import score_reference
from mlops.monitoring.run import run_monitoring
from mlops.naming import proba_column

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FLIGHTS = find_use_case("flight_delays", PROJECT_ROOT / "configs")  # binary, target "delayed"
BIKE = find_use_case("bike_sharing", PROJECT_ROOT / "configs")  # regression


def flights(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Flight features and a `delayed` target that depends on the weather; `shift` makes it wetter and colder."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "dep_hour": rng.integers(5, 23, rows),
            "day_of_week": rng.integers(0, 7, rows),
            "distance": rng.integers(200, 2500, rows),
            "seats": rng.integers(50, 200, rows),
            "temperature": rng.normal(5 - 15 * shift, 5, rows),
            "wind_speed": rng.gamma(2, 3, rows),
            "precipitation": rng.exponential(1 + 4 * shift, rows),
            "visibility": rng.uniform(5, 10, rows),
            "carrier": rng.choice(["AA", "DL", "UA"], rows),
            "origin": rng.choice(["JFK", "ORD"], rows),
        }
    )
    logit = 0.8 * frame["precipitation"] - 0.15 * frame["temperature"] + (frame["carrier"] == "UA") - 1.0
    frame[FLIGHTS.target] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def pipeline(use_case: UseCase, estimator: object) -> Pipeline:
    features = use_case.features
    preprocess = ColumnTransformer(
        [
            ("numeric", StandardScaler(), list(features.numeric)),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(features.categorical)),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def fitted(use_case: UseCase, frame: pd.DataFrame, estimator: object) -> Pipeline:
    model = pipeline(use_case, estimator)
    model.fit(frame[list(use_case.features.all)], frame[use_case.target])
    return model


def logged(model: Pipeline, frame: pd.DataFrame, use_case: UseCase) -> pd.DataFrame:
    """A prediction-log window: the features, the class, `proba__<class>` and the label, as serving writes them."""
    window = frame[list(use_case.features.all)].copy()
    window["prediction"] = model.predict(window)
    for j, label in enumerate(model.classes_):
        window[proba_column(label)] = model.predict_proba(frame[list(use_case.features.all)])[:, j]
    window["label"] = frame[use_case.target].astype(float)
    return window


@pytest.fixture(scope="module")
def champion() -> Pipeline:
    return fitted(FLIGHTS, flights(2000, seed=1), LogisticRegression(max_iter=500))


def test_the_reference_gets_the_champions_class_and_probabilities(champion: Pipeline) -> None:
    reference = flights(1500, seed=2)
    scored = score_reference(champion, reference, FLIGHTS)
    features = reference[list(FLIGHTS.features.all)]
    proba = champion.predict_proba(features)
    assert list(champion.classes_) == [0, 1]
    assert [c for c in scored.columns if c.startswith("proba__")] == ["proba__0", "proba__1"]
    np.testing.assert_allclose(scored["proba__0"], proba[:, 0])
    np.testing.assert_allclose(scored["proba__1"], proba[:, 1])
    np.testing.assert_array_equal(scored["prediction"], champion.predict(features))
    assert scored["prediction"].dtype == np.int64  # the class as the model returns it
    # The reference itself is left as it was: the caller's frame gains no columns.
    assert "prediction" not in reference.columns
    pd.testing.assert_frame_equal(scored[reference.columns], reference)


def test_prediction_drift_is_computed_on_the_probabilities_of_both_sides(champion: Pipeline, tmp_path: Path) -> None:
    reference = score_reference(champion, flights(1500, seed=3), FLIGHTS)
    steady = run_monitoring(
        FLIGHTS, logged(champion, flights(1200, seed=4), FLIGHTS), reference, "steady", reports_root=tmp_path
    )
    assert steady.prediction_reference == "prediction" and steady.prediction_drift_on == "proba__1"
    assert steady.prediction_drift is not None and steady.prediction_drift.kind == "numeric"
    assert not steady.prediction_drift.drifted
    assert not any("reference holds no" in n for n in steady.notes)

    # Wetter, colder days: the champion grows more sure of delays, which only its probabilities show in full.
    wet = run_monitoring(
        FLIGHTS, logged(champion, flights(1200, seed=5, shift=1.0), FLIGHTS), reference, "wet", reports_root=tmp_path
    )
    assert wet.prediction_reference == "prediction" and wet.prediction_drift_on == "proba__1"
    assert wet.prediction_drift is not None and wet.prediction_drift.drifted


def test_a_large_reference_is_scored_on_a_seeded_sample(champion: Pipeline, tmp_path: Path) -> None:
    reference = flights(900, seed=6)
    scored = score_reference(champion, reference, FLIGHTS, max_rows=300)
    again = score_reference(champion, reference, FLIGHTS, max_rows=300)
    rows = scored["proba__1"].notna()
    assert rows.sum() == 300 and scored["prediction"].notna().sum() == 300
    pd.testing.assert_series_equal(rows, again["proba__1"].notna())  # the same rows every run
    sample = reference[rows]
    np.testing.assert_allclose(
        scored.loc[rows, "proba__1"], champion.predict_proba(sample[list(FLIGHTS.features.all)])[:, 1]
    )
    # The unscored rows are missing, which the drift tests drop: prediction drift uses the sample.
    summary = run_monitoring(
        FLIGHTS, logged(champion, flights(1200, seed=7), FLIGHTS), scored, "sampled", reports_root=tmp_path
    )
    assert summary.prediction_drift_on == "proba__1" and summary.prediction_drift is not None
    assert not summary.prediction_drift.drifted


def test_a_multiclass_reference_has_a_column_per_class_in_classes_order(tmp_path: Path) -> None:
    frame = flights(2400, seed=8)
    bins = pd.cut(frame["precipitation"], [-1, 0.5, 1.5, np.inf], labels=["light", "dry", "wet"])
    frame[FLIGHTS.target] = bins.astype(str)  # str classes, sorted by sklearn: dry, light, wet
    model = fitted(FLIGHTS, frame.iloc[:1200], LogisticRegression(max_iter=1000))
    scored = score_reference(model, frame.iloc[1200:], FLIGHTS)
    assert [c for c in scored.columns if c.startswith("proba__")] == ["proba__dry", "proba__light", "proba__wet"]
    np.testing.assert_allclose(
        scored[["proba__dry", "proba__light", "proba__wet"]].to_numpy(),
        model.predict_proba(frame.iloc[1200:][list(FLIGHTS.features.all)]),
    )
    assert set(scored["prediction"]) <= {"dry", "light", "wet"}
    window = logged(model, flights(1200, seed=9), FLIGHTS).drop(columns=["label"])
    summary = run_monitoring(FLIGHTS, window, scored, "multiclass", reports_root=tmp_path)
    assert summary.prediction_reference == "prediction" and summary.prediction_drift_on == "max_proba"


def test_a_regression_reference_gets_the_predicted_value_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    frame = pd.DataFrame({c: rng.normal(0.5, 0.2, 800) for c in BIKE.features.numeric})
    for c in BIKE.features.categorical:
        frame[c] = rng.choice(["a", "b"], 800)
    frame[BIKE.target] = 100 * frame[BIKE.features.numeric[0]] + rng.normal(0, 5, 800)
    model = fitted(BIKE, frame, LinearRegression())
    scored = score_reference(model, frame, BIKE)
    assert not [c for c in scored.columns if c.startswith("proba__")]
    np.testing.assert_allclose(scored["prediction"], model.predict(frame[list(BIKE.features.all)]))


def test_a_champion_that_cannot_be_loaded_leaves_the_reference_and_says_why(tmp_path: Path) -> None:
    reference = flights(300, seed=11)
    # A real (empty) registry: the version the champion alias named is gone.
    server = f"sqlite:///{tmp_path / 'mlflow.db'}"
    same, notes = scored_reference(FLIGHTS, FLIGHTS.model_name, "7", reference, tracking_uri=server)
    assert same is reference
    [note] = notes
    assert note.startswith("the reference was not scored by champion v7 (MlflowException: ")
    assert note.endswith("prediction drift compares the predicted class with the training target")
    summary = run_monitoring(FLIGHTS, flights(600, seed=12), same, "unloaded", reports_root=tmp_path, notes=notes)
    assert summary.notes[0] == note
