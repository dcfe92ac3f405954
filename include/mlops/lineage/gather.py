"""Read the records a lineage chain is built from: MLflow, the DVC cache and remotes, the prediction log.

`resolve` turns what a person types (`model@alias`, `model/version`, a prediction's
request id) into a model version; `gather` reads everything the chain needs about it.
Each read goes through its seam (`mlops.mlflow.browse` and `.lineage`,
`mlops.data.versioning`, `mlops.predictionlog.lookup`), and returns plain records.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.config import UseCase, find_use_case, load_all
from mlops.lineage.chain import Records
from mlops.mlflow import browse
from mlops.mlflow import lineage as mlflow_lineage
from mlops.mlflow.client import client
from mlops.mlflow.runs import RunRecord
from mlops.naming import (
    GATE_DECISION_ARTIFACT,
    TAG_DVC_MD5,
    TAG_MONITORING_ACTION,
    TAG_MONITORING_REPORT,
    TAG_MONITORING_RUN_KEY,
    TAG_PARENT,
    USE_CASE_ARTIFACT,
    monitoring_experiment,
    report_folder_name,
)

# A client from `mlops.mlflow.client.client()`; typed loosely so that only mlops.mlflow names MLflow.
MlflowClient = Any

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^(?P<model>[^@/\s]+)/(?P<version>\d+)$")
_ALIAS = re.compile(r"^(?P<model>[^@/\s]+)@(?P<alias>[A-Za-z0-9_-]+)$")


class LineageError(LookupError):
    """What was asked for does not exist; the message says what does."""


@dataclass(frozen=True)
class Target:
    """A model version to trace, and the prediction that led to it, if one did."""

    model_name: str
    version: str
    use_case: UseCase | None
    prediction: dict[str, Any] | None = None


def _use_case_of_model(model_name: str, use_case: str | None) -> UseCase | None:
    """The configured use case registering `model_name` (checked against `use_case` when given)."""
    if use_case is not None:
        found = find_use_case(use_case)
        if found.model_name != model_name:
            raise LineageError(
                f"use case {use_case!r} registers {found.model_name!r}, not {model_name!r}; drop --use-case "
                f"or name one of its versions ({found.model_name}@champion)"
            )
        return found
    return next((uc for uc in load_all() if uc.model_name == model_name), None)


def resolve(target: str, use_case: str | None = None, mlflow_client: MlflowClient | None = None) -> Target:
    """`model@alias`, `model/version` or a prediction's request id, as the model version it names."""
    mlflow_client = mlflow_client or client()
    if match := _ALIAS.match(target):
        model, alias = match["model"], match["alias"]
        _require_model(mlflow_client, model)
        found = browse.version_by_alias(mlflow_client, model, alias)
        if found is None:
            aliases = sorted(mlflow_lineage.model_aliases(mlflow_client, model))
            raise LineageError(f"{model} has no @{alias}; its aliases: {', '.join('@' + a for a in aliases) or 'none'}")
        return Target(model, found.version, _use_case_of_model(model, use_case))
    if match := _VERSION.match(target):
        model, version = match["model"], match["version"]
        _require_model(mlflow_client, model)
        known = [v.version for v in browse.all_versions(mlflow_client, model)]
        if version not in known:
            raise LineageError(f"{model} has no version {version}; registered versions: {', '.join(known) or 'none'}")
        return Target(model, version, _use_case_of_model(model, use_case))
    return _prediction_target(target, use_case)


def _require_model(mlflow_client: MlflowClient, model: str) -> None:
    if not browse.registered_model_exists(mlflow_client, model):
        configured = sorted(uc.model_name for uc in load_all())
        raise LineageError(
            f"no registered model {model!r} in MLflow at {mlflow_client.tracking_uri}; "
            f"the configured use cases register {', '.join(configured) or 'none'}"
        )


