"""Who may see what on the MLOps page, asked of Airflow's own auth manager.

Airflow mounts plugin apps with `app.mount()`, which inherits none of the core API's
auth dependencies, so every route depends on `current_user`: the caller's Airflow JWT
(Authorization: Bearer, or the UI's `_token` cookie) checked with Airflow's own
`get_user` and auth manager. Anonymous callers get 401 and nothing else.

Beyond that, a user sees a use case (its section, its DAG tabs, its reports and Data
Docs pages) only if the auth manager lets them read its training and monitoring DAGs
and their runs, asked the way Airflow's own routes ask it: a batch check per use case
with each DAG's team (multi-team deployments restrict by team).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from mlops.config import UseCase, load_all
from mlops.settings import get_settings
from mlops.ui.files import data_docs_file_kind
from mlops.ui.views import use_case_dag_ids


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


def all_use_cases() -> list[UseCase]:
    return load_all(get_settings().configs_dir)


def readable_use_cases(user: Any, use_cases: list[UseCase]) -> list[UseCase]:
    """The use cases whose training and monitoring DAGs `user` may read (see `use_case_dag_ids`)."""
    allowed = may_read_dags(user, [list(use_case_dag_ids(uc.name)) for uc in use_cases])
    return [uc for uc, ok in zip(use_cases, allowed, strict=True) if ok]


def require_dag_access(dag_id: str, use_case: UseCase, user: Any) -> None:
    """403 unless `user` may read `dag_id` and the use case it belongs to (its tab shows the whole use case)."""
    if not all(may_read_dags(user, [[dag_id], list(use_case_dag_ids(use_case.name))])):
        raise HTTPException(403, f"Forbidden: no read access to DAG {dag_id} or to the DAGs of {use_case.name}")


def may_read_report(user: Any, relative: str) -> bool:
    """Reports live in `<use case>/<monitoring run>/`: the first folder names the use case."""
    readable = {uc.name for uc in readable_use_cases(user, all_use_cases())}
    return relative.split("/", 1)[0] in readable


def may_read_data_docs(user: Any, relative: str) -> bool:
    """Shared assets: anyone signed in; a suite's page: readers of its use case; a site's index: readers of all."""
    kind, suite = data_docs_file_kind(relative)
    if kind == "shared":
        return True
    if kind == "unknown":
        return False
    use_cases = all_use_cases()
    readable = readable_use_cases(user, use_cases)
    if kind == "index":  # it lists the results of every suite
        return len(readable) == len(use_cases)
    return suite in {uc.suite_name for uc in readable}
