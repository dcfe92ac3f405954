"""Registered model versions as plain records: resolve an alias, download a version, load its pipeline.

The prediction service and batch scoring read models through this module only. Every
call takes the server explicitly and goes through `client()`, which changes no global
MLflow state, so a long-lived service never repoints anyone else's fluent calls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.mlflow.client import client, is_missing, tracking_uri

if TYPE_CHECKING:
    import pandas as pd

# The only types a skops model file may ask to be trusted with: all our pipelines hold.
SAFE_TYPE_PREFIXES = ("numpy.", "scipy.", "sklearn.")


class ModelNotFoundError(LookupError):
    """The registry has no version under the requested alias."""


@dataclass(frozen=True)
class VersionInfo:
    """The registered version an alias points at."""

    name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    """The version's tags as read with the alias (a canary's step and breach are among them)."""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class DownloadedVersion:
    """A registered version's files on local disk, with what its MLmodel file declares."""

    uri: str
    """`models:/<name>/<version>`, for messages."""
    local_dir: str
    signature: dict[str, Any] | None
    """The signature as MLflow writes it (`inputs`, `outputs` as JSON text); None when none was logged."""
    input_columns: list[dict[str, Any]] | None
    """The signature's input columns (`name`, `type`, `required`); None without a signature."""
    sklearn_flavor: dict[str, Any] | None
    """The MLmodel file's `sklearn` flavor section; None for a model of another flavor."""


def resolve_alias(model_name: str, alias: str = "champion", uri: str | None = None) -> VersionInfo:
    """The version `alias` points at; ModelNotFoundError when the model or the alias does not exist."""
    try:
        mv = client(uri).get_model_version_by_alias(model_name, alias)
    except Exception as exc:
        if is_missing(exc):
            raise ModelNotFoundError(
                f"registered model {model_name!r} has no @{alias} version yet; train and promote a model first"
            ) from exc
        raise
    aliases = tuple(getattr(mv, "aliases", ()) or ())
    return VersionInfo(model_name, str(mv.version), mv.run_id, aliases, dict(getattr(mv, "tags", None) or {}))


def tag_version(model_name: str, version: str, tags: dict[str, str], uri: str | None = None) -> None:
    """Set tags on a registered version (the service records a canary breach this way)."""
    registry = client(uri)
    for key, value in tags.items():
        registry.set_model_version_tag(model_name, version, key, value)


def download_version(info: VersionInfo, uri: str | None = None) -> DownloadedVersion:
    """Download a registered version's files and read its MLmodel metadata."""
    import mlflow.artifacts
    from mlflow.models import Model

    server = tracking_uri(uri)
    # The version's own artifact location, found with our client: a `models:/` URI would be
    # resolved against the process-global registry URI.
    source = client(server).get_model_version_download_uri(info.name, info.version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=server)
    meta = Model.load(local)
    signature = meta.signature
    return DownloadedVersion(
        uri=info.uri,
        local_dir=local,
        signature=signature.to_dict() if signature is not None else None,
        input_columns=signature.inputs.to_dict() if signature is not None and signature.inputs else None,
        sklearn_flavor=meta.flavors.get("sklearn"),
    )


def load_input_example(version: DownloadedVersion) -> pd.DataFrame | None:
    """The input example logged with the version, or None when it has none."""
    from mlflow.models import Model

    example: pd.DataFrame | None = Model.load(version.local_dir).load_input_example(version.local_dir)
    return example


def load_sklearn_model(version: DownloadedVersion) -> Any:
    """Load the sklearn flavor without trusting the artifact's own allow-list.

    MLflow gates every format behind MLFLOW_ALLOW_PICKLE_DESERIALIZATION because a
    skops file's trusted types are read from the model itself. Skops files are loaded
    here directly, trusting only numpy/scipy/scikit-learn types; pickle formats still
    need that variable set on purpose.
    """
    flavor = version.sklearn_flavor
    if flavor is None:
        raise ValueError(
            f"the model at {version.local_dir} has no sklearn flavor; the service serves scikit-learn pipelines"
        )
    if flavor.get("serialization_format") == "skops":
        import skops.io

        declared = flavor.get("skops_trusted_types") or []
        unsafe = [t for t in declared if not t.startswith(SAFE_TYPE_PREFIXES)]
        if unsafe:
            raise ValueError(
                f"refusing to load {version.local_dir}: it asks to trust types outside numpy/scipy/sklearn: {unsafe}"
            )
        return skops.io.load(os.path.join(version.local_dir, flavor["pickled_model"]), trusted=declared)
    import mlflow.sklearn

    return mlflow.sklearn.load_model(version.local_dir)