def _prediction_target(request_id: str, use_case: str | None) -> Target:
    from mlops.predictionlog.lookup import find_prediction

    use_cases = [find_use_case(use_case)] if use_case else load_all()
    row = find_prediction(request_id, [uc.name for uc in use_cases])
    if row is None:
        searched = ", ".join(uc.name for uc in use_cases) or "no use case"
        raise LineageError(
            f"{request_id!r} is neither `model@alias`, `model/version` nor a request id in the prediction log "
            f"of {searched}; pass --use-case to search one use case, or name a model version"
        )
    owner = next(uc for uc in use_cases if uc.name == row["use_case"])
    return Target(str(row["model_name"]), str(row["model_version"]), owner, row)


def gather(target: Target, *, check_snapshot: bool = True, mlflow_client: MlflowClient | None = None) -> Records:
    """Everything the chain of `target` is built from."""
    mlflow_client = mlflow_client or client()
    version = browse.model_version(mlflow_client, target.model_name, target.version)
    training = mlflow_lineage.run_or_none(mlflow_client, version.run_id)
    parent = mlflow_lineage.run_or_none(mlflow_client, training.tags.get(TAG_PARENT)) if training else None
    use_case, origin = _use_case_as_trained(mlflow_client, training, target.use_case)
    availability, availability_error = _snapshot_availability(training, check_snapshot)
    return Records(
        version=version,
        versions=browse.all_versions(mlflow_client, target.model_name),
        training_run=training,
        parent_run=parent,
        monitoring_run=_triggering_monitoring_run(mlflow_client, parent or training),
        availability=availability,
        availability_error=availability_error,
        use_case=use_case,
        use_case_origin=origin,
        prediction=target.prediction,
        gate_decision=_gate_decision(mlflow_client, parent),
    )


def _use_case_as_trained(
    mlflow_client: MlflowClient, training: RunRecord | None, configured: UseCase | None
) -> tuple[UseCase | None, str]:
    """The config recorded with the training run, else the configured one as it is now."""
    if training is not None:
        recorded = mlflow_lineage.artifact_json(mlflow_client, training.run_id, USE_CASE_ARTIFACT)
        if recorded is not None:
            try:
                return UseCase.model_validate(recorded), f"recorded with run {training.run_id} ({USE_CASE_ARTIFACT})"
            except ValueError as exc:
                log.warning("the config recorded with run %s no longer parses: %s", training.run_id, exc)
    if configured is not None:
        return configured, f"configs/{configured.name}.yaml as it is now (the run recorded no config)"
    return None, "no configured use case registers this model"


def _snapshot_availability(training: RunRecord | None, check_snapshot: bool) -> tuple[Any, str | None]:
    """The DVC check of the training snapshot, or why there is none."""
    from mlops.data import versioning

    md5 = training.tags.get(TAG_DVC_MD5) if training else None
    if not md5:
        return None, "no DVC md5 recorded"
    if not check_snapshot:
        return None, "not checked"
    try:
        return versioning.check(md5), None
    except versioning.VersioningError as exc:
        return None, f"could not be checked: {exc}"


def _triggering_monitoring_run(mlflow_client: MlflowClient, run: RunRecord | None) -> RunRecord | None:
    """The monitoring run whose report the training run names (its reports folder is its run key)."""
    report = run.tags.get(TAG_MONITORING_REPORT) if run else None
    if not report or report == "None":
        return None
    folder = Path(report).parent
    use_case = folder.parent.name
    retrains = browse.runs_tagged(mlflow_client, monitoring_experiment(use_case), {TAG_MONITORING_ACTION: "retrain"})
    matches = [r for r in retrains if report_folder_name(r.tags.get(TAG_MONITORING_RUN_KEY, "")) == folder.name]
    return matches[-1] if matches else None


def _gate_decision(mlflow_client: MlflowClient, parent: RunRecord | None) -> dict[str, Any] | None:
    if parent is None:
        return None
    document = mlflow_lineage.artifact_json(mlflow_client, parent.run_id, GATE_DECISION_ARTIFACT)
    return document if isinstance(document, dict) else None
