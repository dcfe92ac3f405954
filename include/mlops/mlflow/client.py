"""The one way the package gets an MLflow client, quotes a search filter and reads "not found".

Everything under `mlops.mlflow` builds on this module, and nothing outside `mlops.mlflow`
imports MLflow (tests/unit/test_import_boundaries.py enforces it). MLflow is imported inside
the functions so importing this module stays free for the UI plugin and the DAG parse.

Two kinds of client, because MLflow's fluent API (`mlflow.start_run`, `log_model`) keeps its
server in process-global state:
- `client()` only builds an `MlflowClient` for a server; it changes no global state, so a
  long-lived process (the Airflow API server with the UI plugin, the prediction service) can
  talk to the configured server without repointing anyone else's fluent calls.
- `fluent_client()` also points the fluent API at the server; the task code that logs runs
  and models with the fluent API calls it first, at call time and never at import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mlops.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow's error codes for an entity (model, version, alias, run, experiment) that does not
# exist. The registry answers a missing alias with INVALID_PARAMETER_VALUE, a missing run
# with RESOURCE_DOES_NOT_EXIST, and some stores with NOT_FOUND.
MISSING_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
ALREADY_EXISTS_CODE = "RESOURCE_ALREADY_EXISTS"


def tracking_uri(uri: str | None = None) -> str:
    """`uri`, or the configured tracking server (read at call time: tests and the stack change it)."""
    return uri or get_settings().mlflow_tracking_uri


def client(uri: str | None = None) -> MlflowClient:
    """An `MlflowClient` for `uri` (default: the configured server); no global state changes."""
    from mlflow import MlflowClient

    server = tracking_uri(uri)
    return MlflowClient(tracking_uri=server, registry_uri=server)


def fluent_client(uri: str | None = None) -> MlflowClient:
    """Like `client()`, and points MLflow's fluent API (start_run, log_model) at the same server."""
    import mlflow

    server = tracking_uri(uri)
    mlflow.set_tracking_uri(server)
    mlflow.set_registry_uri(server)
    return client(server)


def quiet_console() -> None:
    """Keep MLflow's own console output (run links, download progress bars) out of a command's output.

    For commands whose stdout is their result (`mlops lineage --json`, `mlops reproduce`'s table);
    a variable set already keeps its value.
    """
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def is_missing(exc: BaseException) -> bool:
    """Whether `exc` is MLflow saying the entity asked for does not exist."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in MISSING_CODES


def is_already_existing(exc: BaseException) -> bool:
    """Whether `exc` is MLflow refusing to create an entity another process created first."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == ALREADY_EXISTS_CODE


def filter_literal(value: str, what: str) -> str:
    """`value` as a quoted literal for an MLflow search filter; `what` names it in the error."""
    # MLflow's filter grammar has no escape for quotes inside a string literal.
    if "'" in value:
        raise ValueError(f"{what} {value!r} contains a single quote, which MLflow search filters cannot express")
    return f"'{value}'"


def tag_filter(key: str, value: str) -> str:
    """`tags.`key` = 'value'`: a tag equality clause, the key backquoted (tag keys contain dots)."""
    return f"tags.`{key}` = {filter_literal(value, key)}"


def resume_run(run_id: str, experiment_id: str | None = None) -> Any:
    """`mlflow.start_run(run_id=...)` that works whatever experiment this process last set.

    The fluent API refuses to resume a run whose experiment differs from the process's
    active one ("active experiment ID does not match environment run ID"), and that state
    outlives a task in any process that runs several: a Celery prefork worker, `dag.test()`.
    Pointing it at the run's own experiment first makes resuming independent of history.
    """
    import mlflow

    mlflow_client = fluent_client()
    if experiment_id is None:
        experiment_id = mlflow_client.get_run(run_id).info.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return mlflow.start_run(run_id=run_id)
