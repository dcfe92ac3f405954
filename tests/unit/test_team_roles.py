"""Team roles from use-case configs: which roles, with what, on which DAGs (FAB itself: test_ui_access_fab.py)."""

from __future__ import annotations

from typing import Any

from mlops.config import Access, find_use_case
from mlops.orchestration.team_roles import (
    OPERATOR,
    READER,
    access_control,
    ensure_team_roles,
    role_permissions,
    team_roles,
)


class FakeSecurityManager:
    """The part of FAB's security manager the roles use, with a few of its real base permissions."""

    VIEWER_PERMISSIONS = [
        ("can_read", "DAGs"),
        ("can_read", "DAG Runs"),
        ("can_read", "Task Instances"),
        ("can_read", "Website"),
        ("menu_access", "DAGs"),
        ("menu_access", "DAG Runs"),
    ]
    USER_PERMISSIONS = [
        ("can_edit", "DAGs"),
        ("can_delete", "DAGs"),
        ("can_create", "DAG Runs"),
        ("can_edit", "Task Instances"),
    ]

    def __init__(self, existing: dict[str, list[tuple[str, str]]]) -> None:
        self.roles = existing

    def find_role(self, name: str) -> str | None:
        return name if name in self.roles else None

    def add_role(self, name: str) -> str:
        self.roles[name] = []
        return name

    def create_permission(self, action: str, resource: str) -> tuple[str, str]:
        return (action, resource)

    def add_permission_to_role(self, role: str, permission: Any) -> None:
        self.roles[role].append(permission)


def test_access_becomes_per_dag_grants_readers_read_operators_also_run() -> None:
    assert access_control(None) is None
    granted = access_control(Access(readers=["team-a-viewers"], operators=["team-a-ops"]))
    assert granted == {
        "team-a-viewers": {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}},
        "team-a-ops": {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}},
    }


def test_roles_of_the_configs_an_operator_anywhere_is_an_operator() -> None:
    a = find_use_case("breast_cancer").model_copy(update={"access": Access(readers=["team-a", "shared"])})
    b = find_use_case("bike_sharing").model_copy(update={"access": Access(operators=["shared"], readers=["team-b"])})
    none = find_use_case("flight_delays")
    assert team_roles([a, b, none]) == {"shared": OPERATOR, "team-a": READER, "team-b": READER}
    assert team_roles([none]) == {}


def test_a_team_role_is_its_base_role_without_the_grants_on_every_dag() -> None:
    sm = FakeSecurityManager({})
    reader = role_permissions(sm, READER)
    assert reader == [("can_read", "Task Instances"), ("can_read", "Website"),
                      ("menu_access", "DAGs"), ("menu_access", "DAG Runs")]  # fmt: skip
    operator = role_permissions(sm, OPERATOR)
    assert set(operator) == set(reader) | {("can_edit", "Task Instances")}


def test_missing_roles_are_created_and_existing_ones_left_as_they_are() -> None:
    sm = FakeSecurityManager({"team-b": [("can_read", "Website")]})
    created = ensure_team_roles(sm, {"team-a": READER, "team-b": OPERATOR})
    assert created == ["team-a"]
    assert sm.roles["team-a"] == role_permissions(sm, READER)
    assert sm.roles["team-b"] == [("can_read", "Website")]
    assert ensure_team_roles(sm, {"team-a": READER}) == []
