"""The local stack's one switch for MLflow's basic-auth app: what the server and every client get."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.platform import stack
from mlops.settings import get_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    return tmp_path


def _mlflow_command(settings: object) -> list[str]:
    return next(s.command for s in stack.services(settings) if s.name == "mlflow")  # type: ignore[arg-type]


def test_off_by_default_nothing_changes(home: Path) -> None:
    settings = get_settings()
    assert not settings.mlflow_auth
    assert "--app-name" not in _mlflow_command(settings)
    env = stack.airflow_env(settings)
    assert "MLFLOW_TRACKING_USERNAME" not in env and "MLFLOW_AUTH_CONFIG_PATH" not in env


def test_basic_runs_the_auth_app_and_gives_every_process_the_platforms_account(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_AUTH", "basic")
    settings = get_settings()
    command = _mlflow_command(settings)
    assert command[command.index("--app-name") + 1] == "basic-auth"
    env = stack.airflow_env(settings)
    secrets = settings.run_dir / "secrets"
    assert env["MLFLOW_TRACKING_USERNAME"] == "platform"
    assert env["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env["MLFLOW_TRACKING_PASSWORD"] == (secrets / "mlflow_platform_password").read_text()
    assert (secrets / "mlflow_platform_password").stat().st_mode & 0o077 == 0  # the owner's only
    ini = Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    assert "admin_username = platform" in ini and "default_permission = READ" in ini
    assert f"database_uri = sqlite:///{settings.mlflow_dir / 'basic_auth.db'}" in ini
    assert env["MLFLOW_TRACKING_PASSWORD"] not in ini  # the password stays out of the file
    # Generated once, then the same on every start.
    assert stack.airflow_env(settings)["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_TRACKING_PASSWORD"]
    assert "read-only" in stack.urls(settings)["mlflow_login"]


def test_an_unknown_value_names_the_variable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_MLFLOW_AUTH", "yes")
    with pytest.raises(ValueError, match="MLOPS_MLFLOW_AUTH must be 'basic'"):
        get_settings()


def test_the_containers_ini_is_written_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.mlflow.auth import main

    target = tmp_path / "basic_auth.ini"
    monkeypatch.delenv("MLFLOW_AUTH_DATABASE_URI", raising=False)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "platform")
    assert main([str(target)]) == 2 and not target.exists()  # no URL: refused, nothing written
    monkeypatch.setenv("MLFLOW_AUTH_DATABASE_URI", "postgresql+psycopg2://mlflow:s3cret@postgres:5432/mlflow_auth")
    assert main([str(target)]) == 0
    text = target.read_text()
    assert "database_uri = postgresql+psycopg2://mlflow:s3cret@postgres:5432/mlflow_auth" in text
    assert "admin_username = platform" in text and "default_permission = READ" in text
