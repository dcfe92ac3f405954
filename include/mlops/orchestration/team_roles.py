"""Per-team access to use cases with Airflow's FAB auth manager (what the compose stack runs).

A use case's config names its teams' roles (`access: {readers: [...], operators: [...]}`).
Two halves make that a restriction:

- `access_control(use_case.access)` is each of its DAGs' `access_control`: the DAG processor
  grants the roles on those DAGs only (FAB's per-DAG resources `DAG:<id>` and `DAG Run:<id>`).
- `ensure_team_roles` creates the roles themselves, once, before the DAGs are parsed (FAB refuses
  a DAG whose `access_control` names a role that does not exist). A team role is FAB's own Viewer
  (readers) or Viewer + User (operators) *without* their grants on every DAG and every DAG run:
  what a team may read of DAGs comes only from the DAGs that name it.

The MLOps page asks the same auth manager, so a team's users see their use cases there and get
403/404 for another team's DAG tabs, reports and Data Docs pages (plugins/mlops_ui/access.py).
`python -m mlops.orchestration.team_roles` creates the roles the configs name (the compose
stack's airflow-init runs it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops.config import Access, UseCase

# FAB's resources that grant every DAG or every DAG run at once. A team role keeps the rest of its
# base role (task instances, logs, XCom, the website, menus): FAB judges those only together with
# read access to the DAG they belong to.
DAG_WIDE_RESOURCES = ("DAGs", "DAG Runs")
MENU_ACTION = "menu_access"

# What a use case's roles may do on each of its DAGs, in FAB's terms (resource -> actions). Readers
# see the DAG and its runs; operators also trigger runs (DAG Runs can_create) and pause, clear and
# mark them (DAGs can_edit). Nobody gets can_delete through a config: deleting a DAG's history is
# for Airflow's own Admin.
READER_ACTIONS: dict[str, set[str]] = {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}
OPERATOR_ACTIONS: dict[str, set[str]] = {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}
READER, OPERATOR = "reader", "operator"


def access_control(access: Access | None) -> dict[str, dict[str, set[str]]] | None:
    """A DAG's `access_control` from a use case's `access`; None (Airflow's roles decide alone) without one."""
    if access is None:
        return None
    granted = {role: {k: set(v) for k, v in READER_ACTIONS.items()} for role in access.readers}
    granted |= {role: {k: set(v) for k, v in OPERATOR_ACTIONS.items()} for role in access.operators}
    return granted


def team_roles(use_cases: Iterable[UseCase]) -> dict[str, str]:
    """Every role the configs name, as `reader` or `operator` (an operator anywhere is an operator)."""
    roles: dict[str, str] = {}
    for use_case in use_cases:
        if use_case.access is None:
            continue
        for role in use_case.access.readers:
            roles.setdefault(role, READER)
        for role in use_case.access.operators:
            roles[role] = OPERATOR
    return dict(sorted(roles.items()))


def role_permissions(security_manager: Any, kind: str) -> list[tuple[str, str]]:
    """(action, resource) of a team role: FAB's Viewer (+ User for operators) without the DAG-wide grants."""
    base = list(security_manager.VIEWER_PERMISSIONS)
    if kind == OPERATOR:
        base += security_manager.USER_PERMISSIONS
    return [(a, r) for a, r in base if r not in DAG_WIDE_RESOURCES or a == MENU_ACTION]


def ensure_team_roles(security_manager: Any, roles: dict[str, str]) -> list[str]:
    """Create each missing role with `role_permissions`; returns the roles created.

    An existing role is left as it is: an administrator may have changed it on purpose.
    """
    created = []
    for name, kind in roles.items():
        if security_manager.find_role(name) is not None:
            continue
        role = security_manager.add_role(name)
        for action, resource in role_permissions(security_manager, kind):
            security_manager.add_permission_to_role(role, security_manager.create_permission(action, resource))
        created.append(name)
    return created


def main(argv: Sequence[str] | None = None) -> int:
    """Create the roles the use-case configs name, in the metadata database the Airflow config names."""
    from airflow.configuration import conf
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    from mlops.config import load_all

    if argv is None:
        argv = sys.argv[1:]
    if argv:
        print("usage: python -m mlops.orchestration.team_roles (no arguments; reads the configs)", file=sys.stderr)
        return 2
    conf.load_providers_configuration()
    roles = team_roles(load_all())
    with get_application_builder() as appbuilder:
        created = ensure_team_roles(appbuilder.sm, roles)
    kept = [r for r in roles if r not in created]
    print(f"team roles: created {created or 'none'}; already there {kept or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
