"""Candidate models: expand the config grid, build and fit scikit-learn pipelines, score them.

Pure logic, no MLflow: `mlops.training.runs` logs what these functions return. Only
tasks import this module, so scikit-learn is imported at module level.
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from mlops.config import CLASSIFICATION_METRICS, REGRESSION_METRICS, UseCase, resolve_use_case

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Permutation importance costs (features x repeats) predictions; a bounded sample
# keeps it to seconds while the ranking stays stable.
IMPORTANCE_MAX_ROWS = 500
IMPORTANCE_REPEATS = 5

# Candidates run in parallel as one task each, so parallelism comes from tasks.
# OpenMP/BLAS threads inside each task oversubscribe the cores and spin-wait:
# HistGradientBoosting on 480 bike rows took 28 s with 2 threads on a busy
# 2-core host and 0.7 s with 1.
THREADS_PER_TASK = 1


@dataclass(frozen=True)
class CandidateSpec:
    """One point of a candidate's hyperparameter grid."""

    name: str
    estimator: str
    params: dict[str, Any]
    key: str
    """Short stable id such as `ridge-alpha=1.0`: run name, idempotency key, map-index label."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateSpec:
        return cls(name=data["name"], estimator=data["estimator"], params=dict(data["params"]), key=data["key"])


@dataclass(frozen=True)
class FitResult:
    """A fitted pipeline and its holdout metrics; `to_dict` leaves out the pipeline."""

    spec: CandidateSpec
    pipeline: Pipeline = field(repr=False)
    metrics: dict[str, float]
    n_train: int
    n_holdout: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "metrics": dict(self.metrics),
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
        }


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return str(value)


def candidate_key(name: str, params: dict[str, Any]) -> str:
    """`name-p1=v1,p2=v2` with parameters sorted, so the key does not depend on YAML order."""
    if not params:
        return name
    return name + "-" + ",".join(f"{k}={_format_value(params[k])}" for k in sorted(params))


def expand_candidates(use_case: UseCase | str) -> list[CandidateSpec]:
    """Every combination of every candidate's parameter grid, in config order."""
    uc = resolve_use_case(use_case)
    specs: list[CandidateSpec] = []
    for candidate in uc.candidates:
        names = sorted(candidate.params)
        for values in itertools.product(*(candidate.params[n] for n in names)):
            params = dict(zip(names, values, strict=True))
            specs.append(
                CandidateSpec(candidate.name, candidate.estimator, params, candidate_key(candidate.name, params))
            )
    keys = [s.key for s in specs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"use case {uc.name!r}: candidate grid repeats keys {duplicates}; remove duplicate values")
    return specs


def _estimator(use_case: UseCase, spec: CandidateSpec) -> Any:
    module_name, _, class_name = spec.estimator.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    params = dict(spec.params)
    estimator = cls()
    # Same data + config must give the same metrics, so every seedable estimator is seeded.
    if "random_state" in estimator.get_params() and "random_state" not in params:
        params["random_state"] = use_case.training.seed
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"candidate {spec.key!r}: {spec.estimator} rejects the params {spec.params}: {exc}") from exc


def build_pipeline(use_case: UseCase | str, spec: CandidateSpec) -> Pipeline:
    """Preprocessing (numeric impute+scale, categorical impute+one-hot) followed by the estimator."""
    uc = resolve_use_case(use_case)
    transformers: list[tuple[str, Any, list[str]]] = []
    if uc.features.numeric:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("numeric", numeric, list(uc.features.numeric)))
    if uc.features.categorical:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                # Dense output: some estimators (HistGradientBoosting) refuse sparse input.
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        transformers.append(("categorical", categorical, list(uc.features.categorical)))
    preprocess = ColumnTransformer(transformers, remainder="drop")
    return Pipeline([("preprocess", preprocess), ("model", _estimator(uc, spec))])


