"""Training runs: the parent run of a DAG run and one child run per candidate, each written once.

Every step is idempotent per DAG run: a re-run finds what an earlier attempt wrote through
tags instead of writing it twice, and refuses to reuse models trained on another snapshot.
MLflow itself is behind `mlops.mlflow.tracking`; scoring against the champion is
`mlops.evaluation.champion`.

Tag layout on runs:
- lineage, plain keys (monitoring reads `snapshot_path`): snapshot_path, dvc_md5,
  git_commit, git_dirty, uv_lock_sha256, airflow_dag_id, airflow_run_id, reason, ...
- machinery, `mlops.` keys: mlops.run_type, mlops.candidate_key, mlops.model_uri, mlops.gate.*
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlops.config import METRIC_DIRECTIONS, UseCase, resolve_use_case
from mlops.mlflow import runs as mlflow_runs
from mlops.mlflow import tracking
from mlops.mlflow.runs import RunRecord
from mlops.naming import (
    TAG_CANDIDATE_KEY,
    TAG_CANDIDATE_SPEC,
    TAG_DAG_ID,
    TAG_DAG_RUN_ID,
    TAG_DVC_MD5,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_MODEL_NAME,
    TAG_MODEL_URI,
    TAG_PARENT,
    TAG_RUN_TYPE,
    TAG_USE_CASE,
    TAG_UV_LOCK,
    USE_CASE_ARTIFACT,
    training_experiment,
)
from mlops.settings import get_settings
from mlops.training.candidates import CandidateSpec
from mlops.training.results import CandidateResult

if TYPE_CHECKING:
    import pandas as pd

    from mlops.training.candidates import FitResult

log = logging.getLogger(__name__)

# Lineage keys the DAG passes, renamed so they cannot be mistaken for MLflow's own ids.
_LINEAGE_RENAMES = {"dag_id": TAG_DAG_ID, "run_id": TAG_DAG_RUN_ID}
# A child copies its parent's lineage tags, but not these (run machinery, MLflow's own).
_NOT_INHERITED_PREFIXES = ("mlops.", "mlflow.")


class SnapshotChangedError(RuntimeError):
    """A re-run of a DAG run got other data than its first attempt trained on; the message says what to do."""


# ----------------------------------------------------------------------------- lineage


def _git(*args: str) -> str | None:
    """The output of `git <args>` in the project root, or None outside a repository (or without git)."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=get_settings().project_root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_commit() -> str:
    """`git rev-parse HEAD` of the project root; in a tree without `.git` (the container image) the
    commit the image was built from (`MLOPS_GIT_COMMIT`, the Dockerfile's GIT_COMMIT); else "unknown"."""
    head = (_git("rev-parse", "HEAD") or "").strip()
    return head or get_settings().build_git_commit or "unknown"


def git_dirty() -> str:
    """ "true" when the project's working tree has uncommitted changes (then the commit does not pin the
    code), "false" when clean; the image's recorded state (`MLOPS_GIT_DIRTY`) or "unknown" without `.git`."""
    if not (_git("rev-parse", "HEAD") or "").strip():
        return get_settings().build_git_dirty or "unknown"
    status = _git("status", "--porcelain")
    if status is None:
        return "unknown"
    return "true" if status.strip() else "false"


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
    tags.update(
        {
            TAG_GIT_COMMIT: commit,
            "mlflow.source.git.commit": commit,
            TAG_GIT_DIRTY: git_dirty(),
            TAG_UV_LOCK: uv_lock_sha256(),
        }
    )
    return tags


# ----------------------------------------------------------------------------- parent run


def find_parent_run(use_case: UseCase | str, dag_id: str, run_id: str) -> str | None:
    """The parent run id of this DAG run, if an earlier attempt created it."""
    found = mlflow_runs.find_parent_run(resolve_use_case(use_case).name, dag_id, run_id)
    return found.run_id if found else None


