"""The service's contract without a model server: the OpenAPI document and MLflow's scoring formats.

The app is the real one (TestClient, no lifespan: no model is loaded), so the document shows
each use case from its configured features; test_contract.py covers loaded models end to end.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlops.serving.app import create_app
from mlops.serving.config import ServingConfig
from mlops.serving.openapi import EVENT_TIME_PATTERN, column_schema
from mlops.serving.routes.invocations import to_records
from mlops.serving.schema import Column, RequestError, _check_time

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NAMES = ["temp", "season"]


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(ServingConfig(configs_dir=str(CONFIGS), log_uri=str(tmp_path / "log"))))


def test_every_configured_use_case_has_its_operation_before_a_model_loads(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for name in ("bike_sharing", "breast_cancer", "flight_delays"):
        operation = document["paths"][f"/predict/{name}"]["post"]
        assert "no version loaded yet" in operation["summary"]
        assert {"200", "400", "404", "413", "415", "422", "503"} <= set(operation["responses"])
    record = document["components"]["schemas"]["FlightDelaysRecord"]["properties"]
    assert "carrier" in record and record["carrier"]["type"] == ["string", "null"]
    assert set(document["paths"]["/ready"]["get"]["responses"]) == {"200", "503"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    # The generic routes name the served use cases, so a generated request is not always a 404.
    generic = document["paths"]["/predict/{use_case}"]["post"]["parameters"][0]["schema"]
    assert generic["enum"] == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    # Cached while the loaded versions stay the same.
    assert client.get("/openapi.json").json() == document


def test_a_missing_or_wrong_content_type_is_a_415_naming_the_header(client: TestClient) -> None:
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/json; charset=latin-1"}):
        response = client.post("/predict", content=b'{"records": []}', headers=headers)
        assert response.status_code == 415, (headers, response.text)
        assert response.json()["detail"][0]["loc"] == ["header", "content-type"]


def test_nullability_follows_the_missing_policy_and_the_domain_is_an_enum() -> None:
    assert column_schema(Column("c", "string", nullable=True), ["a", "b"]) == {
        "type": ["string", "null"],
        "enum": ["a", "b", None],
    }
    assert column_schema(Column("c", "string", nullable=False), ["a"]) == {"type": "string", "enum": ["a"]}
    assert column_schema(Column("n", "long"), None)["type"] == "integer"


@pytest.mark.parametrize(
    "value",
    ["2011-05-02", "2011-05-02T08:00", "2011-05-02T08:00:00.123Z", "1901-01-01T00:00:00+13:59", "2198-12-31T23:59:59"],
)
def test_an_event_time_the_pattern_allows_is_one_the_service_takes(value: str) -> None:
    assert re.match(EVENT_TIME_PATTERN, value)
    assert _check_time(value)[1] is None


@pytest.mark.parametrize("value", ["2011-02-30", "1899-12-31", "2011-13-01", "yesterday"])
def test_the_pattern_refuses_what_the_service_refuses(value: str) -> None:
    assert not re.match(EVENT_TIME_PATTERN, value)


RECORDS = [{"temp": 1.0, "season": "fall"}, {"temp": 2.0, "season": "été"}]


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": NAMES, "data": [[1.0, "fall"], [2.0, "été"]], "index": [0, 1]}},
        {"dataframe_split": {"data": [[1.0, "fall"], [2.0, "été"]]}},
        {"dataframe_records": RECORDS},
        {"instances": RECORDS},
        {"instances": {"temp": [1.0, 2.0], "season": ["fall", "été"]}},
        {"inputs": {"temp": [1.0, 2.0], "season": ["fall", "été"]}},
        {"inputs": RECORDS, "params": {"ignored": True}},
        {"inputs": [[1.0, "fall"], [2.0, "été"]]},
    ],
)
def test_every_mlflow_format_becomes_the_same_records(payload: dict[str, Any]) -> None:
    assert to_records(payload, NAMES)[1] == RECORDS


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ([RECORDS], ["body"]),
        ({"rows": RECORDS}, ["body"]),
        ({"inputs": RECORDS, "instances": RECORDS}, ["body"]),
        ({"dataframe_split": {"columns": NAMES, "data": [[1.0]]}}, ["body", "dataframe_split", "data", 0]),
        ({"dataframe_records": {"temp": [1.0]}}, ["body", "dataframe_records"]),
        ({"inputs": {"temp": [1.0], "season": []}}, ["body", "inputs"]),
    ],
)
def test_a_body_in_no_mlflow_format_is_a_400_saying_where(payload: Any, loc: list[Any]) -> None:
    with pytest.raises(RequestError) as caught:
        to_records(payload, NAMES)
    assert caught.value.status == 400 and caught.value.detail[0]["loc"] == loc


def test_invocations_without_a_use_case_names_the_choices(client: TestClient) -> None:
    response = client.post("/invocations", json={"dataframe_records": RECORDS})
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "BAD_REQUEST" and "bike_sharing" in body["message"]
    unknown = client.post("/invocations/nope", json={"dataframe_records": RECORDS})
    assert unknown.status_code == 404 and "unknown use case" in unknown.json()["message"]


def test_an_integral_float_id_is_the_integer_id() -> None:
    """JSON Schema calls -141.0 an integer, so the documented `id` accepts it (schemathesis found the 422)."""
    from mlops.serving.schema import _check_id

    assert _check_id(-141.0) == ("-141", None)
    assert _check_id(1.5)[1] is not None and _check_id(float("inf"))[1] is not None


def test_a_store_backed_record_asks_for_the_entity_keys_not_the_stores_features() -> None:
    from mlops.config import FeatureStoreSource, find_use_case
    from mlops.features.keys import hour_of_day
    from mlops.serving.openapi import example_body, example_record, record_schema

    base = find_use_case("bike_sharing")
    weather = ["temp", "atemp", "hum", "windspeed", "weathersit"]
    section = FeatureStoreSource(entity_keys=["hour"], features=[f"weather_hourly:{f}" for f in weather],
                                 hour_column="hr")  # fmt: skip
    use_case = base.model_copy(update={"feature_store": section})
    schema = record_schema(use_case, None)
    assert not set(weather) & set(schema["properties"]) and "hour" in schema["required"]
    assert schema["properties"]["hour"]["type"] == "string" and "season" in schema["properties"]
    example = example_record(use_case, None)
    assert "hour" in example and not set(weather) & set(example)
    assert "come from the feature store" in schema["description"]
    # A key the store holds (the training window's last day), at the example's own `hr`; sent at that hour.
    assert example["hour"] == f"2011-02-28T{hour_of_day(example['hr']):02d}"
    body = example_body(use_case, None)
    assert body["records"] == [example] and body["event_times"] == [f"{example['hour']}:00:00"]
    assert "event_times" not in example_body(base, None)
