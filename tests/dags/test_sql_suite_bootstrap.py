"""`mlops suite bootstrap` of a use case whose source is SQL, without `--reference`.

The command resolves the source's Airflow connection as Airflow does outside a task
(`AIRFLOW_CONN_<ID>`, here in Airflow's URI or JSON form), reads the query as ingestion
does and learns the suite from its rows. The connections (a PostgreSQL database of the
test's own, a SQLite file) are the ones `test_sql_source.py` sets up for the training DAG.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_sql_source import QUERY, ROWS, _source_frame, postgres_connection, sqlite_connection

from mlops import cli
from mlops.data import suites

pytestmark = pytest.mark.integration
__all__ = ["postgres_connection", "sqlite_connection"]  # fixtures, used by name

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sql_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make `bike_sharing` read QUERY through connection `conn_id`: a config of its own in MLOPS_CONFIGS_DIR."""

    def write(conn_id: str) -> None:
        raw = yaml.safe_load((PROJECT_ROOT / "configs" / "bike_sharing.yaml").read_text())
        raw["source"] = {"kind": "sql", "conn_id": conn_id, "query": QUERY}
        configs = tmp_path / "configs"
        configs.mkdir(exist_ok=True)
        (configs / "bike_sharing.yaml").write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(configs))

    return write


def _suite(ge_dir: Path) -> dict[str, object]:
    suite: dict[str, object] = json.loads((ge_dir / "expectations" / "bike_sharing.json").read_text())
    return suite


@pytest.mark.parametrize("connection", ["postgres_connection", "sqlite_connection"])
def test_suite_bootstrap_reads_an_sql_source_through_its_airflow_connection(
    connection: str,
    request: pytest.FixtureRequest,
    sql_config: Callable[[str], None],
    ge_dir: Path,
    airflow_home: Path,  # Airflow reads its home at first import: the session's, not ~/airflow
    capsys: pytest.CaptureFixture[str],
) -> None:
    sql_config(request.getfixturevalue(connection))
    assert cli.main(["suite", "bootstrap", "bike_sharing", "--tolerance", "0"]) == 0, capsys.readouterr().err
    assert f"suite 'bike_sharing': {ROWS} reference rows" in capsys.readouterr().out

    # Learned from the query's rows, not from the committed suite or the CSV file.
    suite = _suite(ge_dir)
    expected = _source_frame()
    assert suite["meta"]["reference_rows"] == ROWS  # type: ignore[index]
    expectations = suite["expectations"]
    assert isinstance(expectations, list)
    (columns,) = [e["kwargs"]["column_set"] for e in expectations if e["type"] == "expect_table_columns_to_match_set"]
    assert columns == sorted(expected.columns)
    (cnt,) = [e["kwargs"] for e in expectations if e["type"] == "expect_column_values_to_be_between"
              and e["kwargs"]["column"] == "cnt"]  # fmt: skip
    # Tolerance 0: exactly the observed range of the first ROWS rows (the whole file's maximum is far higher).
    assert (cnt["min_value"], cnt["max_value"]) == (expected["cnt"].min(), math.ceil(expected["cnt"].max()))


def test_suite_bootstrap_names_the_connection_it_cannot_find(
    sql_config: Callable[[str], None],
    ge_dir: Path,
    airflow_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_BIKE_NOWHERE", raising=False)
    sql_config("bike_nowhere")
    before = _suite(ge_dir)
    assert cli.main(["suite", "bootstrap", "bike_sharing"]) == 1
    error = capsys.readouterr().err
    assert "'bike_nowhere' is not defined" in error and "AIRFLOW_CONN_BIKE_NOWHERE" in error, error
    assert "--reference" in error
    assert _suite(ge_dir) == before  # nothing written


def test_the_module_command_points_an_sql_source_at_mlops_suite(
    sql_config: Callable[[str], None], ge_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `python -m mlops.data.suites` stands below the Airflow layer: it cannot resolve a connection.
    sql_config("bike_sqlite")
    assert suites.main(["bootstrap", "bike_sharing"]) == 1
    error = capsys.readouterr().err
    assert "run `mlops suite bootstrap bike_sharing`, or pass --reference PATH" in error, error
