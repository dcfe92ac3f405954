"""Bad source data stops the training DAG before training, with a clear message and an alert.

Each kind of bad input runs the real training DAG under `dag.test()` against the
session's MLflow server, with a champion already in place (trained once for the
module, under a registered model of its own so the other DAG tests are not touched).
For every kind the test checks what a person on call would: which task failed and
that its error names the problem and what to do; that the failure alert reached a
webhook (a local HTTP sink) naming the DAG, the task and that error; that no
`train_candidate` ran and nothing reached MLflow for the run; and that the registry
has no new version and the same `@champion`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from alert_sink import AlertSink, alert_sink

from mlops.config import FileSource, UseCase, find_use_case

pytestmark = pytest.mark.integration

RAW = Path(__file__).resolve().parents[2] / "data" / "raw" / "bike_sharing_hourly.csv"
AS_OF = "2011-03-01"
DAG_ID = "train_bike_sharing"
MODEL = "bike_sharing_cnt_bad_source_data"
# About 83 days from 2011-01-01: the 45-day window before AS_OF holds ~1 000 rows (min_rows 500).
ROWS = 2000


def _frame() -> pd.DataFrame:
    return pd.read_csv(RAW, nrows=ROWS)


def _csv(frame: pd.DataFrame, path: Path, **kwargs: Any) -> Path:
    frame.to_csv(path, index=False, **kwargs)
    return path


def _nan_inf_flood(path: Path) -> Path:
    frame = _frame()
    rows = frame.sample(frac=0.3, random_state=7).index
    frame.loc[rows, "temp"] = float("nan")
    frame["hum"] = frame["hum"].astype(float)
    frame.loc[rows[:200], "hum"] = float("inf")
    return _csv(frame, path)


def _future_timestamps(path: Path) -> Path:
    # A clock bug upstream: the last two days of the export are stamped 2099.
    frame = _frame()
    frame.loc[frame.index[-48:], "dteday"] = "2099-01-01"
    return _csv(frame, path)


def _truncated_csv(path: Path) -> Path:
    data = RAW.read_bytes()
    # Cut a copy mid-line, as an interrupted copy or export leaves it.
    path.write_bytes(data[: data.index(b"\n", len(data) // 3) + 12])
    return path


def _truncated_parquet(path: Path) -> Path:
    _frame().to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@dataclass(frozen=True)
class BadInput:
    kind: str
    write: Callable[[Path], Path]
    """Writes the bad source file at the path it is given (extension chosen by `suffix`)."""
    failing_task: str
    says: list[str]
    """Phrases the task's error (and so the alert) must contain: the problem and what to do."""
    suffix: str = ".csv"
    conf: dict[str, Any] = field(default_factory=dict)


FIX_DATA = "Fix the input data and re-run"
CASES = [
    BadInput("missing_column", lambda p: _csv(_frame().drop(columns=["temp"]), p),
             "validate_snapshot", ["columns missing ['temp']", FIX_DATA]),
    BadInput("renamed_column", lambda p: _csv(_frame().rename(columns={"temp": "temperature"}), p),
             "validate_snapshot", ["columns unexpected ['temperature']; missing ['temp']", FIX_DATA]),
    BadInput("added_column", lambda p: _csv(_frame().assign(promo_code="SPRING"), p),
             "validate_snapshot", ["columns unexpected ['promo_code']", "re-bootstrap the suite"]),
    BadInput("wrong_type", lambda p: _csv(_frame().assign(hum="humid"), p),
             "validate_snapshot", ["expect_column_values_to_be_in_type_list(hum)", FIX_DATA]),
    BadInput("all_null_feature", lambda p: _csv(_frame().assign(windspeed=float("nan")), p),
             "validate_snapshot", ["expect_column_values_to_not_be_null(windspeed)", FIX_DATA]),
    BadInput("nan_inf_flood", _nan_inf_flood, "validate_snapshot",
             ["expect_column_values_to_not_be_null(temp)", "expect_column_values_to_be_between(hum)", "inf", FIX_DATA]),
    BadInput("duplicated_rows", lambda p: _csv(pd.concat([_frame(), _frame().iloc[600:900]]), p),
             "validate_snapshot", ["expect_compound_columns_to_be_unique", "600 duplicated rows", FIX_DATA]),
    BadInput("target_out_of_range", lambda p: _csv(_frame().assign(cnt=-_frame()["cnt"]), p),
             "validate_snapshot", ["expect_column_values_to_be_between(cnt)", FIX_DATA]),
    BadInput("future_timestamps", _future_timestamps, "ingest_snapshot",
             ["48 row(s)", "'dteday' after today", "2099-01-01", "Fix the dates at the source"]),
    BadInput("empty_window", lambda p: _csv(_frame(), p), "ingest_snapshot",
             ["no rows of", "fall in the window [2010-04-17 00:00:00, 2010-06-01 00:00:00)",
              "the source spans 2011-01-01", "Pass another as_of"], conf={"as_of": "2010-06-01"}),
    BadInput("empty_file", lambda p: (p.write_text(""), p)[1], "ingest_snapshot", ["is empty", "re-export it"]),
    BadInput("truncated_csv", _truncated_csv, "ingest_snapshot", ["looks truncated", "re-export or re-copy"]),
    BadInput("truncated_parquet", _truncated_parquet, "ingest_snapshot",
             ["is not a readable Parquet file", "truncated or corrupt, re-export it"], suffix=".parquet"),
    BadInput("wrong_encoding", lambda p: _csv(_frame(), p, encoding="utf-16"), "ingest_snapshot",
             ["is not UTF-8", "a UTF-16 byte-order mark", "iconv -f utf-16 -t utf-8"]),
]  # fmt: skip