def start_parent_run(use_case: UseCase | str, dag_id: str, run_id: str, lineage: Mapping[str, Any]) -> str:
    """The parent run of one DAG run (created once, reused on re-runs); returns its run id.

    `lineage` holds snapshot_path, dvc_md5 and any other provenance, plus an optional
    retrain `reason` that also becomes the run's description.
    """
    uc = resolve_use_case(use_case)
    experiment_id = tracking.ensure_experiment(training_experiment(uc.name), {TAG_USE_CASE: uc.name})
    tags = _parent_tags(uc, dag_id, run_id, lineage)
    existing = find_parent_run(uc, dag_id, run_id)
    if existing is None:
        return tracking.create_run(experiment_id, run_name=f"{dag_id}/{run_id}", tags=tags).run_id
    # Before any tag is overwritten: the parent's lineage must stay that of its models.
    _refuse_other_snapshot(tracking.get_run(existing), tags.get(TAG_DVC_MD5), f"{dag_id}/{run_id}")
    tracking.set_tags(existing, tags)
    # Children are created under a running parent; a cleared DAG run reopens it.
    tracking.reopen_run(existing)
    log.info("reusing parent run %s for %s/%s", existing, dag_id, run_id)
    return existing


def _parent_tags(uc: UseCase, dag_id: str, run_id: str, lineage: Mapping[str, Any]) -> dict[str, str]:
    tags = {
        **_lineage_tags(lineage),
        TAG_RUN_TYPE: "parent",
        TAG_DAG_ID: dag_id,
        TAG_DAG_RUN_ID: run_id,
        TAG_USE_CASE: uc.name,
        TAG_MODEL_NAME: uc.model_name,
    }
    reason = lineage.get("reason")
    if reason:
        tags["mlflow.note.content"] = f"Training run {dag_id}/{run_id}. Reason: {reason}"
    return tags


def _refuse_other_snapshot(parent: RunRecord, md5: str | None, run_key: str) -> None:
    """Raise if a finished candidate of this parent run was trained on another snapshot than `md5`."""
    for child in tracking.child_runs(parent):
        if _is_complete(child) and child.tags.get(TAG_DVC_MD5) != md5:
            raise _snapshot_changed(run_key, child, md5)


def _is_complete(run: RunRecord) -> bool:
    """A candidate run that finished and logged its model (the tag written last)."""
    return run.status == "FINISHED" and TAG_MODEL_URI in run.tags


def _snapshot_changed(run_key: str, trained: RunRecord, md5: str | None) -> SnapshotChangedError:
    old = trained.tags.get(TAG_DVC_MD5)
    return SnapshotChangedError(
        f"{run_key} already trained {trained.tags.get(TAG_CANDIDATE_KEY, 'a candidate')} "
        f"(MLflow run {trained.run_id}) on the snapshot with DVC md5 {old}, but this attempt's snapshot "
        f"has md5 {md5}: the source changed since the run first ingested it. Its models, evaluation and "
        "lineage belong to the old data, so they are not reused on the new; trigger a new DAG run to train "
        f"on the new data (the old bytes stay restorable with `mlops data restore {old} <folder>`)."
    )


def end_parent_run(parent_run_id: str, status: str = "FINISHED") -> None:
    """Close the parent run (evaluation also closes it when it logs there)."""
    tracking.end_run(parent_run_id, status=status)


# ----------------------------------------------------------------------------- candidate runs


