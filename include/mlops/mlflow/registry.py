"""The MLflow Model Registry, read and written in plain values: versions, their tags and aliases.

Aliases only (`@champion`, `@previous`, `@challenger`); registry stages are deprecated.
These are the primitives; when an alias moves and what a version is tagged with is
decided in `mlops.promotion`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.config import METRIC_DIRECTIONS
from mlops.mlflow.client import client, filter_literal, fluent_client, is_already_existing, is_missing
from mlops.naming import CHAMPION, TAG_RUN_KEY

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Model-version tag values are capped by the server; values are cut, never rejected.
_MAX_TAG = 5000


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str | None
    metrics: dict[str, float]
    """The holdout metrics logged on the version's training run."""
    tags: dict[str, str]
    """Model-version tags (gate decision, run key, rollback records)."""
    aliases: list[str]
    lineage: dict[str, str] = field(default_factory=dict)
    """The training run's lineage tags (snapshot_path, dvc_md5, git_commit, ...)."""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model_uri": self.model_uri}


def _client() -> MlflowClient:
    # No global state: the UI plugin reads the registry inside Airflow's API server.
    return client()


# ----------------------------------------------------------------------------- reads


def alias_version(model_name: str, alias: str) -> str | None:
    """The version `alias` points at, or None when the model or the alias does not exist."""
    try:
        mv = _client().get_model_version_by_alias(model_name, alias)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    return str(mv.version)


def version_tags(model_name: str, version: str) -> dict[str, str]:
    return dict(_client().get_model_version(model_name, version).tags)


def version_info(model_name: str, version: str) -> ModelVersionInfo:
    """A version with its aliases, tags, and its training run's metrics and lineage."""
    mlflow_client = _client()
    mv = mlflow_client.get_model_version(model_name, version)
    metrics: dict[str, float] = {}
    lineage: dict[str, str] = {}
    if mv.run_id:
        try:
            run = mlflow_client.get_run(mv.run_id)
        except Exception as exc:
            if not is_missing(exc):
                raise
        else:
            metrics = {k: float(v) for k, v in run.data.metrics.items() if k in METRIC_DIRECTIONS}
            lineage = {k: v for k, v in run.data.tags.items() if not k.startswith(("mlflow.", "mlops."))}
    return ModelVersionInfo(
        name=model_name,
        version=str(mv.version),
        run_id=mv.run_id or None,
        metrics=metrics,
        tags=dict(mv.tags),
        aliases=sorted(getattr(mv, "aliases", []) or []),
        lineage=lineage,
    )


def champion(model_name: str) -> ModelVersionInfo | None:
    """The `@champion` version, or None before the first promotion."""
    version = alias_version(model_name, CHAMPION)
    return version_info(model_name, version) if version is not None else None


def find_version_by_run_key(model_name: str, run_key: str) -> str | None:
    """The version an earlier attempt of this DAG run registered, if any."""
    name_filter = f"name = {filter_literal(model_name, 'model name')}"
    versions = _client().search_model_versions(
        f"{name_filter} and tags.`{TAG_RUN_KEY}` = {filter_literal(run_key, 'run key')}"
    )
    if not versions:
        return None
    return str(min(int(v.version) for v in versions))


def known_versions(model_name: str) -> list[str]:
    """Every registered version of the model, oldest first (empty for an unknown model)."""
    versions = _client().search_model_versions(f"name = {filter_literal(model_name, 'model name')}")
    return sorted((str(v.version) for v in versions), key=int)


def version_exists(model_name: str, version: str) -> bool:
    try:
        _client().get_model_version(model_name, version)
    except Exception as exc:
        if is_missing(exc):
            return False
        raise
    return True


def model_exists(model_name: str) -> bool:
    try:
        _client().get_registered_model(model_name)
    except Exception as exc:
        if is_missing(exc):
            return False
        raise
    return True


# ----------------------------------------------------------------------------- writes


def ensure_registered_model(model_name: str, tags: Mapping[str, str], description: str | None) -> None:
    """Create the registered model unless it exists (a concurrent creation counts as existing)."""
    mlflow_client = _client()
    try:
        mlflow_client.get_registered_model(model_name)
    except Exception as exc:
        if not is_missing(exc):
            raise
        try:
            mlflow_client.create_registered_model(model_name, tags=dict(tags), description=description)
        except Exception as create_exc:
            # Created concurrently by another task: fine, it exists now.
            if not is_already_existing(create_exc):
                raise


def register_version(model_uri: str, model_name: str, tags: Mapping[str, str]) -> str:
    """Register `model_uri` as a new version of `model_name`, tagged in the same call; returns the version."""
    import mlflow

    fluent_client()  # mlflow.register_model is fluent: it registers with the global registry URI
    return str(mlflow.register_model(model_uri, model_name, tags=dict(tags)).version)


def set_version_tags(model_name: str, version: str, tags: Mapping[str, str]) -> None:
    """Tag a version, one key at a time in the order given; values longer than the server takes are cut."""
    mlflow_client = _client()
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(model_name, version, key, value[:_MAX_TAG])


def set_alias(model_name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(model_name, alias, version)


def delete_alias(model_name: str, alias: str) -> None:
    _client().delete_registered_model_alias(model_name, alias)
