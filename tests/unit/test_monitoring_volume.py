"""A window above `monitoring.exact_below_rows`: judged from its files' summaries and a stratified sample,
against the exact path on the same Parquet log (real files, labels written through `write_labels`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from monitoring_frames import bike_frame

from mlops.config import find_use_case
from mlops.monitoring.decision import Guards, decide
from mlops.monitoring.run import MonitoringSummary, run_monitoring
from mlops.monitoring.volume import WindowFiles
from mlops.monitoring.window import collect_window, read_window
from mlops.predictionlog.labels import write_labels
from mlops.predictionlog.stores import prediction_store

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIKE = find_use_case("bike_sharing", PROJECT_ROOT / "configs")
START, END = datetime(2011, 5, 1), datetime(2011, 5, 6)
CHAMPION = {"rmse": 42.0}  # the holdout of a model with noise 30 on a target with noise 30


def prediction_log(frame: pd.DataFrame, label_share: float, noise: float, seed: int) -> pd.DataFrame:
    """Log rows of a window (one a minute from 2011-05-01), with the label on `label_share` of them."""
    rng = np.random.default_rng(seed)
    rows = len(frame)
    log = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(rows)],
            "use_case": "bike_sharing",
            "model_name": "bike_sharing_cnt",
            "model_version": "1",
            "event_time": pd.date_range("2011-05-01", periods=rows, freq="min"),
            "logged_at": pd.Timestamp("2011-05-20"),
            "source": "online",
        }
    )
    log["prediction"] = 200 + 400 * frame["temp"].to_numpy() + rng.normal(0, noise, rows)
    log = pd.concat([log, frame.drop(columns=["cnt"]).reset_index(drop=True)], axis=1)
    label = frame["cnt"].to_numpy(dtype=float)
    label[rng.random(rows) > label_share] = np.nan
    log["label"] = label
    return log


def _write_log(home: Path, log: pd.DataFrame) -> None:
    """The log as the service writes it: several files per day folder; labels through the label API."""
    rows = log.drop(columns=["label"])
    rows["role"] = "champion"
    shadow = rows.iloc[:300].copy()
    shadow["role"], shadow["prediction"] = "shadow", 10_000.0  # never part of the champion's window
    store = prediction_store()
    for chunk in np.array_split(np.arange(len(rows)), 9):
        store.append(BIKE.name, rows.iloc[chunk])
    store.append(BIKE.name, shadow)
    labelled = log[log["label"].notna()]
    write_labels(BIKE, labelled["request_id"].tolist(), labelled["label"].tolist(), arrived_at=datetime(2011, 5, 7))


def _both_paths(home: Path, name: str) -> tuple[MonitoringSummary, MonitoringSummary, object]:
    reference = bike_frame(3000, seed=1)
    exact_window = collect_window(BIKE, START, END, f"{name}-exact")
    exact = run_monitoring(BIKE, read_window(BIKE, exact_window.path), reference, f"{name}-exact", CHAMPION, home)
    at_volume = BIKE.model_copy(
        update={"monitoring": BIKE.monitoring.model_copy(update={"exact_below_rows": 1000, "sample_rows": 2000})}
    )
    window = collect_window(at_volume, START, END, f"{name}-volume")
    assert window.sampled and window.files is not None
    sampled = run_monitoring(
        at_volume, read_window(BIKE, window.path), reference, f"{name}-volume", CHAMPION, home,
        at_volume=WindowFiles.load(window.files),
    )  # fmt: skip
    return exact, sampled, window


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own on the local PostgreSQL, dropped afterwards."""
    import psycopg2

    name = f"volume_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", user="postgres", host="127.0.0.1", port=5432)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        from mlops.predictionlog.stores import SqlStore

        for url in list(SqlStore._engines):
            if name in url:
                SqlStore._engines.pop(url).dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.parametrize("store", ["parquet", "sqlite", "postgresql"])
@pytest.mark.parametrize(("shift", "noise", "expected"), [(0.0, 30, "none"), (0.3, 150, "retrain")])
def test_the_summaries_path_decides_as_the_exact_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    shift: float,
    noise: float,
    expected: str,
    store: str,
) -> None:
    """An SQL log's summary is GROUP BY queries in the database; a Parquet log's, its files' merged."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    log_uri = {"parquet": str(tmp_path / "log"), "sqlite": f"sqlite:///{tmp_path / 'log.db'}"}.get(store) or str(
        request.getfixturevalue("postgres_url")
    )
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", log_uri)
    log = prediction_log(bike_frame(6000, seed=4, shift=shift), label_share=0.8, noise=noise, seed=5)
    log["logged_at"] = log["event_time"]
    _write_log(tmp_path, log)

    exact, sampled, window = _both_paths(tmp_path, f"shift{shift}")

    assert sampled.drift_engine == "summaries" and exact.drift_engine == "evidently"
    assert sampled.rows == exact.rows == 6000  # the shadow's 300 rows left out of both
    assert sampled.labelled_rows == exact.labelled_rows
    assert sampled.window_sample_rows == WindowFiles.load(str(window.files)).sample_rows
    exact_columns = {c.column: c for c in exact.drift.columns}
    assert {c.column for c in sampled.drift.columns} == set(exact_columns)
    for column in sampled.drift.columns:
        assert column.drifted == exact_columns[column.column].drifted, column
        bound = sampled.drift_error_bounds.get(column.column, 0.0)
        assert abs(column.score - exact_columns[column.column].score) <= bound + 1e-6, column
    assert sampled.prediction_drift is not None and exact.prediction_drift is not None
    assert sampled.prediction_drift.drifted == exact.prediction_drift.drifted
    assert sampled.null_shares == exact.null_shares
    guards = Guards(now=datetime(2011, 5, 7, tzinfo=UTC), training_active=False, last_triggered_at=None,
                    validation_passed=True, validation_details="")  # fmt: skip
    assert decide(BIKE, sampled, guards).action == decide(BIKE, exact, guards).action == expected
    assert sampled.report_dir is not None
    assert "stratified sample of" in (sampled.report_dir / "drift.html").read_text()


def test_a_window_below_the_size_is_read_whole_and_leaves_no_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_PREDICTION_LOG_URI", str(tmp_path / "log"))
    log = prediction_log(bike_frame(1500, seed=4), label_share=0.8, noise=30, seed=5)
    _write_log(tmp_path, log)
    small = BIKE.model_copy(update={"monitoring": BIKE.monitoring.model_copy(update={"exact_below_rows": 10**6})})
    first = collect_window(BIKE.model_copy(update={"monitoring": BIKE.monitoring.model_copy(
        update={"exact_below_rows": 100})}), START, END, "again")  # fmt: skip
    assert first.sampled and Path(str(first.files)).exists()
    again = collect_window(small, START, END, "again")
    assert not again.sampled and again.files is None and again.rows == 1800  # the log's rows, a shadow's included
    assert not Path(str(first.files)).exists()
