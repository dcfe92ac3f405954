"""The array path predicts exactly what Pipeline.predict does, or refuses to compile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from mlops.config import load_all
from mlops.data.ingestion import load_source
from mlops.serving.fastpath import NotArrayReady, compile_array_predictor
from mlops.training.candidates import build_pipeline, expand_candidates, features_and_target

USE_CASES = {uc.name: uc for uc in load_all()}


def _split(name: str) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    uc = USE_CASES[name]
    features, target = features_and_target(uc, load_source(uc))
    features = features.sample(frac=1.0, random_state=3)
    target = target.loc[features.index]
    fit_rows = min(2000, len(features) * 2 // 3)
    later = features.iloc[fit_rows : fit_rows + 300].copy()
    # What the service must also get right: missing values and a category never seen in training.
    for column in uc.features.categorical:
        later.loc[later.index[:10], column] = np.nan
        later.loc[later.index[10:20], column] = "never-seen"
    for column in uc.features.numeric:
        later.loc[later.index[20:30], column] = np.nan
    return features.iloc[:fit_rows], target.iloc[:fit_rows], later


@pytest.mark.parametrize(
    ("name", "candidate"),
    [(name, spec) for name, uc in USE_CASES.items() for spec in expand_candidates(uc)],
    ids=lambda v: v if isinstance(v, str) else v.key,
)
def test_array_path_predicts_what_the_pipeline_predicts(name: str, candidate) -> None:
    train_x, train_y, later = _split(name)
    pipeline = build_pipeline(USE_CASES[name], candidate).fit(train_x, train_y)

    predict = compile_array_predictor(pipeline, train_x.head(5))

    expected = pipeline.predict(later)
    got = predict(later)
    if USE_CASES[name].task == "classification":
        assert np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    # Batch scoring may hand over its columns in another order, with extra ones.
    shuffled = later.assign(unused=1.0)[[*reversed(later.columns), "unused"]]
    np.testing.assert_array_equal(predict(shuffled), got)
    np.testing.assert_array_equal(predict(later.head(1)), expected[:1])


def _numeric_frame(rows: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    return frame, (frame["a"] > 0).to_numpy().astype(int)


def test_a_bare_estimator_is_refused() -> None:
    frame, labels = _numeric_frame()
    with pytest.raises(NotArrayReady, match="not a Pipeline"):
        compile_array_predictor(LogisticRegression().fit(frame, labels), frame)


def test_sparse_column_blocks_are_refused() -> None:
    frame, labels = _numeric_frame()
    frame["c"] = np.where(labels == 1, "x", "y")
    sparse = ColumnTransformer([("c", OneHotEncoder(), ["c"])], sparse_threshold=1.0)
    pipeline = Pipeline([("pre", sparse), ("model", LogisticRegression())]).fit(frame, labels)
    with pytest.raises(NotArrayReady, match="sparse"):
        compile_array_predictor(pipeline, frame)


def test_a_step_that_needs_a_dataframe_is_refused() -> None:
    frame, labels = _numeric_frame()
    needs_pandas = FunctionTransformer(lambda x: x.iloc[:, :1])
    pipeline = Pipeline(
        [("pre", ColumnTransformer([("ab", needs_pandas, ["a", "b"])])), ("model", LogisticRegression())]
    ).fit(frame, labels)
    with pytest.raises(NotArrayReady, match="fails on the probe rows"):
        compile_array_predictor(pipeline, frame)


def test_a_step_that_behaves_differently_on_arrays_is_refused() -> None:
    frame, labels = _numeric_frame()
    # Flips the sign only when it gets a DataFrame: the two paths disagree.
    two_faced = FunctionTransformer(lambda x: x if isinstance(x, np.ndarray) else -x)
    pipeline = Pipeline(
        [("pre", ColumnTransformer([("ab", two_faced, ["a", "b"])])), ("model", LogisticRegression())]
    ).fit(frame, labels)
    with pytest.raises(NotArrayReady, match="differ"):
        compile_array_predictor(pipeline, frame)
