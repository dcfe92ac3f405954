"""MLflow runs for training: the parent run of a DAG run, one child run per candidate, the gate evaluation.

The only module that talks to MLflow tracking (runs, logged models, evaluation);
`mlops.registry` owns versions and aliases. Every step is idempotent per DAG run:
a re-run finds what an earlier attempt wrote through tags instead of writing it twice.

Tag layout on runs:
- lineage, plain keys (monitoring reads `snapshot_path`): snapshot_path, dvc_md5,
  git_commit, uv_lock_sha256, airflow_dag_id, airflow_run_id, reason, ...
- machinery, `mlops.` keys: mlops.run_type, mlops.candidate_key, mlops.model_uri, mlops.gate.*
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlops.config import METRIC_DIRECTIONS, UseCase, resolve_use_case
from mlops.evaluation.gate import GateDecision, check_gate, is_better
from mlops.mlflow import runs as mlflow_runs
from mlops.mlflow.client import filter_literal, fluent_client, resume_run
from mlops.naming import (
    TAG_CANDIDATE_KEY,
    TAG_DAG_ID,
    TAG_DAG_RUN_ID,
    TAG_DVC_MD5,
    TAG_MODEL_URI,
    TAG_PARENT,
    TAG_RUN_TYPE,
)
from mlops.settings import get_settings
from mlops.training.candidates import CandidateSpec

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

# Lineage keys the DAG passes, renamed so they cannot be mistaken for MLflow's own ids.
_LINEAGE_RENAMES = {"dag_id": TAG_DAG_ID, "run_id": TAG_DAG_RUN_ID}
# A child copies its parent's lineage tags, but not these (run machinery, MLflow's own).
_NOT_INHERITED_PREFIXES = ("mlops.", "mlflow.")


class SnapshotChangedError(RuntimeError):
    """A re-run of a DAG run got other data than its first attempt trained on; the message says what to do."""


@dataclass(frozen=True)
class CandidateResult:
    """A trained candidate: its run, its logged model and its holdout metrics."""

    key: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateResult:
        metrics = {str(k): float(v) for k, v in dict(data["metrics"]).items()}
        return cls(key=str(data["key"]), run_id=str(data["run_id"]), model_uri=str(data["model_uri"]), metrics=metrics)


# ----------------------------------------------------------------------------- connection and lineage


def git_commit() -> str:
    """`git rev-parse HEAD` of the project root, or "unknown" outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=get_settings().project_root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def uv_lock_sha256() -> str:
    """sha256 of the project's uv.lock (the exact resolved environment), or "unknown"."""
    path = get_settings().project_root / "uv.lock"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unknown"


def _lineage_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    tags = {_LINEAGE_RENAMES.get(k, k): str(v) for k, v in lineage.items() if v is not None}
    commit = git_commit()
    tags.update({"git_commit": commit, "mlflow.source.git.commit": commit, "uv_lock_sha256": uv_lock_sha256()})
    return tags