def features_and_target(use_case: UseCase, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The model's input columns (in config order) and the target; names missing columns."""
    missing = [c for c in [*use_case.features.all, use_case.target] if c not in df.columns]
    if missing:
        raise ValueError(
            f"use case {use_case.name!r}: the data lacks columns {missing}; "
            f"check the snapshot against configs/{use_case.name}.yaml"
        )
    categorical = use_case.features.categorical
    features = df[use_case.features.all].copy()
    # Categoricals stay object dtype with NaN for missing, whatever pandas inferred,
    # so training, the signature and serving all see the same column types.
    for column in categorical:
        features[column] = features[column].astype(object).where(features[column].notna(), np.nan)
    return features, df[use_case.target]


def model_input(use_case: UseCase, df: pd.DataFrame) -> pd.DataFrame:
    """Every column but the target, categoricals as in training: for models whose inputs may differ from the config."""
    frame = df.drop(columns=[use_case.target], errors="ignore").copy()
    for column in use_case.features.categorical:
        if column in frame.columns:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), np.nan)
    return frame


def _clean(values: dict[str, float]) -> dict[str, float]:
    # NaN/inf are not JSON and not comparable in a gate: an undefined metric is left out.
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def compute_metrics(
    task: str,
    y_true: Sequence[Any] | np.ndarray[Any, Any] | pd.Series,
    y_pred: Sequence[Any] | np.ndarray[Any, Any] | pd.Series,
    y_proba: np.ndarray[Any, Any] | None = None,
    labels: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Holdout metrics named as in `mlops.config.METRIC_DIRECTIONS`.

    Classification: binary averages on the larger label (1 for 0/1 targets),
    multiclass uses macro averages; `y_proba` columns follow `labels` (the
    estimator's `classes_`). Undefined metrics (a one-class holdout) are omitted.
    """
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if len(true) == 0:
        raise ValueError("cannot compute metrics on an empty holdout; check the holdout split")
    if task == "regression":
        true_f, pred_f = true.astype(float), pred.astype(float)
        result = {
            "rmse": skm.root_mean_squared_error(true_f, pred_f),
            "mae": skm.mean_absolute_error(true_f, pred_f),
            "r2": skm.r2_score(true_f, pred_f) if len(true_f) > 1 else float("nan"),
            "mape": skm.mean_absolute_percentage_error(true_f, pred_f),
        }
        assert set(result) == set(REGRESSION_METRICS)
        return _clean(result)
    if task != "classification":
        raise ValueError(f"unknown task {task!r}; use 'regression' or 'classification'")

    classes = list(labels) if labels is not None else sorted(set(true.tolist()) | set(pred.tolist()))
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    pos = {"pos_label": classes[-1]} if binary else {}
    result = {
        "accuracy": skm.accuracy_score(true, pred),
        "f1": skm.f1_score(true, pred, average=average, zero_division=0, **pos),
        "precision": skm.precision_score(true, pred, average=average, zero_division=0, **pos),
        "recall": skm.recall_score(true, pred, average=average, zero_division=0, **pos),
    }
    if y_proba is not None and len(set(true.tolist())) > 1:
        proba = np.asarray(y_proba, dtype=float)
        if binary:
            result["roc_auc"] = skm.roc_auc_score(true, proba[:, 1] if proba.ndim == 2 else proba)
        elif set(true.tolist()) == set(classes):
            result["roc_auc"] = skm.roc_auc_score(true, proba, multi_class="ovr", labels=classes)
        result["log_loss"] = skm.log_loss(true, proba, labels=classes)
    assert set(result) <= set(CLASSIFICATION_METRICS)
    return _clean(result)


@dataclass(frozen=True)
class Predictions:
    y_true: np.ndarray[Any, Any]
    y_pred: np.ndarray[Any, Any]
    y_proba: np.ndarray[Any, Any] | None
    labels: list[Any] | None


def predict(use_case: UseCase, model: Any, df: pd.DataFrame) -> Predictions:
    """Predictions (and class probabilities when the model has them) of any fitted sklearn model."""
    features, target = features_and_target(use_case, df)
    with threadpool_limits(limits=THREADS_PER_TASK):
        y_pred = np.asarray(model.predict(features))
        if use_case.task == "classification" and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(features))
            return Predictions(target.to_numpy(), y_pred, proba, list(model.classes_))
    return Predictions(target.to_numpy(), y_pred, None, None)


def score_model(use_case: UseCase, model: Any, df: pd.DataFrame) -> dict[str, float]:
    """Metrics of a fitted model on `df`: the same function for candidates and the champion."""
    p = predict(use_case, model, df)
    return compute_metrics(use_case.task, p.y_true, p.y_pred, p.y_proba, p.labels)


def fit_candidate(
    use_case: UseCase | str, spec: CandidateSpec, train_df: pd.DataFrame, holdout_df: pd.DataFrame
) -> FitResult:
    """Fit the candidate's pipeline on `train_df` and score it on `holdout_df`."""
    uc = resolve_use_case(use_case)
    features, target = features_and_target(uc, train_df)
    if len(features) == 0:
        raise ValueError(f"candidate {spec.key!r}: the training split is empty; check the snapshot and window")
    pipeline = build_pipeline(uc, spec)
    with threadpool_limits(limits=THREADS_PER_TASK):
        pipeline.fit(features, target)
    return FitResult(spec, pipeline, score_model(uc, pipeline, holdout_df), len(train_df), len(holdout_df))


def feature_importance(
    use_case: UseCase | str, model: Any, holdout_df: pd.DataFrame, max_rows: int = IMPORTANCE_MAX_ROWS
) -> dict[str, float]:
    """Permutation importance of each input column on a bounded, seeded holdout sample.

    Scored with the estimator's default scorer (R² or accuracy); sorted, largest first.
    """
    uc = resolve_use_case(use_case)
    sample = holdout_df.sample(n=min(max_rows, len(holdout_df)), random_state=uc.training.seed)
    features, target = features_and_target(uc, sample)
    with threadpool_limits(limits=THREADS_PER_TASK):
        result = permutation_importance(
            model, features, target, n_repeats=IMPORTANCE_REPEATS, random_state=uc.training.seed, n_jobs=1
        )
    pairs = sorted(zip(features.columns, result.importances_mean, strict=True), key=lambda kv: -kv[1])
    return {str(name): float(value) for name, value in pairs}


def diagnostic_figures(
    use_case: UseCase | str, model: Any, holdout_df: pd.DataFrame, importance: dict[str, float] | None = None
) -> dict[str, Figure]:
    """Plots for a candidate run, keyed by artifact file name.

    Regression: predicted vs actual and residuals; classification: confusion
    matrix; both: permutation feature importance (pass `importance` if already computed).
    """
    import matplotlib

    matplotlib.use("Agg")  # tasks run headless
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    uc = resolve_use_case(use_case)
    p = predict(uc, model, holdout_df)
    figures: dict[str, Figure] = {}
    if uc.task == "regression":
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        ax1.scatter(p.y_true, p.y_pred, s=8, alpha=0.5)
        low, high = float(np.min(p.y_true)), float(np.max(p.y_true))
        ax1.plot([low, high], [low, high], color="black", linewidth=1)
        ax1.set(xlabel=f"actual {uc.target}", ylabel="predicted", title="Predicted vs actual (holdout)")
        residuals = p.y_true.astype(float) - p.y_pred.astype(float)
        ax2.scatter(p.y_pred, residuals, s=8, alpha=0.5)
        ax2.axhline(0, color="black", linewidth=1)
        ax2.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals (holdout)")
        fig.tight_layout()
        figures["predicted_vs_actual.png"] = fig
    else:
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ConfusionMatrixDisplay.from_predictions(p.y_true, p.y_pred, ax=ax, colorbar=False)
        ax.set_title("Confusion matrix (holdout)")
        fig.tight_layout()
        figures["confusion_matrix.png"] = fig

    if importance is None:
        importance = feature_importance(uc, model, holdout_df)
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.3 * len(importance))))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    scorer = "R²" if uc.task == "regression" else "accuracy"
    ax.set(xlabel=f"mean drop in {scorer} when shuffled", title="Permutation importance (holdout sample)")
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    return figures