def _run(use_case: UseCase, conf: dict[str, Any]) -> Any:
    from mlops.orchestration.training import build_training_dag

    return build_training_dag(use_case).test(run_conf={"as_of": AS_OF, "reason": "bad source data test", **conf})


def _versions() -> list[str]:
    from mlflow import MlflowClient

    return sorted(v.version for v in MlflowClient().search_model_versions(f"name='{MODEL}'"))


def _champion() -> str | None:
    from mlops.mlflow import registry

    return registry.alias_version(MODEL, "champion")


def _mlflow_runs_of(run_id: str) -> list[Any]:
    from mlflow import MlflowClient

    from mlops.naming import TAG_DAG_RUN_ID

    client = MlflowClient()
    experiment = client.get_experiment_by_name("bike_sharing")
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], f"tags.{TAG_DAG_RUN_ID} = '{run_id}'"))


@pytest.fixture(scope="module")
def bike(mlflow_server: str, airflow_home: Path) -> UseCase:
    use_case = find_use_case("bike_sharing")
    # The real config's data and features with lighter candidates, as in test_training_dag.py.
    light = [c.model_copy(update={"params": {k: v[:1] for k, v in c.params.items()}}) for c in use_case.candidates]
    training = use_case.training.model_copy(update={"window": use_case.training.window.model_copy(update={"days": 45})})
    return use_case.model_copy(update={"candidates": light[:2], "training": training, "model_name": MODEL})


@pytest.fixture(scope="module")
def champion(bike: UseCase) -> str:
    """One good run for the module: the champion every bad input must leave in place."""
    dag_run = _run(bike, {})
    assert str(dag_run.state) == "success", {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    version = _champion()
    assert version is not None
    return version


@pytest.fixture(scope="module")
def sink() -> Iterator[AlertSink]:
    with alert_sink() as running:
        yield running


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_source_data_fails_clearly_alerts_and_trains_nothing(
    bike: UseCase, champion: str, sink: AlertSink, case: BadInput, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = case.write(tmp_path / f"{case.kind}{case.suffix}")
    bad = bike.model_copy(update={"source": FileSource(path=str(source))})
    versions_before = _versions()
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", sink.url)
    sink.clear()

    dag_run = _run(bad, case.conf)

    instances = dag_run.get_task_instances()
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in instances}
    assert str(dag_run.state) == "failed", states
    failed = [ti.task_id for ti in instances if str(ti.state) == "failed"]
    assert failed == [case.failing_task], states
    # Nothing after the failure ran: no candidate was trained, tracked, registered or promoted.
    for ti in instances:
        if ti.task_id in ("train_candidate", "start_tracking_run", "evaluate_candidate", "register_candidate",
                          "promote_candidate", "publish_champion"):  # fmt: skip
            # upstream_failed: never started (Airflow stamps start and end dates on it all the same).
            assert (str(ti.state), ti.try_number) == ("upstream_failed", 0), (ti.task_id, str(ti.state))
    assert _mlflow_runs_of(dag_run.run_id) == []
    assert _versions() == versions_before
    assert _champion() == champion

    # The failure alert reached the webhook, naming the DAG, the task, the run and the error.
    [alert] = sink.wait_for(f"{DAG_ID}.{case.failing_task} failed")
    assert [p["subject"] for p in sink.posts] == [alert["subject"]], "one alert, for the failed task only"
    assert alert["severity"] == "critical"
    body = alert["body"]
    assert f"DAG: {DAG_ID}" in body and f"Task: {case.failing_task}" in body and f"Run: {dag_run.run_id}" in body
    error = body.split("Error: ", 1)[1]
    for phrase in case.says:
        assert phrase in error, f"{case.kind}: {phrase!r} not in the error:\n{error}"
