"""Links out of the MLOps page and the task buttons: the MLflow UI, Airflow's own pages, the plugin's files.

Pure string building, so the page, the extra links and the tests share one spelling of
each route.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from mlops.settings import Settings
from mlops.ui.files import relative_to_root

PLUGIN_PREFIX = "/mlops"
"""Where the Airflow API server mounts the plugin's app."""


def mlflow_ui_base(settings: Settings) -> str:
    """MLflow as browsers reach it: the configured UI URL, else the tracking server."""
    return settings.mlflow_ui_url or settings.mlflow_tracking_uri


def run_url(base: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/#/runs/{quote(run_id, safe='')}"


def model_url(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/#/models/{quote(name, safe='')}"


def model_version_url(base: str, name: str, version: str) -> str:
    return f"{model_url(base, name)}/versions/{quote(str(version), safe='')}"


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{quote(experiment_id, safe='')}"


def dag_path(dag_id: str) -> str:
    """Airflow UI route of a DAG: its grid of runs beside the overview."""
    return f"/dags/{quote(dag_id, safe='')}"


def dag_run_path(dag_id: str, dag_run_id: str) -> str:
    """Airflow UI route of a DAG run."""
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(dag_run_id, safe='')}"


def required_action_path(dag_id: str, dag_run_id: str, task_id: str, map_index: int = -1) -> str:
    """Airflow UI route of a task instance's Required Actions tab (its approve/reject form)."""
    mapped = f"/mapped/{map_index}" if map_index >= 0 else ""
    parts = [quote(p, safe="") for p in (dag_id, dag_run_id, task_id)]
    return f"/dags/{parts[0]}/runs/{parts[1]}/tasks/{parts[2]}{mapped}/required_actions"


def plugin_file_url(airflow_base: str, kind: str, root: Path, path: object) -> str:
    """URL of a file the plugin serves from `root` (kind `reports` or `data-docs`); '' if outside it."""
    relative = relative_to_root(root, str(path)) if isinstance(path, str) and path else None
    if relative is None:
        return ""
    return f"{airflow_base}{PLUGIN_PREFIX}/{kind}/{quote(relative)}"
