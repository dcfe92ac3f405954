"""Judge the best candidate against `@champion`: both scored on one holdout and its slices, the gate applied.

`gate.py` holds the pure rules; this module feeds them. The record (MLflow's standard
evaluation of both models' predictions, the gate's metrics, verdict and reasons) is logged
on the DAG run's parent run, which the evaluation closes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase, resolve_use_case
from mlops.evaluation.gate import GateDecision, check_gate, is_better
from mlops.evaluation.slices import score_slices
from mlops.mlflow import evaluation as mlflow_evaluation
from mlops.naming import (
    CHAMPION,
    GATE_CANDIDATE_METRIC_PREFIX,
    GATE_CHAMPION_METRIC_PREFIX,
    GATE_DECISION_ARTIFACT,
    TAG_GATE_CHAMPION_VERSION,
    TAG_GATE_PASSED,
    TAG_GATE_REASONS,
)
from mlops.training.results import CandidateResult

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# Run tag values are capped by the server; the reasons are cut, never rejected.
_MAX_TAG = 5000


@dataclass(frozen=True)
class ChampionScore:
    """`@champion` scored on a holdout: its metrics, or why it could not be scored (None, None: no champion)."""

    version: str | None
    metrics: dict[str, float] | None
    error: str | None
    predictions: Any = None
    probabilities: Any = None
    labels: list[Any] | None = None


def select_best(use_case: UseCase | str, results: Sequence[CandidateResult | Mapping[str, Any]]) -> CandidateResult:
    """The candidate with the best `gate.primary_metric`; ties go to the smallest key (stable)."""
    uc = resolve_use_case(use_case)
    metric = uc.gate.primary_metric
    candidates = [CandidateResult.of(r) for r in results]
    scored = [c for c in candidates if metric in c.metrics]
    if not scored:
        keys = [c.key for c in candidates]
        raise ValueError(
            f"no candidate has the primary metric {metric!r} (candidates: {keys}); check the training logs"
        )
    best = scored[0]
    for c in scored[1:]:
        if is_better(metric, c.metrics[metric], best.metrics[metric]) or (
            c.metrics[metric] == best.metrics[metric] and c.key < best.key
        ):
            best = c
    return best


def evaluate_against_champion(
    use_case: UseCase | str, candidate: CandidateResult, snapshot_path: str, parent_run_id: str
) -> GateDecision:
    """Score the candidate and `@champion` on the holdout of `snapshot_path` and apply the gate.

    The evaluation (MLflow's standard metrics with `gate_candidate_`/`gate_champion_`
    prefixes), the decision and its reasons are logged on the parent run, which
    this closes. A champion that cannot be loaded or scored fails the gate.
    """
    from mlops.training.candidates import compute_metrics, predict
    from mlops.training.runs import load_train_holdout

    uc = resolve_use_case(use_case)
    _, holdout_df = load_train_holdout(uc, snapshot_path)
    model = mlflow_evaluation.load_logged_model(candidate.model_uri)
    scored = predict(uc, model, holdout_df)
    candidate_metrics = compute_metrics(uc.task, scored.y_true, scored.y_pred, scored.y_proba, scored.labels)
    champion = score_champion(uc, holdout_df)
    candidate_slices = score_slices(uc, holdout_df, scored.y_pred, scored.y_proba, scored.labels)
    champion_slices = None
    if champion.predictions is not None:
        champion_slices = score_slices(uc, holdout_df, champion.predictions, champion.probabilities, champion.labels)
    decision = check_gate(
        uc,
        candidate_metrics,
        champion.metrics,
        champion_version=champion.version,
        champion_error=champion.error,
        candidate_key=candidate.key,
        candidate_slices=candidate_slices.scores,
        champion_slices=champion_slices.scores if champion_slices else None,
        slice_rows=candidate_slices.rows,
    )
    record = _evaluation_log(uc, holdout_df, candidate, scored.y_pred, champion, decision)
    mlflow_evaluation.log_evaluation(parent_run_id, record)
    log.info("gate for %s: %s", candidate.key, json.dumps(decision.reasons))
    return decision


def score_champion(uc: UseCase, holdout_df: pd.DataFrame) -> ChampionScore:
    """Load `@champion` and score it on this holdout through its own signature."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from mlops.mlflow.registry import alias_version
    from mlops.training.candidates import THREADS_PER_TASK, compute_metrics, model_input

    version = alias_version(uc.model_name, CHAMPION)
    if version is None:
        return ChampionScore(None, None, None)
    try:
        model = mlflow_evaluation.load_registered_model(uc.model_name, version)
        features = model_input(uc, holdout_df)
        with threadpool_limits(limits=THREADS_PER_TASK):
            # The signature is enforced: a changed schema fails here, loudly.
            y_pred = np.asarray(model.predict(features))
            proba, labels = None, None
            if uc.task == "classification" and hasattr(model.estimator, "predict_proba"):
                proba, labels = np.asarray(model.estimator.predict_proba(features)), list(model.estimator.classes_)
        metrics = compute_metrics(uc.task, holdout_df[uc.target].to_numpy(), y_pred, proba, labels)
    except Exception as exc:
        if not _cannot_score(exc):
            raise
        log.warning("champion v%s of %s cannot be scored on this holdout: %s", version, uc.model_name, exc)
        return ChampionScore(version, None, mlflow_evaluation.short_error(exc))
    return ChampionScore(version, metrics, None, y_pred, proba, labels)


def _cannot_score(exc: BaseException) -> bool:
    """Errors that mean this champion cannot score this holdout (schema, missing files), not a bug of ours."""
    scoring_errors = (OSError, ValueError, KeyError, TypeError, AttributeError)
    return isinstance(exc, scoring_errors) or mlflow_evaluation.is_mlflow_error(exc)


def _evaluation_log(
    uc: UseCase,
    holdout_df: pd.DataFrame,
    candidate: CandidateResult,
    candidate_predictions: Any,
    champion: ChampionScore,
    decision: GateDecision,
) -> mlflow_evaluation.EvaluationLog:
    """The gate's record on the parent run: both models' evaluations, the metrics compared, the verdict."""
    predictions = {GATE_CANDIDATE_METRIC_PREFIX: candidate_predictions}
    metrics = {f"{GATE_CANDIDATE_METRIC_PREFIX}{k}": v for k, v in decision.candidate_metrics.items()}
    if champion.predictions is not None:
        predictions[GATE_CHAMPION_METRIC_PREFIX] = champion.predictions
    if champion.metrics:
        metrics.update({f"{GATE_CHAMPION_METRIC_PREFIX}{k}": v for k, v in champion.metrics.items()})
    tags = {
        TAG_GATE_PASSED: str(decision.passed).lower(),
        TAG_GATE_REASONS: "; ".join(decision.reasons)[:_MAX_TAG],
        "mlops.gate.candidate_key": candidate.key,
        "mlops.gate.candidate_run_id": candidate.run_id,
        TAG_GATE_CHAMPION_VERSION: champion.version or "none",
        "mlops.gate.champion_error": champion.error or "none",
    }
    return mlflow_evaluation.EvaluationLog(
        holdout=holdout_df,
        target=uc.target,
        task=uc.task,
        predictions=predictions,
        metrics=metrics,
        tags=tags,
        documents={GATE_DECISION_ARTIFACT: decision.to_dict()},
        error_tag="mlops.gate.evaluate_error",
        seconds_metric="gate_evaluate_seconds",
    )
