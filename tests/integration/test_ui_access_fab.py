"""Per-team access with the FAB auth manager (what docker-compose.yaml runs), in a real Airflow API server.

Two use cases name their teams' roles in their configs (`access`); the module starts one
Airflow API server and DAG processor with the FAB auth manager on SQLite, the roles created
by `mlops.orchestration.team_roles` (as the compose stack's airflow-init does) and a user per
role. The DAG processor grants the roles on their use case's DAGs from `access_control`; then
Airflow's own REST API and the MLOps page must agree: team A's viewer sees A's use case and is
refused B's DAG (REST API and DAG tab), B's Evidently report and B's Data Docs page; B's
viewer the other way round; only an operator triggers a run, and only of its own use case.

Lean on purpose (about a minute and a half on a busy 2-core machine): no scheduler, triggerer or
executor (nothing here runs a task), and a DAGs folder with only the training and monitoring
DAG files, the two the page judges a use case by.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mlops.monitoring.reports import report_dir
from mlops.platform import stack
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http
from mlops.settings import Settings, get_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from ui_stack import copy_configs, login

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
A, B = "breast_cancer", "bike_sharing"
ACCESS = {
    A: {"readers": ["team-a-viewers"], "operators": ["team-a-ops"]},
    B: {"readers": ["team-b-viewers"]},
}
USERS = {"alice": "team-a-viewers", "olga": "team-a-ops", "bob": "team-b-viewers"}
READY_TIMEOUT = 600.0

# Runs in the stack's environment, where Airflow's config points at the test's database: the roles
# the configs name (the module compose's airflow-init runs), then one user per role.
CREATE_ROLES_AND_USERS = """
import json, sys
from mlops.orchestration import team_roles
assert team_roles.main([]) == 0
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
with get_application_builder() as appbuilder:
    for name, (role, password) in json.loads(sys.argv[1]).items():
        found = appbuilder.sm.find_role(role)
        assert found is not None, f"no role {role}"
        assert appbuilder.sm.add_user(name, name, "Test", f"{name}@example.org", found, password=password), name
