"""A SQL source end to end: an Airflow connection (env var AIRFLOW_CONN_<ID>) -> ingest -> validate.

The training DAG's `ingest_snapshot` resolves the connection through `sql_uri`, the
real resolver, under `dag.test()`. PostgreSQL (127.0.0.1:5432, trust auth, user
postgres) gets a database of this test's own, dropped afterwards; the module skips the
PostgreSQL case loudly when the server is not reachable. SQLite needs no server.
Both connections are written in Airflow's URI form, which SQLAlchemy cannot read as is
(`postgres://`, a percent-escaped file path).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import pytest

from mlops.config import SqlSource, UseCase, find_use_case

pytestmark = pytest.mark.integration

RAW = Path(__file__).resolve().parents[2] / "data" / "raw" / "bike_sharing_hourly.csv"
AS_OF = "2011-03-01"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
TABLE = "bike_hourly"
QUERY = f"SELECT * FROM {TABLE} ORDER BY dteday, hr"
ROWS = 2000


def _skip_loudly(request: pytest.FixtureRequest, reason: str) -> NoReturn:
    # Straight to the terminal, past output capture: a skipped proof must not pass unnoticed.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\nWARNING: {request.node.nodeid} skipped: {reason}", file=sys.stderr, flush=True)
    pytest.skip(reason)


def _source_frame() -> pd.DataFrame:
    return pd.read_csv(RAW, nrows=ROWS)


@pytest.fixture
def postgres_connection(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of this test's own with the bike rows, named by AIRFLOW_CONN_BIKE_PG in Airflow's URI form."""
    try:
        import psycopg2
        import sqlalchemy
    except ImportError as exc:
        _skip_loudly(request, f"{exc}: install the production extra (`uv sync --frozen --extra production`)")
    try:
        admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        _skip_loudly(request, f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({exc}); start it")
    admin.autocommit = True
    database = f"mlops_sql_source_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{database}"')
        engine = sqlalchemy.create_engine(f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}")
        try:
            _source_frame().to_sql(TABLE, engine, index=False)
        finally:
            engine.dispose()
        monkeypatch.setenv("AIRFLOW_CONN_BIKE_PG", f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}")
        yield "bike_pg"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sqlite_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite file (a space in its path) with the bike rows, named by AIRFLOW_CONN_BIKE_SQLITE."""
    path = tmp_path / "source db" / "bike.sqlite"
    path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        _source_frame().to_sql(TABLE, connection, index=False)
    monkeypatch.setenv("AIRFLOW_CONN_BIKE_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return "bike_sqlite"


def _nulls_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    # The drivers hand back NULL text as None, the CSV reader as NaN: both mean missing.
    return frame.astype(object).where(frame.notna(), None)


def _sql_use_case(conn_id: str) -> UseCase:
    use_case = find_use_case("bike_sharing")
    training = use_case.training.model_copy(update={"window": use_case.training.window.model_copy(update={"days": 45})})
    return use_case.model_copy(
        update={"source": SqlSource(kind="sql", conn_id=conn_id, query=QUERY), "training": training}
    )


def _ingest_and_validate(use_case: UseCase) -> tuple[str, dict[str, str], Any]:
    """Run the training DAG up to validate_snapshot; (run state, task states, the snapshot record)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from mlops.orchestration.training import build_training_dag

    dag = build_training_dag(use_case).partial_subset(task_ids=["validate_snapshot"], include_downstream=False)
    dag_run = dag.test(run_conf={"as_of": AS_OF, "reason": "sql source test"})
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id)
            .filter(XComModel.task_id == "ingest_snapshot", XComModel.key == "return_value")
            .first()
        )
        snapshot = None if row is None else XComModel.deserialize_value(row)
    return str(dag_run.state), states, snapshot


@pytest.mark.parametrize("connection", ["postgres_connection", "sqlite_connection"])
def test_a_sql_source_is_ingested_through_its_airflow_connection(
    connection: str, request: pytest.FixtureRequest, mlflow_server: str, airflow_home: Path
) -> None:
    conn_id = request.getfixturevalue(connection)
    state, tasks, snapshot = _ingest_and_validate(_sql_use_case(conn_id))
    assert state == "success", tasks
    assert tasks == {"ingest_snapshot": "success", "validate_snapshot": "success"}

    # The snapshot holds the query's rows in the 45-day window before AS_OF, in the query's order.
    expected = _source_frame()
    expected = expected[(expected["dteday"] >= "2011-01-15") & (expected["dteday"] < AS_OF)]
    expected = expected.sort_values(["dteday", "hr"], kind="stable").reset_index(drop=True)
    written = pd.read_parquet(snapshot["path"])
    pd.testing.assert_frame_equal(_nulls_as_none(written), _nulls_as_none(expected), check_dtype=False)
    assert snapshot["rows"] == len(expected) > 500 and len(snapshot["md5"]) == 32