def load_train_holdout(use_case: UseCase, snapshot_path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The snapshot split exactly as every step splits it (mlops.data.ingestion owns the rule)."""
    from mlops.data.ingestion import read_snapshot, split_holdout

    return split_holdout(use_case, read_snapshot(snapshot_path))


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
    from mlops.training.candidates import fit_candidate

    uc = resolve_use_case(use_case)
    spec = CandidateSpec.from_dict(dict(spec_dict))
    parent = tracking.get_run(parent_run_id)
    # The child's md5 as it is written below: the task's lineage, else inherited from the parent.
    md5 = str(lineage[TAG_DVC_MD5]) if lineage.get(TAG_DVC_MD5) is not None else parent.tags.get(TAG_DVC_MD5)
    earlier = _earlier_result(parent, spec.key, md5)
    if earlier is not None:
        return earlier

    train_df, holdout_df = load_train_holdout(uc, snapshot_path)
    started = time.perf_counter()
    fit = fit_candidate(uc, spec, train_df, holdout_df)
    fit_seconds = time.perf_counter() - started

    tags = _candidate_tags(uc, spec, parent, snapshot_path, lineage)
    run = tracking.create_run(parent.experiment_id, run_name=spec.key, tags=tags)
    with tracking.open_run(run) as logging_run:
        candidate = _candidate_log(uc, fit, snapshot_path, train_df, holdout_df, fit_seconds)
        model_uri = logging_run.log_candidate(candidate)
        _log_diagnostics(logging_run, uc, fit.pipeline, holdout_df)
        # The config as it trained this model, so a retraining (`mlops reproduce`) needs no config file.
        logging_run.log_documents({USE_CASE_ARTIFACT: uc.model_dump(mode="json")})
        # Written last: a run carrying it is complete and reusable.
        logging_run.set_tags({TAG_MODEL_URI: model_uri})
    return CandidateResult(spec.key, run.run_id, model_uri, dict(fit.metrics))


def _earlier_result(parent: RunRecord, key: str, md5: str | None) -> CandidateResult | None:
    """The candidate an earlier attempt finished on this snapshot; half-written runs are deleted."""
    for existing in tracking.child_runs(parent, {TAG_CANDIDATE_KEY: key}):
        if _is_complete(existing):
            if existing.tags.get(TAG_DVC_MD5) != md5:
                dag_run = f"{parent.tags.get(TAG_DAG_ID)}/{parent.tags.get(TAG_DAG_RUN_ID)}"
                raise _snapshot_changed(dag_run, existing, md5)
            log.info("candidate %s already trained in run %s; reusing it", key, existing.run_id)
            return CandidateResult(
                key=existing.tags[TAG_CANDIDATE_KEY],
                run_id=existing.run_id,
                model_uri=existing.tags[TAG_MODEL_URI],
                metrics={k: v for k, v in existing.metrics.items() if k in METRIC_DIRECTIONS},
            )
        log.warning("deleting half-written run %s of candidate %s (%s)", existing.run_id, key, existing.status)
        tracking.delete_run(existing.run_id)
    return None


def _candidate_tags(
    uc: UseCase, spec: CandidateSpec, parent: RunRecord, snapshot_path: str, lineage: Mapping[str, Any]
) -> dict[str, str]:
    inherited = {k: v for k, v in parent.tags.items() if not k.startswith(_NOT_INHERITED_PREFIXES)}
    return {
        **inherited,
        **_lineage_tags({"snapshot_path": snapshot_path, **lineage}),
        TAG_PARENT: parent.run_id,
        TAG_RUN_TYPE: "candidate",
        TAG_CANDIDATE_KEY: spec.key,
        TAG_CANDIDATE_SPEC: json.dumps(spec.to_dict(), sort_keys=True),
        "mlops.candidate": spec.name,
        "mlops.estimator": spec.estimator,
        TAG_USE_CASE: uc.name,
    }


def _candidate_log(
    uc: UseCase,
    fit: FitResult,
    snapshot_path: str,
    train_df: pd.DataFrame,
    holdout_df: pd.DataFrame,
    fit_seconds: float,
) -> tracking.CandidateLog:
    from mlops.training.candidates import features_and_target

    spec = fit.spec
    params = {k: str(v) for k, v in spec.params.items()}
    run_facts = {"estimator": spec.estimator, "n_train": len(train_df), "n_holdout": len(holdout_df),
                 "seed": uc.training.seed}  # fmt: skip
    return tracking.CandidateLog(
        params={**params, **run_facts},
        source=snapshot_path,
        target=uc.target,
        dataset_name=uc.name,
        train=train_df,
        holdout=holdout_df,
        pipeline=fit.pipeline,
        model_inputs=features_and_target(uc, holdout_df)[0],
        metrics=dict(fit.metrics),
        run_metrics={"fit_seconds": fit_seconds},
    )


def _log_diagnostics(logging_run: tracking.OpenRun, uc: UseCase, pipeline: Any, holdout_df: pd.DataFrame) -> None:
    """The holdout plots and the permutation importance behind one of them, under `plots/`."""
    from mlops.training.candidates import diagnostic_figures, feature_importance

    importance = feature_importance(uc, pipeline, holdout_df)
    figures = diagnostic_figures(uc, pipeline, holdout_df, importance)
    logging_run.log_figures({f"plots/{name}": figure for name, figure in figures.items()})
    logging_run.log_documents({"plots/feature_importance.json": importance})
