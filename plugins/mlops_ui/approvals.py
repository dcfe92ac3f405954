"""Promotions waiting for a person, from Airflow's REST API, with the gate's evidence from MLflow.

The open human-in-the-loop requests are asked for with the caller's own token, so a user
sees only the requests Airflow lets them see. The page links each to Airflow's own
approve/reject form instead of answering requests itself: Airflow then checks who may
answer and records who did.
"""

from __future__ import annotations

import logging

from fastapi import Request
from mlops_ui.access import caller_token

from mlops.config import UseCase
from mlops.naming import training_dag_id
from mlops.platform.airflow_api import AirflowAPI
from mlops.settings import get_settings
from mlops.ui.views import UseCaseView, pending_approvals

log = logging.getLogger(__name__)


def airflow_api_url() -> str:
    """Where this server's own REST API answers from inside the deployment.

    Workers reach the API server at the Execution API URL (`.../execution/`), which
    is right inside the local stack and the compose network alike; `api.base_url` is
    what browsers use and may not be reachable from here.
    """
    from airflow.configuration import conf

    execution = str(conf.get("core", "execution_api_server_url", fallback="") or "").rstrip("/")
    if execution.endswith("/execution"):
        return execution.removesuffix("/execution")
    return str(conf.get("api", "base_url", fallback="http://localhost:8080")).rstrip("/")


def with_approvals(request: Request, use_case: UseCase, view: UseCaseView) -> UseCaseView:
    """Add the promotions of `use_case` that wait for a person; failures become a note on the page."""
    if not use_case.approval.required:
        return view
    dag_id = training_dag_id(use_case.name)
    try:
        requests = AirflowAPI.for_token(airflow_api_url(), caller_token(request)).open_hitl_requests(dag_id)
    except Exception as exc:  # the rest of the page must still render
        log.warning("could not list approval requests of %s: %s", dag_id, exc)
        view.errors.append(f"Airflow's REST API did not list the approval requests of {dag_id}: {exc}")
        return view
    try:
        view.pending = pending_approvals(use_case, requests, get_settings())
    except Exception as exc:
        view.errors.append(f"MLflow could not explain the approval requests of {dag_id}: {type(exc).__name__}: {exc}")
    return view