"""


@dataclass
class FabStack:
    settings: Settings
    base: str
    tokens: dict[str, str]
    files: dict[str, dict[str, str]]
    """Per use case: the page paths of its report and its Data Docs page."""

    def get(self, path: str, user: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        return httpx.get(f"{self.base}{path}", headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def seed_files(settings: Settings) -> dict[str, dict[str, str]]:
    """A report and a Data Docs page per use case, where monitoring and validation write them."""
    files = {}
    for use_case in (A, B):
        report = report_dir(use_case, f"monitor_{use_case}/access_test", settings.reports_dir) / "drift.html"
        report.parent.mkdir(parents=True)
        report.write_text(f"<html><body><h1 id='report'>drift of {use_case}</h1></body></html>")
        page = settings.data_docs_dir / "validations" / use_case / "access_test" / "page.html"
        page.parent.mkdir(parents=True)
        page.write_text(f"<html><body><h1 id='docs'>validation of {use_case}</h1></body></html>")
        files[use_case] = {
            "report": "/mlops/reports/" + report.relative_to(settings.reports_dir).as_posix(),
            "data_docs": "/mlops/data-docs/" + page.relative_to(settings.data_docs_dir).as_posix(),
        }
    (settings.data_docs_dir / "index.html").write_text("<html><body>every suite</body></html>")
    return files


def wait_until_readable(base: str, token: str, dag_ids: list[str], log_dir: Path) -> None:
    """Until the DAG processor has written the DAGs and granted their roles (their reader then gets 200)."""
    deadline = time.monotonic() + READY_TIMEOUT
    status: dict[str, int] = {}
    while time.monotonic() < deadline:
        headers = {"Authorization": f"Bearer {token}"}
        status = {d: httpx.get(f"{base}/api/v2/dags/{d}", headers=headers, timeout=30).status_code for d in dag_ids}
        if set(status.values()) == {200}:
            return
        time.sleep(2)
    pytest.fail(f"DAGs not readable by their team within {READY_TIMEOUT:.0f} s: {status}; logs in {log_dir}")


@pytest.fixture(scope="module")
def fab(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> Iterator[FabStack]:
    tmp = tmp_path_factory.mktemp("ui-access-fab")
    dags = tmp / "dags"
    dags.mkdir()
    for relative in ("training/training.py", "monitoring/monitoring.py"):
        shutil.copy(PROJECT_ROOT / "dags" / relative, dags / Path(relative).name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(tmp / "home"))
        mp.setenv(
            "MLOPS_CONFIGS_DIR", str(copy_configs(tmp / "configs", {u: {"access": a} for u, a in ACCESS.items()}))
        )
        ge = shutil.copytree(
            PROJECT_ROOT / "great_expectations", tmp / "ge", ignore=shutil.ignore_patterns("uncommitted")
        )
        mp.setenv("MLOPS_GE_DIR", str(ge))
        mp.setenv("MLOPS_AIRFLOW_PORT", str(free_port()))
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        settings = get_settings()
        env = stack.airflow_env(settings) | {
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        }
        log_dir = settings.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        stack.migrate_airflow(env, log_dir / "airflow-db-migrate.log")
        passwords = {user: secrets.token_urlsafe(12) for user in USERS}
        users = json.dumps({user: [role, passwords[user]] for user, role in USERS.items()})
        done = subprocess.run(
            [sys.executable, "-c", CREATE_ROLES_AND_USERS, users], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "team roles: created ['team-a-ops', 'team-a-viewers', 'team-b-viewers']" in done.stdout, done.stdout

        base = f"http://{settings.host}:{settings.airflow_port}"
        airflow = str(stack.VENV_BIN / "airflow")
        commands = {
            "api-server": [airflow, "api-server", "--host", settings.host, "--port", str(settings.airflow_port)],
            "dag-processor": [airflow, "dag-processor"],
        }
        processes = {}
        try:
            for name, command in commands.items():
                processes[name] = start_process_group(command, log_dir / f"{name}.log", env=env, cwd=PROJECT_ROOT)
            wait_for_http(
                f"{base}/api/v2/monitor/health", READY_TIMEOUT, processes["api-server"], log_dir / "api-server.log"
            )
            tokens = {user: login(base, user, passwords[user]) for user in USERS}
            wait_until_readable(base, tokens["alice"], [f"train_{A}", f"monitor_{A}"], log_dir)
            wait_until_readable(base, tokens["bob"], [f"train_{B}", f"monitor_{B}"], log_dir)
            yield FabStack(settings, base, tokens, seed_files(settings))
        finally:
            for process in processes.values():
                stop_process_group(process.pid)
                process.wait(timeout=30)


def test_a_team_reads_its_own_dags_and_not_the_other_teams(fab: FabStack) -> None:
    def readable(user: str) -> set[str]:
        response = fab.get("/api/v2/dags", user, params={"limit": 100})
        assert response.status_code == 200, response.text[:300]
        return {d["dag_id"] for d in response.json()["dags"]}

    assert readable("alice") == readable("olga") == {f"train_{A}", f"monitor_{A}"}
    assert readable("bob") == {f"train_{B}", f"monitor_{B}"}
    assert fab.get(f"/api/v2/dags/train_{B}", "alice").status_code == 403
    assert fab.get(f"/api/v2/dags/train_{A}", "bob").status_code == 403
    # The third use case names no team: no team role reads it.
    assert fab.get("/api/v2/dags/train_flight_delays", "alice").status_code == 403


def test_the_page_shows_a_team_its_use_case_only(fab: FabStack) -> None:
    page = fab.get("/mlops/", "alice")
    assert page.status_code == 200, page.text[:300]
    assert f'id="uc-{A}"' in page.text and f'id="uc-{B}"' not in page.text
    hidden = len(list((PROJECT_ROOT / "configs").glob("*.yaml"))) - 1  # every bundled use case but A
    assert f"{hidden} use cases not shown" in page.text
    other = fab.get("/mlops/", "bob").text
    assert f'id="uc-{B}"' in other and f'id="uc-{A}"' not in other


def test_the_other_teams_dag_tab_report_and_data_docs_are_refused(fab: FabStack) -> None:
    assert fab.get(f"/mlops/dag/train_{A}", "alice").status_code == 200
    assert fab.get(f"/mlops/dag/train_{B}", "alice").status_code == 403
    assert fab.get(f"/mlops/dag/monitor_{B}", "alice").status_code == 403
    for kind, marker in (("report", "drift of"), ("data_docs", "validation of")):
        own = fab.get(fab.files[A][kind], "alice")
        assert own.status_code == 200 and f"{marker} {A}" in own.text
        refused = fab.get(fab.files[B][kind], "alice")
        assert refused.status_code == 404 and B not in refused.text, (kind, refused.status_code)
        assert fab.get(fab.files[A][kind], "bob").status_code == 404
        assert fab.get(fab.files[B][kind], "bob").status_code == 200
    # The Data Docs index lists every suite: only for users who read every use case.
    assert fab.get("/mlops/data-docs/index.html", "alice").status_code == 404


def test_only_an_operator_triggers_and_only_its_own_use_case(fab: FabStack) -> None:
    def trigger(dag_id: str, user: str) -> httpx.Response:
        return httpx.post(
            f"{fab.base}/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": None, "conf": {"reason": "access test"}},
            headers={"Authorization": f"Bearer {fab.tokens[user]}"},
            timeout=60,
        )

    assert trigger(f"train_{A}", "alice").status_code == 403
    assert trigger(f"train_{B}", "olga").status_code == 403
    response = trigger(f"train_{A}", "olga")
    assert response.status_code == 200, response.text[:300]
