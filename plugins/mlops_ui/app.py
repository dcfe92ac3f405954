"""The MLOps page: a FastAPI app mounted by the Airflow API server under /mlops.

Routes only: every one depends on the caller's Airflow login and checks read access to
the use case it shows (mlops_ui.access), gathers its facts from MLflow and the project's
folders (mlops.ui, never XCom), and answers with a page or a confined, sandboxed file
(mlops_ui.responses). Promotions waiting for a person come from Airflow's REST API
(mlops_ui.approvals).
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from mlops_ui.access import (
    User,
    all_use_cases,
    may_read_data_docs,
    may_read_report,
    readable_use_cases,
    require_dag_access,
)
from mlops_ui.approvals import with_approvals
from mlops_ui.responses import confined_file, page, static_file
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlops.config import ConfigError, UseCase, find_use_case
from mlops.naming import ALIASES, use_case_of_dag
from mlops.settings import get_settings
from mlops.ui.chart import drift_chart_svg
from mlops.ui.views import UseCaseView, gather_run, gather_use_case


def _gather(request: Request, use_case: UseCase) -> UseCaseView:
    return with_approvals(request, use_case, gather_use_case(use_case, get_settings()))


def _chart(view: UseCaseView) -> str:
    return drift_chart_svg(view.drift, view.drift_threshold)


def _use_case_of(dag_id: str) -> UseCase:
    """The use case a DAG belongs to by its name, or 404."""
    name = use_case_of_dag(dag_id)
    if name is None:
        raise HTTPException(404, f"DAG {dag_id} belongs to no use case (expected train_/monitor_/score_<use case>)")
    try:
        return find_use_case(name)
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None


def _readable_use_case_of(dag_id: str, user: User) -> UseCase:
    use_case = _use_case_of(dag_id)
    require_dag_access(dag_id, use_case, user)
    return use_case


def create_app() -> FastAPI:
    app = FastAPI(title="MLOps", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return page(request, "error.html", status_code=exc.status_code, status=exc.status_code, detail=exc.detail)

    @app.get("/static/{name}")
    def static(name: str, user: User) -> Response:
        return static_file(name)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, user: User) -> HTMLResponse:
        use_cases = all_use_cases()
        views = [_gather(request, uc) for uc in readable_use_cases(user, use_cases)]
        charts = {v.name: _chart(v) for v in views}
        hidden = len(use_cases) - len(views)
        return page(request, "overview.html", views=views, charts=charts, aliases=ALIASES, hidden=hidden)

    @app.get("/dag/{dag_id}", response_class=HTMLResponse)
    def dag_view(request: Request, dag_id: str, user: User) -> HTMLResponse:
        view = _gather(request, _readable_use_case_of(dag_id, user))
        charts = {view.name: _chart(view)}
        return page(request, "overview.html", views=[view], charts=charts, aliases=ALIASES, dag_id=dag_id)

    @app.get("/dag/{dag_id}/run/{run_id}", response_class=HTMLResponse)
    def run_view(request: Request, dag_id: str, run_id: str, user: User) -> HTMLResponse:
        use_case = _readable_use_case_of(dag_id, user)
        run = gather_run(use_case, dag_id, run_id, get_settings())
        with_approvals(request, use_case, run.use_case)
        return page(request, "run.html", run=run, view=run.use_case, chart=_chart(run.use_case), aliases=ALIASES)

    @app.get("/reports/{path:path}")
    def report_file(path: str, user: User) -> Response:
        return confined_file(get_settings().reports_dir, path, lambda relative: may_read_report(user, relative))

    @app.get("/data-docs/{path:path}")
    def data_docs_file(path: str, user: User) -> Response:
        return confined_file(get_settings().data_docs_dir, path, lambda relative: may_read_data_docs(user, relative))

    return app


app = create_app()
