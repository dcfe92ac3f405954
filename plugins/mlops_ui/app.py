"""The MLOps page: a FastAPI app mounted by the Airflow API server under /mlops.

Airflow mounts plugin apps with `app.mount()`, which inherits none of the core
API's auth dependencies, so every route here checks the caller's Airflow JWT
(Authorization: Bearer, or the UI's `_token` cookie) with Airflow's own
`get_user` and auth manager. Anonymous callers get 401 and nothing else.

Data comes from `mlops.ui_data` (MLflow and the project's folders, never XCom).
Files (Evidently reports, Data Docs) are served only from their own folders via
`ui_data.resolve_confined`, and sandboxed with a CSP so a report's scripts run
in an opaque origin, away from the Airflow session.

Promotions waiting for a person come from Airflow's REST API (open human-in-the-loop
requests), asked with the caller's own token. The page links each to Airflow's own
approve/reject form instead of answering requests itself: Airflow then checks who
may answer and records who did.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlops import ui_data
from mlops.airflow_api import AirflowAPI
from mlops.config import ConfigError, UseCase, find_use_case, load_all
from mlops.settings import get_settings

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)
# Reports are generated HTML with inline scripts and data from production traffic:
# run them in an opaque origin so they cannot reach the Airflow session or API.
FILE_CSP = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-downloads; frame-ancestors 'self'"

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True
)
_templates.filters["pct"] = lambda v: f"{v:.0%}" if isinstance(v, (int, float)) else "–"
_templates.filters["num"] = lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else "–"
_templates.filters["when"] = lambda v: f"{v:%Y-%m-%d %H:%M} UTC" if v else "–"
_templates.filters["urlpath"] = lambda v: quote(str(v))


# --------------------------------------------------------------------------- auth


async def current_user(request: Request) -> Any:
    """The Airflow user behind the request's JWT, or 401/403 (Airflow's own checks)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    user = await get_user(request, None, credentials)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(403, "Forbidden")
    return user


User = Annotated[Any, Depends(current_user)]


def caller_token(request: Request) -> str:
    """The JWT the caller authenticated with, the way Airflow's `get_user` picks it."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")


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


STATIC_FILES = {"mlops.css": "text/css", "mlops.js": "text/javascript"}


def require_dag_access(request: Request, dag_id: str, user: Any) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    allowed = get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
    )
    if not allowed:
        raise HTTPException(403, f"Forbidden: no read access to DAG {dag_id}")


# --------------------------------------------------------------------------- helpers


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    prefix = request.scope.get("root_path", "").rstrip("/")
    body = _templates.get_template(template).render(prefix=prefix, airflow_root=_airflow_root(request), **context)
    response = HTMLResponse(body, status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _serve(root: Path, path: str) -> Response:
    try:
        file = ui_data.resolve_confined(root, path)
    except ui_data.PathRefused as exc:
        log.info("refused file request %r under %s: %s", path, root, exc)
        raise HTTPException(404, "Not found") from None
    response = FileResponse(file)
    response.headers["Content-Security-Policy"] = FILE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _with_approvals(request: Request, use_case: UseCase, view: ui_data.UseCaseView) -> ui_data.UseCaseView:
    """Add the promotions of `use_case` that wait for a person; failures become a note on the page."""
    if not use_case.approval.required:
        return view
    dag_id = f"train_{use_case.name}"
    try:
        requests = AirflowAPI.for_token(airflow_api_url(), caller_token(request)).open_hitl_requests(dag_id)
    except Exception as exc:  # the rest of the page must still render
        log.warning("could not list approval requests of %s: %s", dag_id, exc)
        view.errors.append(f"Airflow's REST API did not list the approval requests of {dag_id}: {exc}")
        return view
    try:
        view.pending = ui_data.pending_approvals(use_case, requests, get_settings())
    except Exception as exc:
        view.errors.append(f"MLflow could not explain the approval requests of {dag_id}: {type(exc).__name__}: {exc}")
    return view


def _gather(request: Request, use_case: UseCase) -> ui_data.UseCaseView:
    return _with_approvals(request, use_case, ui_data.gather_use_case(use_case, get_settings()))


def _airflow_root(request: Request) -> str:
    """The Airflow UI root as seen by the browser: this app's mount point minus its own prefix."""
    return str(request.scope.get("root_path", "")).rstrip("/").removesuffix("/mlops")


def _use_case_of(dag_id: str) -> UseCase:
    name = ui_data.use_case_of_dag(dag_id)
    if name is None:
        raise HTTPException(404, f"DAG {dag_id} belongs to no use case (expected train_/monitor_/score_<use case>)")
    try:
        return find_use_case(name)
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None


# --------------------------------------------------------------------------- app


def create_app() -> FastAPI:
    app = FastAPI(title="MLOps", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/static/{name}")
    def static_file(name: str, user: User) -> Response:
        # A fixed list instead of StaticFiles: a mount would bypass the login check.
        if name not in STATIC_FILES:
            raise HTTPException(404, "Not found")
        return FileResponse(HERE / "static" / name, media_type=STATIC_FILES[name])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return _page(request, "error.html", status_code=exc.status_code, status=exc.status_code, detail=exc.detail)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, user: User) -> HTMLResponse:
        views = [_gather(request, uc) for uc in load_all(get_settings().configs_dir)]
        charts = {v.name: ui_data.drift_chart_svg(v.drift, v.drift_threshold) for v in views}
        return _page(request, "overview.html", views=views, charts=charts, aliases=ui_data.ALIASES)

    @app.get("/dag/{dag_id}", response_class=HTMLResponse)
    def dag_view(request: Request, dag_id: str, user: User) -> HTMLResponse:
        require_dag_access(request, dag_id, user)
        view = _gather(request, _use_case_of(dag_id))
        chart = ui_data.drift_chart_svg(view.drift, view.drift_threshold)
        return _page(
            request, "overview.html", views=[view], charts={view.name: chart}, aliases=ui_data.ALIASES, dag_id=dag_id
        )

    @app.get("/dag/{dag_id}/run/{run_id}", response_class=HTMLResponse)
    def run_view(request: Request, dag_id: str, run_id: str, user: User) -> HTMLResponse:
        require_dag_access(request, dag_id, user)
        use_case = _use_case_of(dag_id)
        run = ui_data.gather_run(use_case, dag_id, run_id, get_settings())
        _with_approvals(request, use_case, run.use_case)
        chart = ui_data.drift_chart_svg(run.use_case.drift, run.use_case.drift_threshold)
        return _page(request, "run.html", run=run, view=run.use_case, chart=chart, aliases=ui_data.ALIASES)

    @app.get("/reports/{path:path}")
    def report_file(path: str, user: User) -> Response:
        return _serve(get_settings().reports_dir, path)

    @app.get("/data-docs/{path:path}")
    def data_docs_file(path: str, user: User) -> Response:
        return _serve(get_settings().data_docs_dir, path)

    return app


app = create_app()