def _experiment_id(mlflow_client: MlflowClient, use_case: UseCase) -> str:
    from mlflow.exceptions import MlflowException

    experiment = mlflow_client.get_experiment_by_name(use_case.name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    try:
        return str(mlflow_client.create_experiment(use_case.name, tags={"mlops.use_case": use_case.name}))
    except MlflowException:
        # Another task created it in the meantime.
        experiment = mlflow_client.get_experiment_by_name(use_case.name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


# ----------------------------------------------------------------------------- parent run


def find_parent_run(use_case: UseCase | str, dag_id: str, run_id: str) -> str | None:
    """The parent run id of this DAG run, if an earlier attempt created it."""
    found = mlflow_runs.find_parent_run(resolve_use_case(use_case).name, dag_id, run_id, fluent_client())
    return found.run_id if found else None


def start_parent_run(use_case: UseCase | str, dag_id: str, run_id: str, lineage: Mapping[str, Any]) -> str:
    """The parent run of one DAG run (created once, reused on re-runs); returns its run id.

    `lineage` holds snapshot_path, dvc_md5 and any other provenance, plus an optional
    retrain `reason` that also becomes the run's description.
    """
    from mlflow.entities import RunStatus

    uc = resolve_use_case(use_case)
    mlflow_client = fluent_client()
    experiment_id = _experiment_id(mlflow_client, uc)
    tags = {
        **_lineage_tags(lineage),
        TAG_RUN_TYPE: "parent",
        TAG_DAG_ID: dag_id,
        TAG_DAG_RUN_ID: run_id,
        "mlops.use_case": uc.name,
        "mlops.model_name": uc.model_name,
    }
    reason = lineage.get("reason")
    if reason:
        tags["mlflow.note.content"] = f"Training run {dag_id}/{run_id}. Reason: {reason}"
    existing = find_parent_run(uc, dag_id, run_id)
    if existing is not None:
        # Before any tag is overwritten: the parent's lineage must stay that of its models.
        _refuse_other_snapshot(mlflow_client, existing, tags.get(TAG_DVC_MD5), f"{dag_id}/{run_id}")
        for key, value in tags.items():
            mlflow_client.set_tag(existing, key, value)
        # Children are created under a running parent; a cleared DAG run reopens it.
        mlflow_client.update_run(existing, status=RunStatus.to_string(RunStatus.RUNNING))
        log.info("reusing parent run %s for %s/%s", existing, dag_id, run_id)
        return existing
    run = mlflow_client.create_run(experiment_id, run_name=f"{dag_id}/{run_id}", tags=tags)
    return str(run.info.run_id)


def _refuse_other_snapshot(mlflow_client: MlflowClient, parent_run_id: str, md5: str | None, run_key: str) -> None:
    """Raise if a finished candidate of this parent run was trained on another snapshot than `md5`."""
    from mlflow.entities import ViewType

    parent = mlflow_client.get_run(parent_run_id)
    children = mlflow_client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.{TAG_PARENT} = {filter_literal(parent_run_id, 'parent run id')}",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    for child in children:
        if _is_complete(child) and child.data.tags.get(TAG_DVC_MD5) != md5:
            raise _snapshot_changed(run_key, child, md5)


def _is_complete(run: Run) -> bool:
    """A candidate run that finished and logged its model (the tag written last)."""
    return run.info.status == "FINISHED" and TAG_MODEL_URI in run.data.tags


def _snapshot_changed(run_key: str, trained: Run, md5: str | None) -> SnapshotChangedError:
    old = trained.data.tags.get(TAG_DVC_MD5)
    return SnapshotChangedError(
        f"{run_key} already trained {trained.data.tags.get(TAG_CANDIDATE_KEY, 'a candidate')} "
        f"(MLflow run {trained.info.run_id}) on the snapshot with DVC md5 {old}, but this attempt's snapshot "
        f"has md5 {md5}: the source changed since the run first ingested it. Its models, evaluation and "
        "lineage belong to the old data, so they are not reused on the new; trigger a new DAG run to train "
        f"on the new data (the old bytes stay restorable with `mlops data restore {old} <folder>`)."
    )


def end_parent_run(parent_run_id: str, status: str = "FINISHED") -> None:
    """Close the parent run (evaluation also closes it when it logs there)."""
    fluent_client().set_terminated(parent_run_id, status=status)


# ----------------------------------------------------------------------------- candidate runs


def load_train_holdout(use_case: UseCase, snapshot_path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The snapshot split exactly as every step splits it (mlops.ingestion owns the rule)."""
    from mlops.data.ingestion import read_snapshot, split_holdout

    return split_holdout(use_case, read_snapshot(snapshot_path))


def _child_runs(mlflow_client: MlflowClient, run: Run, key: str) -> list[Run]:
    from mlflow.entities import ViewType

    return list(
        mlflow_client.search_runs(
            [run.info.experiment_id],
            filter_string=(
                f"tags.{TAG_PARENT} = {filter_literal(run.info.run_id, 'parent run id')} "
                f"and tags.`{TAG_CANDIDATE_KEY}` = {filter_literal(key, 'candidate key')}"
            ),
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time ASC"],
        )
    )


def _result_from_run(run: Run) -> CandidateResult:
    return CandidateResult(
        key=run.data.tags[TAG_CANDIDATE_KEY],
        run_id=run.info.run_id,
        model_uri=run.data.tags[TAG_MODEL_URI],
        metrics={k: float(v) for k, v in run.data.metrics.items() if k in METRIC_DIRECTIONS},
    )


def _skops_trusted_types(pipeline: Any) -> list[str]:
    """Types skops must trust to load our pipeline; only numpy/scipy/sklearn ones are accepted."""
    # On import skops looks for scipy's ufuncs in every loaded module; in a task process that
    # touches Airflow's deprecated-module shims ~1 100 times, and each warning went through the
    # task log: 11 s per candidate. Silenced, the scan costs well under a second.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    unexpected = [t for t in untrusted if not t.startswith(("numpy.", "scipy.", "sklearn."))]
    if unexpected:
        raise ValueError(
            f"the fitted pipeline holds types outside numpy/scipy/scikit-learn ({unexpected}); "
            "only scikit-learn estimators are supported as candidates"
        )
    return list(untrusted)


def _pip_requirements() -> list[str]:
    # Pinned to what trained the model. MLflow would otherwise export all of uv.lock
    # (~260 packages, Airflow included) into every model's requirements.
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops")]


def train_and_log_candidate(
    use_case: UseCase | str,
    spec_dict: Mapping[str, Any],
    snapshot_path: str,
    parent_run_id: str,
    lineage: Mapping[str, Any],
) -> CandidateResult:
    """Fit one candidate and log it as a child of the parent run; idempotent per candidate key and snapshot.

    A FINISHED child with the same key, trained on the same snapshot (DVC md5), is
    returned as is; a failed or half-written one (killed worker) is deleted and trained
    again. A finished one trained on another snapshot raises SnapshotChangedError: its
    model must not be judged on the new holdout under the new lineage.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    from mlops.training.candidates import diagnostic_figures, feature_importance, features_and_target, fit_candidate

    uc = resolve_use_case(use_case)
    spec = CandidateSpec.from_dict(dict(spec_dict))
    mlflow_client = fluent_client()
    parent = mlflow_client.get_run(parent_run_id)
    # The child's md5 as it is written below: the task's lineage, else inherited from the parent.
    md5 = str(lineage[TAG_DVC_MD5]) if lineage.get(TAG_DVC_MD5) is not None else parent.data.tags.get(TAG_DVC_MD5)

    for existing in _child_runs(mlflow_client, parent, spec.key):
        if _is_complete(existing):
            if existing.data.tags.get(TAG_DVC_MD5) != md5:
                dag_run = f"{parent.data.tags.get(TAG_DAG_ID)}/{parent.data.tags.get(TAG_DAG_RUN_ID)}"
                raise _snapshot_changed(dag_run, existing, md5)
            log.info("candidate %s already trained in run %s; reusing it", spec.key, existing.info.run_id)
            return _result_from_run(existing)
        log.warning("deleting half-written run %s of candidate %s (%s)", existing.info.run_id, spec.key,
                    existing.info.status)  # fmt: skip
        mlflow_client.delete_run(existing.info.run_id)

    train_df, holdout_df = load_train_holdout(uc, snapshot_path)
    started = time.perf_counter()
    fit = fit_candidate(uc, spec, train_df, holdout_df)
    fit_seconds = time.perf_counter() - started

    inherited = {k: v for k, v in parent.data.tags.items() if not k.startswith(_NOT_INHERITED_PREFIXES)}
    tags = {
        **inherited,
        **_lineage_tags({"snapshot_path": snapshot_path, **lineage}),
        TAG_PARENT: parent_run_id,
        TAG_RUN_TYPE: "candidate",
        TAG_CANDIDATE_KEY: spec.key,
        "mlops.candidate": spec.name,
        "mlops.estimator": spec.estimator,
        "mlops.use_case": uc.name,
    }
    run = mlflow_client.create_run(parent.info.experiment_id, run_name=spec.key, tags=tags)
    with resume_run(run.info.run_id, run.info.experiment_id):
        mlflow.log_params({**{k: str(v) for k, v in spec.params.items()}, "estimator": spec.estimator,
                           "n_train": len(train_df), "n_holdout": len(holdout_df),
                           "seed": uc.training.seed})  # fmt: skip
        with warnings.catch_warnings():
            # A local path matches both local artifact sources MLflow registers; either is right.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            # The dataset schema records the snapshot's int columns as they are; nothing enforces it.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            train_ds = from_pandas(train_df, source=snapshot_path, targets=uc.target, name=f"{uc.name}-train")
            holdout_ds = from_pandas(holdout_df, source=snapshot_path, targets=uc.target, name=f"{uc.name}-holdout")
            mlflow.log_input(train_ds, context="training")
            mlflow.log_input(holdout_ds, context="holdout")
        mlflow.set_tags({"dataset_digest": train_ds.digest, "holdout_digest": holdout_ds.digest})

        features, _ = features_and_target(uc, holdout_df)
        example = features.head(5)
        info = mlflow.sklearn.log_model(
            fit.pipeline,
            name="model",
            signature=infer_signature(features, fit.pipeline.predict(features)),
            input_example=example,
            pip_requirements=_pip_requirements(),
            skops_trusted_types=_skops_trusted_types(fit.pipeline),
        )
        # Linked to the logged model and the holdout, so the model page shows them too.
        mlflow.log_metrics(fit.metrics, model_id=info.model_id, dataset=holdout_ds)
        mlflow.log_metric("fit_seconds", fit_seconds)

        importance = feature_importance(uc, fit.pipeline, holdout_df)
        for name, figure in diagnostic_figures(uc, fit.pipeline, holdout_df, importance).items():
            mlflow.log_figure(figure, f"plots/{name}")
        import matplotlib.pyplot as plt

        plt.close("all")
        mlflow.log_dict(importance, "plots/feature_importance.json")
        # Written last: a run carrying this tag is complete and reusable.
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    return CandidateResult(spec.key, run.info.run_id, info.model_uri, dict(fit.metrics))


def select_best(use_case: UseCase | str, results: Sequence[CandidateResult | Mapping[str, Any]]) -> CandidateResult:
    """The candidate with the best `gate.primary_metric`; ties go to the smallest key (stable)."""
    uc = resolve_use_case(use_case)
    metric = uc.gate.primary_metric
    candidates = [r if isinstance(r, CandidateResult) else CandidateResult.from_dict(r) for r in results]
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


# ----------------------------------------------------------------------------- gate


@dataclass(frozen=True)
class _ChampionScore:
    version: str | None
    metrics: dict[str, float] | None
    error: str | None
    predictions: Any = None


def _short_error(exc: BaseException) -> str:
    """One readable line: MLflow's schema errors put the cause after a dump of the data."""
    text = str(exc).strip()
    if "Error: " in text:
        text = text.rsplit("Error: ", 1)[1]
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}"


def _score_champion(uc: UseCase, holdout_df: pd.DataFrame) -> _ChampionScore:
    """Load `@champion` and score it on this holdout through its own signature."""
    import mlflow.pyfunc
    import numpy as np
    from mlflow.exceptions import MlflowException
    from threadpoolctl import threadpool_limits

    from mlops.mlflow.registry import alias_version
    from mlops.training.candidates import THREADS_PER_TASK, compute_metrics, model_input

    version = alias_version(uc.model_name, "champion")
    if version is None:
        return _ChampionScore(None, None, None)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{uc.model_name}/{version}")
        features = model_input(uc, holdout_df)
        with threadpool_limits(limits=THREADS_PER_TASK):
            # pyfunc enforces the champion's signature: a changed schema fails here, loudly.
            y_pred = np.asarray(model.predict(features))
            raw = model.get_raw_model()
            proba, labels = None, None
            if uc.task == "classification" and hasattr(raw, "predict_proba"):
                proba, labels = np.asarray(raw.predict_proba(features)), list(raw.classes_)
        metrics = compute_metrics(uc.task, holdout_df[uc.target].to_numpy(), y_pred, proba, labels)
    except (MlflowException, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("champion v%s of %s cannot be scored on this holdout: %s", version, uc.model_name, exc)
        return _ChampionScore(version, None, _short_error(exc))
    return _ChampionScore(version, metrics, None, y_pred)


def _log_evaluation(uc: UseCase, holdout_df: pd.DataFrame, predictions: Any, prefix: str) -> None:
    """Log MLflow's standard evaluation of fixed predictions into the active run.

    Predictions are passed in, not the model, so nothing is loaded twice; SHAP
    explainers are off (seconds to minutes, and nothing the gate uses).
    """
    import mlflow.models

    frame = holdout_df.copy()
    frame["prediction"] = predictions
    with warnings.catch_warnings():
        # Integer columns of the holdout (the target, counts) are fine here: no schema is enforced.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        mlflow.models.evaluate(  # type: ignore[no-untyped-call]
            data=frame,
            targets=uc.target,
            predictions="prediction",
            model_type="regressor" if uc.task == "regression" else "classifier",
            evaluators=["default"],
            evaluator_config={"default": {"metric_prefix": prefix, "log_model_explainability": False}},
        )


def evaluate_against_champion(
    use_case: UseCase | str, candidate: CandidateResult, holdout_df: pd.DataFrame, parent_run_id: str
) -> GateDecision:
    """Score the candidate and `@champion` on the same holdout and apply the gate.

    The evaluation (MLflow's standard metrics with `gate_candidate_`/`gate_champion_`
    prefixes), the decision and its reasons are logged on the parent run, which
    this closes. A champion that cannot be loaded or scored fails the gate.
    """
    import mlflow
    import mlflow.sklearn

    from mlops.training.candidates import compute_metrics, predict

    uc = resolve_use_case(use_case)
    fluent_client()
    model = mlflow.sklearn.load_model(candidate.model_uri)
    scored = predict(uc, model, holdout_df)
    candidate_metrics = compute_metrics(uc.task, scored.y_true, scored.y_pred, scored.y_proba, scored.labels)
    champion = _score_champion(uc, holdout_df)
    decision = check_gate(
        uc,
        candidate_metrics,
        champion.metrics,
        champion_version=champion.version,
        champion_error=champion.error,
        candidate_key=candidate.key,
    )

    with resume_run(parent_run_id):
        started = time.perf_counter()
        try:
            _log_evaluation(uc, holdout_df, scored.y_pred, "gate_candidate_")
            if champion.predictions is not None:
                _log_evaluation(uc, holdout_df, champion.predictions, "gate_champion_")
        except Exception as exc:  # the record is best effort; the decision does not depend on it
            log.warning("mlflow.models.evaluate failed; the gate decision stands: %s", exc)
            mlflow.set_tag("mlops.gate.evaluate_error", _short_error(exc))
        mlflow.log_metric("gate_evaluate_seconds", time.perf_counter() - started)
        mlflow.log_metrics({f"gate_candidate_{k}": v for k, v in candidate_metrics.items()})
        if champion.metrics:
            mlflow.log_metrics({f"gate_champion_{k}": v for k, v in champion.metrics.items()})
        mlflow.set_tags(
            {
                "mlops.gate.passed": str(decision.passed).lower(),
                "mlops.gate.reasons": "; ".join(decision.reasons)[:5000],
                "mlops.gate.candidate_key": candidate.key,
                "mlops.gate.candidate_run_id": candidate.run_id,
                "mlops.gate.champion_version": champion.version or "none",
                "mlops.gate.champion_error": champion.error or "none",
            }
        )
        mlflow.log_dict(decision.to_dict(), "gate/decision.json")
    log.info("gate for %s: %s", candidate.key, json.dumps(decision.reasons))
    return decision
