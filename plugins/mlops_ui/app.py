"""The MLOps page: a FastAPI app mounted by the Airflow API server under /mlops.

Airflow mounts plugin apps with `app.mount()`, which inherits none of the core
API's auth dependencies, so every route here checks the caller's Airflow JWT
(Authorization: Bearer, or the UI's `_token` cookie) with Airflow's own
`get_user` and auth manager. Anonymous callers get 401 and nothing else.
Beyond that, a user sees a use case (its section, its DAG tabs, its reports and
Data Docs pages) only if the auth manager lets them read its training and
monitoring DAGs and their runs, asked the way Airflow's own routes ask it: a batch
check per use case with each DAG's team (multi-team deployments restrict by team).

Data comes from `mlops.ui_data` (MLflow and the project's folders, never XCom).
Files (Evidently reports, Data Docs) are served only from their own folders via
`ui_views.resolve_confined`, and sandboxed with a CSP so a report's scripts run
in an opaque origin, away from the Airflow session.

Promotions waiting for a person come from Airflow's REST API (open human-in-the-loop
requests), asked with the caller's own token. The page links each to Airflow's own
approve/reject form instead of answering requests itself: Airflow then checks who
may answer and records who did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlops.config import ConfigError, UseCase, find_use_case, load_all
from mlops.platform.airflow_api import AirflowAPI
from mlops.settings import get_settings
from mlops.ui import views as ui_views

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


def may_read_dags(user: Any, dag_ids: list[list[str]]) -> list[bool]:
    """For each group of DAG ids: may `user` read all of them and their runs?

    The auth manager's batch check, one batch per group, with each DAG's team as
    Airflow's own routes look it up (`requires_access_dag`): without the team, a
    multi-team auth manager would judge every DAG as belonging to no team.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.batch_apis import IsAuthorizedDagRequest
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    teams = DagModel.get_dag_id_to_team_name_mapping(sorted({d for group in dag_ids for d in group}))
    manager = get_auth_manager()
    answers = []
    for group in dag_ids:
        requests: list[IsAuthorizedDagRequest] = [
            {"method": "GET", "access_entity": entity, "details": DagDetails(id=dag_id, team_name=teams.get(dag_id))}
            for dag_id in group
            for entity in (None, DagAccessEntity.RUN)
        ]
        answers.append(bool(manager.batch_is_authorized_dag(requests, user=user)))
    return answers


def readable_use_cases(user: Any, use_cases: list[UseCase]) -> list[UseCase]:
    """The use cases whose training and monitoring DAGs `user` may read (see `ui_views.use_case_dag_ids`)."""
    allowed = may_read_dags(user, [list(ui_views.use_case_dag_ids(uc.name)) for uc in use_cases])
    return [uc for uc, ok in zip(use_cases, allowed, strict=True) if ok]


def require_dag_access(dag_id: str, use_case: UseCase, user: Any) -> None:
    """403 unless `user` may read `dag_id` and the use case it belongs to (its tab shows the whole use case)."""
    if not all(may_read_dags(user, [[dag_id], list(ui_views.use_case_dag_ids(use_case.name))])):
        raise HTTPException(403, f"Forbidden: no read access to DAG {dag_id} or to the DAGs of {use_case.name}")


def all_use_cases() -> list[UseCase]:
    return load_all(get_settings().configs_dir)


