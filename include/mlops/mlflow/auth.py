"""MLflow's own basic-auth app on the platform's tracking server (issue 22, docs/deployment.md).

`mlflow server --app-name basic-auth` asks every request for HTTP basic credentials and checks
permissions per experiment and registered model. The platform's account is the app's admin
(it registers models and moves aliases); everyone else gets `default_permission` (READ: browse,
never promote), and an anonymous request is a 401. The permissions database is SQL
(PostgreSQL in the scale-out stack). MLflow's clients read the credentials from
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, so tasks and the service need nothing else.

Nothing here has a default secret: the admin password and the Flask secret key are given, and
MLflow itself refuses to start the app without an admin password for an empty user store.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops._io import atomic_write_text

AUTH_APP = "basic-auth"
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


@dataclass(frozen=True)
class ServerAuth:
    """What the tracking server needs to run the basic-auth app."""

    config_path: Path
    admin_username: str
    admin_password: str
    secret_key: str
    """Flask's CSRF secret: the same on every server process behind one URL."""

    def server_env(self) -> dict[str, str]:
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.config_path),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,
        }

    def client_env(self) -> dict[str, str]:
        """The platform's own credentials, as MLflow's clients read them."""
        return client_env(self.admin_username, self.admin_password)


def client_env(username: str, password: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}


def write_auth_config(path: Path, database_uri: str, admin_username: str, default_permission: str = "READ") -> Path:
    """The basic-auth app's ini file: where its users live, who the admin is, what everyone else may do."""
    if default_permission not in PERMISSIONS:
        raise ValueError(f"default_permission must be one of {PERMISSIONS}; got {default_permission!r}")
    settings = {
        "default_permission": default_permission,
        "database_uri": database_uri,
        "admin_username": admin_username,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    # The admin password is not written here: MLflow reads it from MLFLOW_AUTH_ADMIN_PASSWORD.
    return atomic_write_text(path, "[mlflow]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))


def create_user(tracking_uri: str, username: str, password: str, admin: tuple[str, str]) -> None:
    """Create a user with the default permission, as the admin (MLflow's users REST API)."""
    import httpx

    response = httpx.post(
        f"{tracking_uri}/api/2.0/mlflow/users/create",
        json={"username": username, "password": password}, auth=admin, timeout=30,
    )  # fmt: skip
    response.raise_for_status()


def user_exists(tracking_uri: str, username: str, admin: tuple[str, str]) -> bool:
    import httpx

    response = httpx.get(
        f"{tracking_uri}/api/2.0/mlflow/users/get", params={"username": username}, auth=admin, timeout=30
    )
    if response.status_code == 404:
        return False
    response.raise_for_status()
    return True


def ensure_user(tracking_uri: str, username: str, password: str, admin: tuple[str, str]) -> str:
    """A non-admin user with exactly this password: created, or its password and admin flag set again.

    For an account whose password lives in a secret (the compose stack's viewer): each start makes
    the server agree with the secret, so rotating it is changing the secret and starting again.
    Returns "created" or "updated".
    """
    import httpx

    if username == admin[0]:
        raise ValueError(f"{username!r} is the admin's account; a read-only account needs a name of its own")
    if not user_exists(tracking_uri, username, admin):
        create_user(tracking_uri, username, password, admin)
        return "created"
    api = f"{tracking_uri}/api/2.0/mlflow/users"
    for path, body in (("update-password", {"password": password}), ("update-admin", {"is_admin": False})):
        response = httpx.patch(f"{api}/{path}", json={"username": username, **body}, auth=admin, timeout=30)
        response.raise_for_status()
    return "updated"


VIEWER_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
                    "MLFLOW_VIEWER_USER", "MLFLOW_VIEWER_PASSWORD")  # fmt: skip


def ensure_viewer_from_env() -> int:
    """`python -m mlops.mlflow.auth ensure-viewer`: the read-only account people browse with, from the env."""
    missing = [name for name in VIEWER_VARIABLES if not os.environ.get(name)]
    if missing:
        print(f"ensure-viewer needs {', '.join(missing)} set", file=sys.stderr)
        return 2
    env = os.environ
    admin = (env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    done = ensure_user(env["MLFLOW_TRACKING_URI"], env["MLFLOW_VIEWER_USER"], env["MLFLOW_VIEWER_PASSWORD"], admin)
    print(f"MLflow read-only account {env['MLFLOW_VIEWER_USER']!r} {done}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mlops.mlflow.auth <ini path>`: write the ini from the environment, for a container's start.

    The permissions database's URL carries a password, so it is not baked into the image: the
    compose stack passes MLFLOW_AUTH_DATABASE_URI and MLFLOW_AUTH_ADMIN_USERNAME, and MLflow
    reads the admin's password from MLFLOW_AUTH_ADMIN_PASSWORD itself.
    `python -m mlops.mlflow.auth ensure-viewer` creates the read-only account (`ensure_viewer_from_env`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["ensure-viewer"]:
        return ensure_viewer_from_env()
    missing = [n for n in ("MLFLOW_AUTH_DATABASE_URI", "MLFLOW_AUTH_ADMIN_USERNAME") if not os.environ.get(n)]
    if len(args) != 1 or missing:
        print(f"usage: python -m mlops.mlflow.auth <ini path>, with {missing or 'the variables'} set", file=sys.stderr)
        return 2
    default = os.environ.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ")
    path = write_auth_config(
        Path(args[0]), os.environ["MLFLOW_AUTH_DATABASE_URI"], os.environ["MLFLOW_AUTH_ADMIN_USERNAME"], default
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
