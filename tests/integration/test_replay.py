"""`mlops replay` of flight_delays, the use case with integer features, string categoricals, a timestamp
time column and weather that goes missing in production, against a real MLflow server: through batch
scoring and through the prediction service over HTTP. Bike replays: tests/integration/test_scoring.py.

Rows are sent as the source holds them, nulls included. A service that refuses a null (422) has those
rows counted as failed, by reason; nothing is dropped or filled on the way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from polling import wait_until
from test_serving import Service, register, start_service

from mlops.config import UseCase, load_use_case
from mlops.platform.replay import replay
from mlops.platform.replay_traffic import load_replay_rows
from mlops.predictionlog.predictions import read_predictions

pytestmark = pytest.mark.integration
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Outages on 06-29 and 07-04, the new carrier NK from 07-01.
START, END = "2023-06-29", "2023-07-05"
WEATHER = ["temperature", "wind_speed", "precipitation", "visibility"]


@dataclass
class Flights:
    use_case: UseCase
    version: str
    pipeline: Any
    root: Path

    def rows(self) -> pd.DataFrame:
        return load_replay_rows(self.use_case, date.fromisoformat(START), date.fromisoformat(END))


@pytest.fixture(scope="module")
def flights(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Flights:
    """The bundled config under a model name of its own, and a pipeline of its first candidate fitted on Jan-Feb."""
    from mlops.data.ingestion import load_source
    from mlops.training.candidates import build_pipeline, expand_candidates, features_and_target

    root = tmp_path_factory.mktemp("replay")
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "flight_delays.yaml").read_text())
    raw["model_name"] = f"{raw['model_name']}_{uuid.uuid4().hex[:8]}"
    raw["source"]["path"] = str(PROJECT_ROOT / raw["source"]["path"])
    (root / "configs").mkdir()
    (root / "configs" / "flight_delays.yaml").write_text(yaml.safe_dump(raw))
    use_case = load_use_case(root / "configs" / "flight_delays.yaml")
    source = load_source(use_case)
    winter = source[source["scheduled_departure"] < "2023-03-01"]
    features, target = features_and_target(use_case, winter)
    assert features.notna().all().all()  # the model never saw a missing value
    pipeline = build_pipeline(use_case, expand_candidates(use_case)[0]).fit(features, target)
    return Flights(use_case, register(use_case.model_name, pipeline, features), pipeline, root)


def test_batch_replay_sends_the_nulls_and_the_new_carrier_as_they_are(flights: Flights, tmp_path: Path) -> None:
    log, labels = str(tmp_path / "log"), str(tmp_path / "labels")
    lines: list[str] = []
    result = replay(
        flights.use_case, START, END, speed=0, label_delay=0.5, via="batch", log_uri=log, labels_uri=labels,
        deliver_remaining_labels=True, progress=lines.append,
    )  # fmt: skip
    sent = flights.rows()
    nulls = sent[sent["temperature"].isna()]
    assert len(nulls) > 10 and (sent["carrier"] == "NK").sum() > 30
    assert (result.rows, result.failed_rows, result.failures) == (len(sent), 0, {})
    assert result.model_versions == {flights.version: len(sent)} and result.labels_delivered == len(sent)
    assert lines[-1].startswith(f"replay of flight_delays {START}..{END} via batch: {len(sent)} rows, 0 failed, ")

    logged = read_predictions(flights.use_case, START, END, with_labels=True, uri=log, labels_uri=labels)
    logged = logged.set_index("request_id").loc[sent["request_id"]]
    assert len(logged) == len(sent)
    # Event times are the departures, to the minute; every null is logged as null, nothing filled in.
    assert logged["event_time"].tolist() == sent["event_time"].tolist()
    assert set(logged.index[logged["temperature"].isna()]) == set(nulls["request_id"])
    assert logged.loc[nulls["request_id"], WEATHER].isna().all().all()
    # The model answered them itself (its pipeline imputes), the unseen carrier included.
    features = sent[flights.use_case.features.all]
    assert logged["prediction"].astype(int).tolist() == flights.pipeline.predict(features).tolist()
    assert logged["label"].astype(int).tolist() == sent["delayed"].tolist()
    # Batch scoring logs the probabilities too, and the integer features as integers.
    proba = flights.pipeline.predict_proba(features)
    assert logged[["proba__0", "proba__1"]].to_numpy() == pytest.approx(proba)
    assert str(logged["prediction"].dtype) == "int64"
    assert {str(logged[c].dtype) for c in ("dep_hour", "day_of_week", "distance", "seats")} == {"int64"}


@pytest.fixture(scope="module")
def flight_service(flights: Flights) -> Iterator[Service]:
    root = flights.root
    service = start_service(
        root, root / "configs", root / "service-log", "--use-case", "flight_delays", "--log-flush-seconds", "0.2"
    )
    try:
        yield service
    finally:
        service.stop()


def _chunks_with_a_null(sent: pd.DataFrame, rows_per_request: int) -> set[str]:
    """The request ids that travel in a request with at least one missing feature (requests never span days)."""
    ids: set[str] = set()
    for _, day in sent.groupby(sent["event_time"].dt.date):
        for begin in range(0, len(day), rows_per_request):
            chunk = day.iloc[begin : begin + rows_per_request]
            if chunk[WEATHER].isna().any().any():
                ids.update(chunk["request_id"])
    return ids


def test_http_replay_sends_nulls_and_counts_what_the_service_refuses(
    flights: Flights, flight_service: Service, tmp_path: Path
) -> None:
    rows_per_request = 10
    lines: list[str] = []
    result = replay(
        flights.use_case, START, END, speed=0, via="http", url=flight_service.url, rows_per_request=rows_per_request,
        labels_uri=str(tmp_path / "labels"), progress=lines.append,
    )  # fmt: skip
    sent = flights.rows()
    assert result.rows == len(sent) and result.failed_rows == sum(result.failures.values())
    answered = len(sent) - result.failed_rows
    assert result.model_versions == ({flights.version: answered} if answered else {})

    def all_answered_logged() -> bool:
        return len(read_predictions(flights.use_case, START, END, uri=str(flight_service.log_dir))) == answered

    wait_until(all_answered_logged, what="every answered row in the service's prediction log")
    logged = read_predictions(flights.use_case, START, END, uri=str(flight_service.log_dir)).set_index("request_id")
    refused = set(sent["request_id"]) - set(logged.index)
    assert len(refused) == result.failed_rows
    # Only a request carrying a null may be refused; every other one is answered.
    assert refused <= _chunks_with_a_null(sent, rows_per_request)
    # Every null row went out as null: refused at the door, or answered and logged as null.
    nulls = set(sent.loc[sent["temperature"].isna(), "request_id"])
    assert nulls and {i for i in nulls if i not in refused} == set(logged.index[logged["temperature"].isna()])
    # Under the default serving.missing: impute nothing is refused: the pipeline imputes (the lost rows).
    assert result.failed_rows == 0 and result.failures == {}
    assert len(nulls) > 10
    # Every answer is logged with both class probabilities (summing to 1) and typed features.
    assert (logged["proba__0"] + logged["proba__1"]).to_numpy() == pytest.approx(1.0)
    assert str(logged["prediction"].dtype) == "int64"
    assert {str(logged[c].dtype) for c in ("dep_hour", "day_of_week", "distance", "seats")} == {"int64"}
    assert str(logged["carrier"].dtype) == "object" and str(logged["temperature"].dtype) == "float64"
    if result.failed_rows:
        # A service whose schema says a feature may not be null answers 422; the replay reports the count.
        assert set(result.failures) == {"HTTP 422"}
        assert any("HTTP 422" in line and "may not be null" in line for line in lines), lines
        assert f"{result.failed_rows} failed (HTTP 422: {result.failed_rows})" in lines[-1]


def test_a_service_under_serving_missing_refuse_answers_a_null_with_a_422_naming_the_policy(
    flights: Flights, tmp_path: Path
) -> None:
    raw = yaml.safe_load((flights.root / "configs" / "flight_delays.yaml").read_text())
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "flight_delays.yaml").write_text(yaml.safe_dump({**raw, "serving": {"missing": "refuse"}}))
    service = start_service(tmp_path, tmp_path / "configs", tmp_path / "log", "--use-case", "flight_delays")
    try:
        sent = flights.rows()
        row = sent[sent["temperature"].isna()].iloc[0]
        record = {c: (None if pd.isna(row[c]) else row[c].item() if hasattr(row[c], "item") else row[c])
                  for c in flights.use_case.features.all}  # fmt: skip
        import httpx

        refused = httpx.post(f"{service.url}/predict/flight_delays", json={"record": record}, timeout=30)
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert {tuple(item["loc"]) for item in detail} == {("body", "record", c) for c in WEATHER}
        assert detail[0]["msg"] == (
            "may not be null: serving.missing is 'refuse' for flight_delays; "
            "send a value or set serving.missing: impute"
        )
        # Integers: 3.0 is taken as 3, 3.5 is refused naming the field.
        complete = {**record, **{c: 1.0 for c in WEATHER}}
        assert httpx.post(f"{service.url}/predict/flight_delays",
                          json={"record": {**complete, "dep_hour": 3.0}}, timeout=30).status_code == 200  # fmt: skip
        half = httpx.post(f"{service.url}/predict/flight_delays", json={"record": {**complete, "dep_hour": 3.5}},
                          timeout=30)  # fmt: skip
        assert half.status_code == 422 and half.json()["detail"][0]["loc"] == ["body", "record", "dep_hour"]
    finally:
        service.stop()
