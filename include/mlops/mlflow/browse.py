"""Read-only lookups in the registry and the tracking server, as plain records.

For the readers that show what the pipeline wrote (the MLOps page, the demo's timeline):
model versions with their aliases and tags, a run's metrics, the last value of a metric
across an experiment's runs, and runs found by their tags. Nothing here writes, and every
function takes the client to ask, so a long-lived process (the Airflow API server) reads
the server it was told without touching MLflow's process-global state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops.mlflow.client import filter_literal, is_missing, tag_filter
from mlops.mlflow.runs import RunRecord, record

if TYPE_CHECKING:
    from mlflow import MlflowClient

RUN_NAME_TAG = "mlflow.runName"
"""Where MLflow keeps a run's display name among its tags."""


@dataclass(frozen=True)
class VersionRecord:
    """What the platform reads of a registered model version."""

    name: str
    version: str
    run_id: str | None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    created: datetime | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class MetricPoint:
    """The last value one run logged for a metric, at the metric's own timestamp."""

    run: RunRecord
    when: datetime | None
    value: float


def _when(millis: int | None) -> datetime | None:
    return datetime.fromtimestamp(millis / 1000, tz=UTC) if millis else None


def version_record(mv: Any) -> VersionRecord:
    """An MLflow `ModelVersion` as a VersionRecord."""
    return VersionRecord(
        name=str(mv.name),
        version=str(mv.version),
        run_id=mv.run_id or None,
        aliases=sorted(getattr(mv, "aliases", []) or []),
        tags=dict(mv.tags or {}),
        created=_when(mv.creation_timestamp),
        updated=_when(mv.last_updated_timestamp),
    )


def _name_filter(model_name: str) -> str:
    return f"name = {filter_literal(model_name, 'model name')}"


def registered_model_exists(mlflow_client: MlflowClient, model_name: str) -> bool:
    try:
        mlflow_client.get_registered_model(model_name)
    except Exception as exc:
        if is_missing(exc):
            return False
        raise
    return True


def model_version(mlflow_client: MlflowClient, model_name: str, version: str) -> VersionRecord:
    """One version with its aliases (a search result does not carry them on every store)."""
    return version_record(mlflow_client.get_model_version(model_name, str(version)))


def newest_versions(mlflow_client: MlflowClient, model_name: str, limit: int) -> list[VersionRecord]:
    """The newest `limit` versions of a registered model, newest first."""
    found = mlflow_client.search_model_versions(
        _name_filter(model_name), max_results=max(limit, 1), order_by=["version_number DESC"]
    )
    return [model_version(mlflow_client, model_name, mv.version) for mv in found][:limit]


def all_versions(mlflow_client: MlflowClient, model_name: str) -> list[VersionRecord]:
    """Every version of a registered model, oldest first."""
    found = mlflow_client.search_model_versions(_name_filter(model_name))
    return sorted((version_record(mv) for mv in found), key=lambda v: int(v.version))


def versions_tagged(mlflow_client: MlflowClient, model_name: str, key: str, value: str) -> list[VersionRecord]:
    """The versions of `model_name` whose tag `key` is `value`, newest first."""
    found = mlflow_client.search_model_versions(f"{_name_filter(model_name)} and {tag_filter(key, value)}")
    ordered = sorted(found, key=lambda mv: int(mv.version), reverse=True)
    return [model_version(mlflow_client, model_name, mv.version) for mv in ordered]


def version_by_alias(mlflow_client: MlflowClient, model_name: str, alias: str) -> VersionRecord | None:
    """The version `alias` points at, or None when the alias (or the model) does not exist."""
    try:
        return version_record(mlflow_client.get_model_version_by_alias(model_name, alias))
    except Exception as exc:
        if is_missing(exc):
            return None
        raise


def run_metrics(mlflow_client: MlflowClient, run_id: str) -> dict[str, float]:
    """Every metric of a run (last values); empty if the run cannot be read, e.g. was deleted."""
    try:
        return {k: float(v) for k, v in mlflow_client.get_run(run_id).data.metrics.items()}
    except Exception:  # a deleted run must not hide the version that points at it
        return {}


def experiment_id(mlflow_client: MlflowClient, name: str) -> str | None:
    experiment = mlflow_client.get_experiment_by_name(name)
    return str(experiment.experiment_id) if experiment is not None else None


def runs_tagged(mlflow_client: MlflowClient, experiment_name: str, tags: Mapping[str, str]) -> list[RunRecord]:
    """The runs of `experiment_name` carrying every tag in `tags`, oldest first; none if it does not exist."""
    found_id = experiment_id(mlflow_client, experiment_name)
    if found_id is None:
        return []
    runs = mlflow_client.search_runs(
        [found_id],
        filter_string=" and ".join(tag_filter(key, value) for key, value in tags.items()),
        order_by=["attributes.start_time ASC"],
    )
    return [record(run) for run in runs]


def last_metric_values(mlflow_client: MlflowClient, experiment: str, metric: str, limit: int) -> list[MetricPoint]:
    """The last `metric` value of each of the newest `limit` runs of experiment id `experiment` that logged it.

    Newest run first. Only runs with a value of 0 or more count (the metrics read this
    way are shares). The timestamp is the metric's own, which a run may set to the time
    its data describes rather than the time it ran.
    """
    runs = mlflow_client.search_runs(
        [experiment],
        filter_string=f"metrics.{metric} >= 0",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    points = []
    for run in runs:
        history = mlflow_client.get_metric_history(run.info.run_id, metric)
        if history:
            last = history[-1]
            points.append(MetricPoint(run=record(run), when=_when(last.timestamp), value=float(last.value)))
    return points


def run_name(run: RunRecord) -> str:
    """The run's display name, or its id when it has none."""
    return run.tags.get(RUN_NAME_TAG) or run.run_id
