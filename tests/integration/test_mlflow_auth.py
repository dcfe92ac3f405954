"""MLflow's basic-auth app on a real server, its permissions database on the local PostgreSQL (issue 22):
an anonymous alias move is refused (401), a reader may browse but not promote (403), the platform's account
moves `@champion` through the platform's own registry code.

The server is this test's own (`mlflow server --app-name basic-auth`), with a SQLite backend store and a
PostgreSQL database for the users and permissions that the test creates and drops.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mlops.mlflow.auth import ServerAuth, create_user, user_exists, write_auth_config
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http

pytestmark = pytest.mark.integration

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
MODEL = "auth_test_model"


@dataclass
class Server:
    uri: str
    auth: ServerAuth


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import psycopg2

    database = f"mlflow_auth_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    root = tmp_path_factory.mktemp("mlflow-auth")
    config = write_auth_config(
        root / "basic_auth.ini", f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{database}", "platform"
    )
    auth = ServerAuth(config, "platform", secrets.token_urlsafe(24), secrets.token_urlsafe(32))
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
           "--serve-artifacts", "--workers", "1"]  # fmt: skip
    env = {**os.environ, **auth.server_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    process = start_process_group(cmd, root / "server.log", env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", 300, process, root / "server.log")
        yield Server(uri, auth)
    finally:
        stop_process_group(process.pid)
        process.wait(timeout=10)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def _alias_move(uri: str, version: str, auth: tuple[str, str] | None) -> httpx.Response:
    body = {"name": MODEL, "alias": "champion", "version": version}
    return httpx.post(f"{uri}/api/2.0/mlflow/registered-models/alias", json=body, auth=auth, timeout=30)


def test_anonymous_and_reader_cannot_promote_the_platform_can(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from mlops.mlflow import registry

    platform = (server.auth.admin_username, server.auth.admin_password)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    for name, value in server.auth.client_env().items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(server.uri, server.uri)
    client.create_registered_model(MODEL)
    first = client.create_model_version(MODEL, source="s3://mlops-auth-test/model").version
    second = client.create_model_version(MODEL, source="s3://mlops-auth-test/model").version
    # The platform's own code path: credentials from the environment, nothing else to configure.
    registry.set_alias(MODEL, "champion", str(first))
    assert registry.alias_version(MODEL, "champion") == str(first)

    anonymous = _alias_move(server.uri, str(second), None)
    assert anonymous.status_code == 401, anonymous.text
    assert httpx.get(f"{server.uri}/api/2.0/mlflow/registered-models/get", params={"name": MODEL}).status_code == 401

    assert not user_exists(server.uri, "viewer", platform)
    create_user(server.uri, "viewer", "viewer-password-123", platform)
    assert user_exists(server.uri, "viewer", platform)
    viewer = ("viewer", "viewer-password-123")
    browse = httpx.get(f"{server.uri}/api/2.0/mlflow/registered-models/get", params={"name": MODEL}, auth=viewer)
    assert browse.status_code == 200 and browse.json()["registered_model"]["name"] == MODEL
    refused = _alias_move(server.uri, str(second), viewer)
    assert refused.status_code == 403, refused.text
    assert _alias_move(server.uri, str(second), ("viewer", "wrong")).status_code == 401
    assert registry.alias_version(MODEL, "champion") == str(first)  # nothing moved

    assert _alias_move(server.uri, str(second), platform).status_code == 200
    assert registry.alias_version(MODEL, "champion") == str(second)


def test_the_viewer_account_is_set_from_its_secret_at_every_start(server: Server) -> None:
    """What compose's mlflow-init runs: `python -m mlops.mlflow.auth ensure-viewer`, with the env it passes."""
    import subprocess
    import sys

    platform = (server.auth.admin_username, server.auth.admin_password)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server.uri,
        "MLFLOW_AUTH_ADMIN_USERNAME": platform[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": platform[1],
        "MLFLOW_VIEWER_USER": "browser",
    }

    def ensure_viewer(password: str | None) -> subprocess.CompletedProcess[str]:
        run_env = {k: v for k, v in env.items() if k != "MLFLOW_VIEWER_PASSWORD"}
        if password is not None:
            run_env["MLFLOW_VIEWER_PASSWORD"] = password
        command = [sys.executable, "-m", "mlops.mlflow.auth", "ensure-viewer"]
        return subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=120)

    missing = ensure_viewer(None)
    assert missing.returncode == 2 and "MLFLOW_VIEWER_PASSWORD" in missing.stderr
    first = ensure_viewer("first-viewer-password")
    assert first.returncode == 0 and "'browser' created" in first.stdout, first.stdout + first.stderr
    rotated = ensure_viewer("rotated-viewer-password")
    assert rotated.returncode == 0 and "'browser' updated" in rotated.stdout, rotated.stdout + rotated.stderr

    search = f"{server.uri}/api/2.0/mlflow/registered-models/search"
    assert httpx.get(search, auth=("browser", "first-viewer-password"), timeout=30).status_code == 401
    assert httpx.get(search, auth=("browser", "rotated-viewer-password"), timeout=30).status_code == 200
    user = httpx.get(f"{server.uri}/api/2.0/mlflow/users/get", params={"username": "browser"}, auth=platform).json()
    assert user["user"]["is_admin"] is False
