"""Airflow connections as the package needs them: a SQL source's connection as an SQLAlchemy URL.

Inside a task Airflow hands connections over through its Execution API. Outside one, as
in `mlops suite bootstrap`, Airflow's own lookup reads the environment variable
`AIRFLOW_CONN_<CONN_ID>` (a URI or JSON) and any secrets backend configured in
`[secrets] backend`; the metadata database is read by Airflow's servers only.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException


def sql_uri(conn_id: str) -> str:
    """Resolve a SQL source's Airflow connection to an SQLAlchemy URL, at run time only."""
    from airflow.sdk import Connection

    return sqlalchemy_url(Connection.get(conn_id))


def sqlalchemy_url(connection: Any) -> str:
    """The SQLAlchemy URL of an Airflow connection, as the connection type's provider hook builds it.

    Not `Connection.get_uri()`: that is Airflow's own URI format, whose `postgres://`
    SQLAlchemy 2 refuses and whose sqlite path is percent-escaped. The provider's
    `DbApiHook.sqlalchemy_url` is the documented way (for Postgres it picks the installed
    driver: `postgresql+psycopg://`). SQLite needs no provider (none is installed): Airflow
    keeps the database file in the connection's host, as the sqlite provider's hook reads it.
    """
    from airflow.sdk.exceptions import AirflowException
    from sqlalchemy.engine import URL

    if connection.conn_type == "sqlite":
        return URL.create("sqlite", database=connection.host).render_as_string(hide_password=False)
    try:
        # DbApiHook takes the connection itself, so it is not looked up a second time.
        url = connection.get_hook(hook_params={"connection": connection}).sqlalchemy_url
    except (AirflowException, ImportError, TypeError, NotImplementedError) as exc:
        # An unknown type (no provider), a hook that is no DbApiHook (TypeError on `connection`),
        # or one that builds no SQLAlchemy URL: a retry will not change any of them.
        raise AirflowFailException(
            f"connection {connection.conn_id!r} of type {connection.conn_type!r}: no installed Airflow provider "
            f"builds an SQLAlchemy URL for it ({type(exc).__name__}: {exc}). Install the type's provider package "
            "(postgres: `uv sync --extra production`), or use a postgres or sqlite connection"
        ) from exc
    return str(url.render_as_string(hide_password=False))


def sql_uri_outside_task(conn_id: str) -> str:
    """The SQLAlchemy URL of connection `conn_id`, resolved as the training DAG's ingest task does.

    Raises LookupError when Airflow knows no such connection here and ValueError when no
    installed provider builds a URL for its type; both messages say what to do.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException

    try:
        return sql_uri(conn_id)
    except AirflowNotFoundException:
        raise LookupError(
            f"Airflow connection {conn_id!r} is not defined here: outside a task Airflow reads "
            f"AIRFLOW_CONN_{conn_id.upper()} (a URI or JSON) and the configured secrets backend, not the "
            f"metadata database. Export it, e.g. AIRFLOW_CONN_{conn_id.upper()}='postgres://user@host:5432/db', "
            "or pass --reference PATH"
        ) from None
    except AirflowException as exc:
        raise ValueError(str(exc)) from exc
