"""The MLOps Airflow plugin: the "MLOps" page, a "Model" tab on DAGs and runs, task extra links.

The page is a FastAPI app mounted at /mlops (see mlops_ui/app.py); the external
views put it in the navigation and as tabs. `href`s are relative to the Airflow
base URL, which keeps them right behind a proxy with a path prefix.
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

# Airflow appends the plugins folder to sys.path, but not before every process has
# imported this file (the dag-processor may load plugins first); be explicit.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)

from mlops_ui.app import app as mlops_app  # noqa: E402

from mlops.orchestration.links import all_links  # noqa: E402


class MLOpsPlugin(AirflowPlugin):
    name = "mlops"
    fastapi_apps = [{"app": mlops_app, "url_prefix": "/mlops", "name": "MLOps"}]
    external_views = [
        {"name": "MLOps", "href": "mlops/", "destination": "nav", "url_route": "mlops", "nav_top_level": True},
        {"name": "Model", "href": "mlops/dag/{DAG_ID}", "destination": "dag", "url_route": "mlops-dag"},
        {
            "name": "Model",
            "href": "mlops/dag/{DAG_ID}/run/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "mlops-run",
        },
    ]
    global_operator_extra_links = all_links()
