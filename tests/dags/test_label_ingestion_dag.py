"""The `ingest_labels_<use case>` DAG under `dag.test()`: landed files and an SQL source via an Airflow connection.

A good file is written and moved to done/; a file missing its label column is moved to
rejected/ with the reason and fails its task, after the good file was written; the SQL
query runs through the connection named by AIRFLOW_CONN_<ID> (SQLite, in Airflow's JSON
form) with :start bound to the last successful run's time and :end to this run's. No MLflow: the predictions
are put in the log directly.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from airflow_xcom import task_xcom

from mlops.config import Labels, LabelsQuery, UseCase, find_use_case

pytestmark = pytest.mark.integration


@pytest.fixture
def use_case(airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UseCase:
    """bike_sharing with an SQL labels source; its log, labels store and landing folder in tmp_path.

    `dag.test()` runs a DAG the DAG folder also defines, so the use case keeps its name; a
    home of its own keeps the session's bike_sharing labels apart.
    """
    from mlops.predictionlog.frames import PredictionBatch
    from mlops.predictionlog.predictions import append_predictions

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", str(tmp_path / "log"))
    name = "bike_sharing"
    batch = PredictionBatch(
        use_case=name, model_name="m", model_version="1", source="online",
        request_ids=[f"r{i}" for i in range(6)], event_times=[datetime(2026, 1, 1, 8 + i) for i in range(6)],
        predictions=[10.0] * 6, features={},
    )  # fmt: skip
    append_predictions(name, [batch])
    db = tmp_path / "truth db" / "truth.sqlite"
    db.parent.mkdir()
    with closing(sqlite3.connect(db)) as connection:
        pd.DataFrame(
            {
                "id": ["r4", "r5", "late"],
                "label": [40.0, 50.0, 60.0],
                "seen": ["2026-01-01 20:30"] * 2 + ["2026-01-02 00:30"],
            }
        ).to_sql("truth", connection, index=False)
    monkeypatch.setenv("AIRFLOW_CONN_LABELS_TRUTH", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    query = "SELECT id, label FROM truth WHERE seen >= :start AND seen < :end"
    labels = Labels(path=str(tmp_path / "landing"), sql=LabelsQuery(conn_id="labels_truth", query=query))
    return find_use_case(name).model_copy(update={"labels": labels})


def _run(use_case: UseCase, when: datetime = datetime(2026, 1, 2, tzinfo=UTC)) -> tuple[str, dict[str, str], str]:
    from mlops.orchestration.labels import build_label_ingestion_dag

    dag = build_label_ingestion_dag(use_case)
    # The query reads [the last successful run, 2026-01-02): the "late" row at 00:30 belongs to the next run.
    dag_run = dag.test(logical_date=when)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return str(dag_run.state), states, dag_run.run_id


def test_files_and_the_sql_source_are_ingested_and_a_bad_file_fails_its_task(use_case: UseCase) -> None:
    from mlops.predictionlog.predictions import read_predictions

    landing = use_case.labels_landing_dir
    landing.mkdir(parents=True)
    (landing / "good.csv").write_text("id,label,event_time\nr0,1\nr1,2,2026-01-01T12:00\nr2,3,\n")
    (landing / "no_label.csv").write_text("id,value\nr3,4\n")

    state, states, run_id = _run(use_case)
    assert state == "failed", states
    assert states == {
        "ingest_landed_labels": "failed",
        "ingest_queried_labels": "success",
        "settle_unmatched_labels": "success",
    }
    assert sorted(p.name for p in (landing / "done").iterdir()) == ["good.csv"]
    assert sorted(p.name for p in (landing / "rejected").iterdir()) == ["no_label.csv", "no_label.csv.reason.txt"]
    assert "label: column missing" in (landing / "rejected" / "no_label.csv.reason.txt").read_text()
    queried = task_xcom(f"ingest_labels_{use_case.name}", "ingest_queried_labels", run_id)
    assert queried == {"written": 2, "replaced": 0, "unknown_ids": [], "unknown": 0}

    window = read_predictions(use_case, "2026-01-01", "2026-01-02", with_labels=True)
    labels = dict(zip(window["request_id"], window["label"], strict=True))
    assert {k: v for k, v in labels.items() if v == v} == {"r0": 1.0, "r1": 2.0, "r2": 3.0, "r4": 40.0, "r5": 50.0}
    assert window["label_arrived_at"].notna().sum() == 5

    # The next run: the fixed file lands, the query returns the same rows again; nothing doubles.
    # The first run failed, so the query reads since the epoch again, up to this run's time.
    (landing / "rejected" / "no_label.csv").rename(landing / "fixed.csv")
    (landing / "fixed.csv").write_text("id,label\nr3,4\nr0,1.5\n")
    state, states, run_id = _run(use_case, datetime(2026, 1, 2, 1, tzinfo=UTC))
    assert state == "success", states
    landed = task_xcom(f"ingest_labels_{use_case.name}", "ingest_landed_labels", run_id)
    assert (landed["written"], landed["replaced"], landed["unknown"], landed["files_done"]) == (2, 1, 0, 1)
    queried = task_xcom(f"ingest_labels_{use_case.name}", "ingest_queried_labels", run_id)
    assert queried == {"written": 3, "replaced": 2, "unknown_ids": ["late"], "unknown": 1}
    window = read_predictions(use_case, "2026-01-01", "2026-01-02", with_labels=True)
    assert window["label"].notna().sum() == 6 and len(window) == 6
    assert dict(zip(window["request_id"], window["label"], strict=True))["r0"] == 1.5