# --------------------------------------------------------------------------- helpers


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    prefix = request.scope.get("root_path", "").rstrip("/")
    body = _templates.get_template(template).render(prefix=prefix, airflow_root=_airflow_root(request), **context)
    response = HTMLResponse(body, status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _serve(root: Path, path: str, allowed: Callable[[str], bool]) -> Response:
    """The file `path` names under `root`, if `allowed(its path relative to root)`; else 404.

    `allowed` judges the resolved file, not the request, so no spelling of the path
    (symlinks included) reaches a file of a use case the caller may not read.
    A refusal is a 404, like a missing file: it does not confirm the file exists.
    """
    try:
        file = ui_views.resolve_confined(root, path)
    except ui_views.PathRefused as exc:
        log.info("refused file request %r under %s: %s", path, root, exc)
        raise HTTPException(404, "Not found") from None
    if not allowed(file.relative_to(root.resolve()).as_posix()):
        log.info("refused file request %r under %s: the caller may not read its use case", path, root)
        raise HTTPException(404, "Not found")
    response = FileResponse(file)
    response.headers["Content-Security-Policy"] = FILE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _with_approvals(request: Request, use_case: UseCase, view: ui_views.UseCaseView) -> ui_views.UseCaseView:
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
        view.pending = ui_views.pending_approvals(use_case, requests, get_settings())
    except Exception as exc:
        view.errors.append(f"MLflow could not explain the approval requests of {dag_id}: {type(exc).__name__}: {exc}")
    return view


def _gather(request: Request, use_case: UseCase) -> ui_views.UseCaseView:
    return _with_approvals(request, use_case, ui_views.gather_use_case(use_case, get_settings()))


def _airflow_root(request: Request) -> str:
    """The Airflow UI root as seen by the browser: this app's mount point minus its own prefix."""
    return str(request.scope.get("root_path", "")).rstrip("/").removesuffix("/mlops")


def _use_case_of(dag_id: str) -> UseCase:
    name = ui_views.use_case_of_dag(dag_id)
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
        use_cases = all_use_cases()
        views = [_gather(request, uc) for uc in readable_use_cases(user, use_cases)]
        charts = {v.name: ui_views.drift_chart_svg(v.drift, v.drift_threshold) for v in views}
        return _page(
            request, "overview.html", views=views, charts=charts, aliases=ui_views.ALIASES,
            hidden=len(use_cases) - len(views),
        )  # fmt: skip

    @app.get("/dag/{dag_id}", response_class=HTMLResponse)
    def dag_view(request: Request, dag_id: str, user: User) -> HTMLResponse:
        use_case = _use_case_of(dag_id)
        require_dag_access(dag_id, use_case, user)
        view = _gather(request, use_case)
        chart = ui_views.drift_chart_svg(view.drift, view.drift_threshold)
        return _page(
            request, "overview.html", views=[view], charts={view.name: chart}, aliases=ui_views.ALIASES, dag_id=dag_id
        )

    @app.get("/dag/{dag_id}/run/{run_id}", response_class=HTMLResponse)
    def run_view(request: Request, dag_id: str, run_id: str, user: User) -> HTMLResponse:
        use_case = _use_case_of(dag_id)
        require_dag_access(dag_id, use_case, user)
        run = ui_views.gather_run(use_case, dag_id, run_id, get_settings())
        _with_approvals(request, use_case, run.use_case)
        chart = ui_views.drift_chart_svg(run.use_case.drift, run.use_case.drift_threshold)
        return _page(request, "run.html", run=run, view=run.use_case, chart=chart, aliases=ui_views.ALIASES)

    @app.get("/reports/{path:path}")
    def report_file(path: str, user: User) -> Response:
        # Reports live in <use case>/<monitoring run>/: the first folder names the use case.
        def allowed(relative: str) -> bool:
            readable = {uc.name for uc in readable_use_cases(user, all_use_cases())}
            return relative.split("/", 1)[0] in readable

        return _serve(get_settings().reports_dir, path, allowed)

    @app.get("/data-docs/{path:path}")
    def data_docs_file(path: str, user: User) -> Response:
        def allowed(relative: str) -> bool:
            kind, suite = ui_views.data_docs_file_kind(relative)
            if kind == "shared":
                return True
            if kind == "unknown":
                return False
            use_cases = all_use_cases()
            readable = readable_use_cases(user, use_cases)
            if kind == "index":  # it lists the results of every suite
                return len(readable) == len(use_cases)
            return suite in {uc.suite_name for uc in readable}

        return _serve(get_settings().data_docs_dir, path, allowed)

    return app


app = create_app()
