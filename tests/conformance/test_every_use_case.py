"""Conformance: every config in `configs/` runs the whole loop, with nothing but the config.

For each use case, against a real MLflow server, a real prediction service over HTTP and
real Airflow runs (`dag.test()`):

1. `train_<use case>` trains the config's candidates and promotes a `@champion`;
2. a **clean** window of traffic (a sample of the champion's own training rows, with a few
   values missing where the config imputes) is sent to `POST /predict/<use case>`, and its
   labels to `POST /labels/<use case>`;
3. `monitor_<use case>` on that window decides nothing: no drift, no decay, no data bug, and
   the decay was measurable (the primary metric computed on the labelled rows);
4. a **drifted** window (every feature drawn from one end of its own training values, so
   every value is one the suite allows) is served and labelled the same way;
5. `monitor_<use case>` on it decides `retrain`, triggers `train_<use case>` with the
   reason, and that triggered training run succeeds.

For a use case whose features come from the feature store (`feature_store:`), the
`materialize_features` DAG runs first (training waits on the store it loads); the traffic is
then what such a client sends, the entity keys and the request-time features, with each
row's event time at its own hour (a client asks for the current hour's weather): the clean
window is a sample of the training window's hours, the drifted one a later window's hours
with the calendar at its most frequent values. Both monitoring runs include the skew check,
which must compare every served row with the offline store and find no skew.

A config a user adds to `configs/` gets the same proof by running this file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow_xcom import task_xcom
from polling import wait_until

from mlops.config import UseCase, load_use_case
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ge_dir")]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))
# Where event times start when the training window has no end of its own (no time column).
NO_TIME_BASE = datetime(2030, 1, 1)
SEED = 7
# Share of one numeric feature's values sent as null in the clean window (serving.missing: impute):
# a few, below any null-share margin, so the clean window stays clean.
NULL_SHARE = 0.02
REQUEST_ROWS = 100


@pytest.fixture(scope="module")
def service(mlflow_server: str, airflow_home: Path, session_home: Path) -> Iterator[str]:
    """The prediction service on the project's own configs, logging where monitoring reads."""
    from mlops.settings import get_settings

    port = free_port()
    log_file = session_home / f"conformance-serving-{port}.log"
    cmd = [
        sys.executable, "-m", "mlops.serving", "--host", "127.0.0.1", "--port", str(port),
        "--configs-dir", str(PROJECT_ROOT / "configs"), "--log-uri", get_settings().prediction_log_uri,
        "--poll-seconds", "0.5",
    ]  # fmt: skip
    process = start_process_group(cmd, log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", 120, process, log_file)
        yield url
    finally:
        stop_process_group(process.pid)
        process.wait(timeout=30)


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_the_whole_loop(config: Path, service: str) -> None:
    use_case = load_use_case(config)
    if use_case.feature_store is not None:
        _materialize_features()
    snapshot = _train(use_case)
    _wait_until_served(service, use_case)
    if use_case.feature_store is not None:
        _score_a_batch_from_the_store(use_case)
    reference = _champion_training_rows(use_case, snapshot)
    days = use_case.monitoring.window_days
    start = _after_training(snapshot)
    rows = max(2 * use_case.monitoring.min_rows, 400)

    if use_case.feature_store is not None:
        # Served hours are "now" for their client: the clean window is the training window's end.
        start = start - timedelta(days=days)
    clean_end = start + timedelta(days=days)
    if use_case.feature_store is not None:
        clean = _clean_store_traffic(use_case, reference, start, clean_end, rows)
    else:
        clean = _clean_traffic(use_case, reference, rows)
    _serve_and_label(service, use_case, clean, start, clean_end, "clean")
    decision, summary = _monitor(use_case, clean_end, expect_trigger=False)
    assert decision["action"] == "none", decision
    assert decision["degradation"] is not None, f"decay was not measurable: {decision}"
    assert use_case.gate.primary_metric in decision["performance"], decision
    _assert_no_skew(use_case, decision, summary, len(clean))

    drifted_end = clean_end + timedelta(days=days)
    if use_case.feature_store is not None:
        drifted = _drifted_store_traffic(use_case, reference, clean_end, drifted_end, rows)
    else:
        drifted = _drifted_traffic(use_case, reference, rows)
    _serve_and_label(service, use_case, drifted, clean_end, drifted_end, "drifted")
    decision, summary = _monitor(use_case, drifted_end, expect_trigger=True)
    assert decision["action"] == "retrain", decision
    assert decision["drift_share"] >= use_case.monitoring.drift_share_threshold, decision
    _assert_no_skew(use_case, decision, summary, len(drifted))


# --------------------------------------------------------------------------- the steps


def _train(use_case: UseCase) -> dict[str, Any]:
    """`train_<use case>` on the config as written; returns its snapshot's XCom."""
    from mlops.mlflow import registry
    from mlops.orchestration.training import build_training_dag

    dag = build_training_dag(use_case)
    run = dag.test(run_conf={"reason": "conformance"})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert registry.alias_version(use_case.model_name, "champion") is not None, states
    snapshot = task_xcom(dag.dag_id, "ingest_snapshot", run.run_id)
    assert snapshot is not None
    return dict(snapshot)


def _materialize_features() -> None:
    """`materialize_features` once: the registry, the offline tables and the online store under MLOPS_HOME."""
    from mlops.orchestration.features import build_materialize_dag

    run = build_materialize_dag().test()
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


# A day after every window the store-backed loop monitors: its batch rows stay out of them.
STORE_BATCH_DAY = "2011-09-01"


def _score_a_batch_from_the_store(use_case: UseCase) -> None:
    """`score_<use case>` on a landed day of calendar-only rows: the weather is joined from the offline
    store at each row's hour, and logged with the hour keys."""
    import pandas as pd

    from mlops.data.ingestion import load_source
    from mlops.features import store
    from mlops.naming import scoring_dag_id
    from mlops.orchestration.scoring import build_scoring_dag
    from mlops.predictionlog.predictions import read_predictions
    from mlops.serving.batch import land_partition

    assert use_case.feature_store is not None
    names = use_case.feature_store.feature_names
    source = load_source(use_case)
    day = source[source[use_case.time_column or ""] == STORE_BATCH_DAY].drop(columns=names).reset_index(drop=True)
    assert len(day) > 0, f"the source has no rows on {STORE_BATCH_DAY}"
    land_partition(use_case, STORE_BATCH_DAY, day)
    dag = build_scoring_dag(use_case)
    run = dag.test(run_conf={"partition": STORE_BATCH_DAY})
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert task_xcom(scoring_dag_id(use_case.name), "score_landed_partition", run.run_id)["rows"] == len(day)
    logged = read_predictions(use_case, STORE_BATCH_DAY, pd.Timestamp(STORE_BATCH_DAY) + pd.Timedelta(days=1))
    assert len(logged) == len(day)
    offline = pd.read_parquet(store.FeatureRepo.default().offline_dir / "weather_hourly.parquet").set_index("hour")
    assert logged["hour"].str.startswith(STORE_BATCH_DAY).all(), logged["hour"].head()
    for name in ("temp", "hum"):
        assert logged[name].tolist() == offline.loc[logged["hour"], name].tolist(), name


def _wait_until_served(service: str, use_case: UseCase) -> None:
    """The service follows `@champion` by polling the registry: wait until it serves the new one."""
    from mlops.mlflow import registry

    champion = registry.alias_version(use_case.model_name, "champion")

    def served() -> bool:
        models = httpx.get(f"{service}/models", timeout=10).json()["models"]
        return any(m["use_case"] == use_case.name and str(m["version"]) == str(champion) for m in models)

    wait_until(served, timeout=120, what=f"the service to load {use_case.model_name} v{champion}", poll=0.5)


def _champion_training_rows(use_case: UseCase, snapshot: dict[str, Any]) -> Any:
    from mlops.monitoring.reference import read_reference

    frame = read_reference(Path(snapshot["path"]))
    assert not frame.empty
    return frame.reset_index(drop=True)


def _after_training(snapshot: dict[str, Any]) -> datetime:
    end = snapshot.get("window_end")
    return datetime.fromisoformat(end[:10]) if end else NO_TIME_BASE


def _clean_traffic(use_case: UseCase, reference: Any, rows: int) -> Any:
    """Rows the champion trained on, in the same proportions; a few nulls where the config imputes."""
    import numpy as np

    frame = reference.sample(n=rows, replace=len(reference) < rows, random_state=SEED).reset_index(drop=True)
    if use_case.serving.missing == "impute" and use_case.features.numeric:
        column = use_case.features.numeric[-1]
        blank = np.random.default_rng(SEED).random(len(frame)) < NULL_SHARE
        frame[column] = frame[column].astype(object).where(~blank, None)
    return frame


def _drifted_traffic(use_case: UseCase, reference: Any, rows: int) -> Any:
    """Each feature drawn independently from one end of its own training values: in range, out of shape.

    Numeric features take values from their top 30 %, categoricals their most frequent value,
    so every value is one the training data held (the suite passes) and every column drifts.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    drifted: dict[str, Any] = {}
    for column in use_case.features.numeric:
        values = reference[column].dropna()
        top = values[values >= values.quantile(0.7)].to_numpy()
        drifted[column] = rng.choice(top, size=rows)
    for column in use_case.features.categorical:
        drifted[column] = [reference[column].mode().iloc[0]] * rows
    drifted[use_case.target] = rng.choice(reference[use_case.target].to_numpy(), size=rows)
    return pd.DataFrame(drifted)


def _hour_times(use_case: UseCase, frame: Any) -> Any:
    """Each row's hour (naive UTC), from its entity key `hour` ('YYYY-MM-DDTHH')."""
    import pandas as pd

    assert use_case.feature_store is not None and "hour" in use_case.feature_store.entity_keys
    return pd.to_datetime(frame["hour"], format="%Y-%m-%dT%H")


def _clean_store_traffic(use_case: UseCase, reference: Any, start: datetime, end: datetime, rows: int) -> Any:
    """Training rows of the hours in [start, end), each served at its own hour."""
    hours = _hour_times(use_case, reference)
    within = reference[(hours >= start) & (hours < end)]
    assert len(within) >= use_case.monitoring.min_rows, f"{len(within)} training rows in [{start}, {end})"
    frame = within.sample(n=rows, replace=len(within) < rows, random_state=SEED).reset_index(drop=True)
    frame["event_time"] = _hour_times(use_case, frame)
    return frame


def _drifted_store_traffic(use_case: UseCase, reference: Any, start: datetime, end: datetime, rows: int) -> Any:
    """The source's hours in [start, end) (their weather is the store's, a later season's), the calendar
    features the client sends each at its most frequent training value; labels drawn from the training ones."""
    import numpy as np

    from mlops.data.ingestion import load_source
    from mlops.data.store_features import event_times
    from mlops.features.keys import hour_keys

    assert use_case.feature_store is not None
    source = load_source(use_case)
    times = event_times(use_case, source)
    source["hour"] = hour_keys(times).to_numpy()
    naive = times.dt.tz_localize(None)
    within = source[((naive >= start) & (naive < end)).to_numpy()]
    assert len(within) >= rows, f"the source has {len(within)} hours in [{start}, {end})"
    frame = within.sample(n=rows, random_state=SEED).reset_index(drop=True)
    for column in use_case.feature_store.request_features:
        frame[column] = reference[column].mode().iloc[0]
    frame[use_case.target] = np.random.default_rng(SEED).choice(reference[use_case.target].to_numpy(), size=rows)
    frame["event_time"] = _hour_times(use_case, frame)
    return frame


def _serve_and_label(service: str, use_case: UseCase, frame: Any, start: datetime, end: datetime, tag: str) -> None:
    """POST the rows to /predict with ids and event times (the frame's `event_time`, else spread over
    [start, end)), then their labels to /labels."""
    from mlops.predictionlog.predictions import read_predictions

    if "event_time" in frame.columns:
        times = [t.isoformat() for t in frame["event_time"]]
        assert all(start.isoformat() <= t < end.isoformat() for t in times), f"{tag} times outside the window"
    else:
        step = (end - start) / len(frame)
        times = [(start + step * i).isoformat() for i in range(len(frame))]
    ids = [f"{use_case.name}-{tag}-{i}" for i in range(len(frame))]
    records = json.loads(frame[use_case.client_fields].to_json(orient="records"))
    with httpx.Client(base_url=service, timeout=60) as client:
        for lo in range(0, len(records), REQUEST_ROWS):
            hi = lo + REQUEST_ROWS
            body = {"records": records[lo:hi], "ids": ids[lo:hi], "event_times": times[lo:hi]}
            response = client.post(f"/predict/{use_case.name}", json=body)
            assert response.status_code == 200, response.text[:500]
        wait_until(
            lambda: len(read_predictions(use_case, start, end)) == len(frame), timeout=60, what=f"{tag} rows logged"
        )
        labels = [
            {"id": i, "label": v}
            for i, v in zip(ids, json.loads(frame[use_case.target].to_json(orient="values")), strict=True)
        ]
        response = client.post(f"/labels/{use_case.name}", json={"labels": labels})
        assert response.status_code == 200, response.text[:500]
        written = response.json()
        assert written["written"] == len(frame) and written["unknown_ids"] == [], written
    logged = read_predictions(use_case, start, end, with_labels=True)
    assert logged["label"].notna().all(), "every label joined its prediction"


def _assert_no_skew(use_case: UseCase, decision: dict[str, Any], summary: dict[str, Any], rows: int) -> None:
    """A store-backed use case's skew check compared every served row with the offline store and found none."""
    if use_case.feature_store is None:
        assert summary.get("skew") is None, summary.get("skew")
        return
    skew = summary["skew"]
    assert skew is not None and skew["note"] is None, skew
    assert skew["rows"] == rows, skew
    assert set(skew["features"]) == set(use_case.feature_store.feature_names), skew
    assert all(f["differing"] == 0 for f in skew["features"].values()), skew
    assert decision["skew"] == [] and skew["findings"] == [] and skew["schema"] == [], skew


def _monitor(use_case: UseCase, window_end: datetime, *, expect_trigger: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """`monitor_<use case>` on the window ending at `window_end`: its decision and summary.json.

    A trigger's training run is then run too."""
    from mlops.naming import training_dag_id
    from mlops.orchestration.monitoring import build_monitoring_dag
    from mlops.orchestration.training import build_training_dag

    before = {r.run_id for r in _dag_runs(training_dag_id(use_case.name))}
    dag = build_monitoring_dag(use_case)
    run = dag.test(run_conf={"as_of": window_end.date().isoformat()})
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assessment = task_xcom(dag.dag_id, "assess_window", run.run_id)
    decision = dict(assessment["decision"])
    summary = json.loads((Path(assessment["report_dir"]) / "summary.json").read_text())
    triggered = [r for r in _dag_runs(training_dag_id(use_case.name)) if r.run_id not in before]
    if not expect_trigger:
        assert triggered == [], decision
        return decision, summary
    assert len(triggered) == 1, decision
    conf = dict(triggered[0].conf)
    assert "drift" in conf["reason"], conf
    # Under dag.test() nothing executes the queued run: end it, and run the retraining it asked for.
    _fail_queued(training_dag_id(use_case.name))
    retrain = build_training_dag(use_case).test(run_conf=conf)
    assert str(retrain.state) == "success", {ti.task_id: str(ti.state) for ti in retrain.get_task_instances()}
    return decision, summary


def _dag_runs(dag_id: str) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id).all()
        session.expunge_all()
        return runs


def _fail_queued(dag_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        for run in session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.state.in_(["queued", "running"])):
            run.state = DagRunState.FAILED
