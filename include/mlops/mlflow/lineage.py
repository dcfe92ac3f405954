"""What lineage, reproductions and model cards read from MLflow and write back, as plain values.

Reads take the client to ask (`mlops.mlflow.client.client()`), as in `browse`, so the
MLOps page inside the Airflow API server reads the server it was told without touching
MLflow's process-global state. The writes are small: a text artifact on an existing run
(the model card), a registered model's description (the champion's card), and one run of
the `<use case>-reproduce` experiment.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlops.mlflow.client import client as default_client
from mlops.mlflow.client import is_missing
from mlops.mlflow.runs import RunRecord, record

if TYPE_CHECKING:
    from mlflow import MlflowClient

# The registry keeps a registered model's description in a column of this many characters.
MAX_DESCRIPTION = 5000


def run_or_none(mlflow_client: MlflowClient, run_id: str | None) -> RunRecord | None:
    """The run, or None when there is no id or the run is gone (deleted, another server)."""
    if not run_id:
        return None
    try:
        return record(mlflow_client.get_run(run_id))
    except Exception as exc:
        if is_missing(exc):
            return None
        raise


def model_aliases(mlflow_client: MlflowClient, model_name: str) -> dict[str, str]:
    """Every alias of a registered model and the version it points at."""
    aliases = mlflow_client.get_registered_model(model_name).aliases
    return {str(alias): str(version) for alias, version in aliases.items()}


def artifact_text(mlflow_client: MlflowClient, run_id: str, path: str) -> str | None:
    """The text of artifact `path` of a run, or None when the run has no such artifact."""
    import tempfile

    parent, _, name = path.rpartition("/")
    listed = {a.path for a in mlflow_client.list_artifacts(run_id, parent or None)}
    if path not in listed:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        local = mlflow_client.download_artifacts(run_id, path, scratch)
        with open(local, encoding="utf-8") as handle:
            return handle.read()


def artifact_json(mlflow_client: MlflowClient, run_id: str, path: str) -> Any:
    """The JSON artifact `path` of a run, or None when it has none."""
    text = artifact_text(mlflow_client, run_id, path)
    return json.loads(text) if text is not None else None


def log_text(run_id: str, path: str, text: str, mlflow_client: MlflowClient | None = None) -> None:
    """Write `text` as artifact `path` of an existing run (finished runs take artifacts too); overwrites."""
    (mlflow_client or default_client()).log_text(run_id, text, path)


def set_model_description(model_name: str, text: str, mlflow_client: MlflowClient | None = None) -> None:
    """The registered model's description (Markdown in MLflow's UI), cut to what the registry stores."""
    if len(text) > MAX_DESCRIPTION:
        note = "\n\n… (cut to fit the registry; the whole card is the version's `model_card.md` artifact)"
        text = text[: MAX_DESCRIPTION - len(note)] + note
    (mlflow_client or default_client()).update_registered_model(model_name, description=text)


def log_reproduction(
    experiment_name: str,
    run_name: str,
    *,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    documents: Mapping[str, Any],
    mlflow_client: MlflowClient | None = None,
) -> RunRecord:
    """One finished run of a retraining in `experiment_name` (created if missing); returns it."""
    from mlflow.entities import Metric, Param

    mlflow_client = mlflow_client or default_client()
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    if experiment is None:
        experiment_id = mlflow_client.create_experiment(experiment_name)
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment_id)
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    run_id = run.info.run_id
    try:
        mlflow_client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items() if math.isfinite(float(v))],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        for path, document in documents.items():
            mlflow_client.log_dict(run_id, document, path)
    except Exception:
        mlflow_client.set_terminated(run_id, status="FAILED")
        raise
    mlflow_client.set_terminated(run_id, status="FINISHED")
    return record(mlflow_client.get_run(run_id))
