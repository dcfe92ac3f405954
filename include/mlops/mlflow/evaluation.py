"""Models loaded for evaluation, and an evaluation's record on a run (`mlflow.models.evaluate`).

The champion is loaded through its pyfunc flavour, so its own signature checks the holdout;
a candidate is loaded as the scikit-learn model its run logged. What is judged and what the
record says is decided in `mlops.evaluation`; this module only knows how MLflow does it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.mlflow.client import fluent_client, resume_run

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version, ready to score."""

    predict: Callable[[pd.DataFrame], Any]
    """Predicts through the version's signature: inputs that do not match it raise."""
    estimator: Any
    """The scikit-learn model underneath (for `predict_proba` and `classes_`)."""


@dataclass(frozen=True)
class EvaluationLog:
    """What one evaluation records on a run."""

    holdout: pd.DataFrame = field(repr=False)
    target: str
    task: str
    """`regression` or `classification`."""
    predictions: dict[str, Any] = field(repr=False)
    """Metric prefix -> fixed predictions on `holdout`, each given to MLflow's default evaluator."""
    metrics: dict[str, float]
    tags: dict[str, str]
    documents: dict[str, Any]
    """Artifact path -> JSON-serialisable value."""
    error_tag: str
    """Set to the error when MLflow's evaluator fails (the rest is logged regardless)."""
    seconds_metric: str
    """How long MLflow's evaluator took."""


def load_registered_model(model_name: str, version: str) -> LoadedModel:
    import mlflow.pyfunc

    fluent_client()
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    return LoadedModel(predict=model.predict, estimator=model.get_raw_model())


def load_logged_model(model_uri: str) -> Any:
    """The scikit-learn model logged at `model_uri` (a candidate run's model)."""
    import mlflow.sklearn

    fluent_client()
    return mlflow.sklearn.load_model(model_uri)


def is_mlflow_error(exc: BaseException) -> bool:
    """Whether `exc` is MLflow refusing something (a schema mismatch, a missing model, a server error)."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException)


def short_error(exc: BaseException) -> str:
    """One readable line: MLflow's schema errors put the cause after a dump of the data."""
    text = str(exc).strip()
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1]
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}"


def log_evaluation(run_id: str, evaluation: EvaluationLog) -> None:
    """Record `evaluation` on run `run_id` and end the run.

    MLflow's standard evaluation of each prediction set is best effort: the decision does
    not depend on it, so a failure is tagged and the metrics, tags and documents still go in.
    """
    import mlflow

    with resume_run(run_id):
        started = time.perf_counter()
        try:
            for prefix, predictions in evaluation.predictions.items():
                _evaluate_predictions(evaluation, predictions, prefix)
        except Exception as exc:
            log.warning("mlflow.models.evaluate failed; the decision stands: %s", exc)
            mlflow.set_tag(evaluation.error_tag, short_error(exc))
        mlflow.log_metric(evaluation.seconds_metric, time.perf_counter() - started)
        mlflow.log_metrics(evaluation.metrics)
        mlflow.set_tags(evaluation.tags)
        for path, document in evaluation.documents.items():
            mlflow.log_dict(document, path)


def _evaluate_predictions(evaluation: EvaluationLog, predictions: Any, prefix: str) -> None:
    """MLflow's default evaluator on fixed predictions, its metrics named `<prefix><metric>`.

    Predictions are passed in, not the model, so nothing is loaded twice; SHAP explainers
    are off (seconds to minutes, and nothing the gate uses).
    """
    import mlflow.models

    frame = evaluation.holdout.copy()
    frame["prediction"] = predictions
    with warnings.catch_warnings():
        # Integer columns of the holdout (the target, counts) are fine here: no schema is enforced.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        mlflow.models.evaluate(  # type: ignore[no-untyped-call]
            data=frame,
            targets=evaluation.target,
            predictions="prediction",
            model_type="regressor" if evaluation.task == "regression" else "classifier",
            evaluators=["default"],
            evaluator_config={"default": {"metric_prefix": prefix, "log_model_explainability": False}},
        )
