"""The MLOps page: a FastAPI app mounted by the Airflow API server under /mlops.

Airflow mounts plugin apps with `app.mount()`, which inherits none of the core
API's auth dependencies, so every route here checks the caller's Airflow JWT
(Authorization: Bearer, or the UI's `_token` cookie) with Airflow's own
`get_user` and auth manager. Anonymous callers get 401 and nothing else.

Data comes from `mlops.ui_data` (MLflow and the project's folders, never XCom).
Files (Evidently reports, Data Docs) are served only from their own folders via
`ui_data.resolve_confined`, and sandboxed with a CSP so a report's scripts run
in an opaque origin, away from the Airflow session.
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
    body = _templates.get_template(template).render(prefix=prefix, **context)
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
        settings = get_settings()
        views = [ui_data.gather_use_case(uc, settings) for uc in load_all(settings.configs_dir)]
        charts = {v.name: ui_data.drift_chart_svg(v.drift, v.drift_threshold) for v in views}
        return _page(request, "overview.html", views=views, charts=charts, aliases=ui_data.ALIASES)

    @app.get("/dag/{dag_id}", response_class=HTMLResponse)
    def dag_view(request: Request, dag_id: str, user: User) -> HTMLResponse:
        require_dag_access(request, dag_id, user)
        view = ui_data.gather_use_case(_use_case_of(dag_id), get_settings())
        chart = ui_data.drift_chart_svg(view.drift, view.drift_threshold)
        return _page(
            request, "overview.html", views=[view], charts={view.name: chart}, aliases=ui_data.ALIASES, dag_id=dag_id
        )

    @app.get("/dag/{dag_id}/run/{run_id}", response_class=HTMLResponse)
    def run_view(request: Request, dag_id: str, run_id: str, user: User) -> HTMLResponse:
        require_dag_access(request, dag_id, user)
        run = ui_data.gather_run(_use_case_of(dag_id), dag_id, run_id, get_settings())
        chart = ui_data.drift_chart_svg(run.use_case.drift, run.use_case.drift_threshold)
        return _page(request, "run.html", run=run, view=run.use_case, chart=chart, aliases=ui_data.ALIASES)

    @app.get("/reports/{path:path}")
    def report_file(path: str, user: User) -> Response:
        return _serve(get_settings().reports_dir, path)

    @app.get("/data-docs/{path:path}")
    def data_docs_file(path: str, user: User) -> Response:
        return _serve(get_settings().data_docs_dir, path)

    # HOOK(approval): the lead adds the human-approval endpoint here once the HITL
    # wiring exists, e.g. `POST /approve/{use_case}/{version}` that checks
    # `require_dag_access(..., method="PUT")` and answers the pending HITL task
    # through Airflow's REST API. The page shows pending approvals in the block
    # marked HOOK(approval) in templates/overview.html.

    return app


app = create_app()
