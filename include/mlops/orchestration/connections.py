"""Airflow connections for code that runs outside a task: the `mlops` command.

Inside a task Airflow hands connections over through its Execution API. Outside one, as
in `mlops suite bootstrap`, Airflow's own lookup reads the environment variable
`AIRFLOW_CONN_<CONN_ID>` (a URI or JSON) and any secrets backend configured in
`[secrets] backend`; the metadata database is read by Airflow's servers only.
"""

from __future__ import annotations


def sql_uri_outside_task(conn_id: str) -> str:
    """The SQLAlchemy URL of connection `conn_id`, resolved as the training DAG's ingest task does.

    Raises LookupError when Airflow knows no such connection here and ValueError when no
    installed provider builds a URL for its type; both messages say what to do.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException

    from mlops.orchestration.training import sql_uri

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
