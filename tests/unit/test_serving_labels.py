"""`POST /labels` on the real prediction-service app (TestClient; the labels routes need no model loaded).

Predictions are put in the log directly, as the service's log writer would; the labels go
through HTTP and are read back through `read_predictions(..., with_labels=True)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlops.predictionlog.frames import PredictionBatch
from mlops.predictionlog.labels import read_labels
from mlops.predictionlog.predictions import append_predictions, read_predictions
from mlops.serving.app import create_app
from mlops.serving.config import ServingConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))  # settings.labels_dir: where the service's labels go
    uri = str(tmp_path / "log")
    for use_case, prediction in (("bike_sharing", 40.0), ("breast_cancer", 1)):
        batch = PredictionBatch(
            use_case=use_case,
            model_name="m",
            model_version="1",
            source="online",
            request_ids=[f"{use_case}-{i}" for i in range(3)],
            event_times=[datetime(2011, 5, 1, 8 + i) for i in range(3)],
            predictions=[prediction] * 3,
            features={"proba__0": [0.2] * 3, "proba__1": [0.8] * 3} if use_case == "breast_cancer" else {},
        )
        append_predictions(use_case, [batch], uri=uri)
    return uri


@pytest.fixture
def client(log: str) -> Iterator[TestClient]:
    # Not entered as a context manager: the lifespan (model poller, log writer) is not needed for labels.
    yield TestClient(create_app(ServingConfig(configs_dir=str(CONFIGS), log_uri=log)))


def _window(use_case: str, log: str) -> dict[str, object]:
    frame = read_predictions(use_case, "2011-05-01", "2011-05-02", with_labels=True, uri=log)
    return {k: v for k, v in zip(frame["request_id"], frame["label"], strict=True) if v == v}


def test_labels_are_written_replaced_and_unknown_ids_reported(client: TestClient, log: str) -> None:
    body = {"labels": [{"id": "bike_sharing-0", "label": 41}, {"id": "bike_sharing-1", "label": 7.5}]}
    first = client.post("/labels/bike_sharing", json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {"use_case": "bike_sharing", "written": 2, "replaced": 0, "unknown_ids": []}

    again = client.post(
        "/labels",
        json={
            "use_case": "bike_sharing",
            "labels": [
                {"id": "bike_sharing-1", "label": 8, "event_time": "2011-05-01T12:00:00Z"},
                {"id": "not-yet-logged", "label": 3},
            ],
        },
    )
    assert again.status_code == 200, again.text
    assert again.json() == {"use_case": "bike_sharing", "written": 2, "replaced": 1, "unknown_ids": ["not-yet-logged"]}
    assert _window("bike_sharing", log) == {"bike_sharing-0": 41.0, "bike_sharing-1": 8.0}
    assert len(read_labels("bike_sharing", uri=None)) == 3  # one per id; the unknown one kept, unmatched


def test_bad_rows_are_a_422_naming_the_field_and_nothing_is_written(client: TestClient, log: str) -> None:
    refused = client.post(
        "/labels/breast_cancer",
        json={
            "labels": [
                {"id": "breast_cancer-0", "label": 1},
                {"id": "breast_cancer-1", "label": "benign"},
                {"id": "breast_cancer-2", "label": 0, "event_time": "2011-05-01T09:00:00"},
            ]
        },
    )
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "labels", 1, "label"], ["body", "labels", 2, "event_time"]]
    assert "'benign' is not one of the classes [0, 1]" in detail[0]["msg"]
    assert "before its prediction's event time 2011-05-01T10:00:00" in detail[1]["msg"]
    assert read_labels("breast_cancer").empty

    duplicated = client.post("/labels/breast_cancer", json={"labels": [{"id": "x", "label": 1}] * 2})
    assert duplicated.status_code == 422 and duplicated.json()["detail"][0]["loc"] == ["body", "labels", 1, "id"]
    assert "send one label per id" in duplicated.json()["detail"][0]["msg"]

    shapes = [
        ({"labels": [{"id": "a"}]}, ["body", "labels", 0, "label"]),
        ({"labels": [{"id": "a", "label": 1, "when": "now"}]}, ["body", "labels", 0, "when"]),
        ({"labels": [{"id": {"x": 1}, "label": 1}]}, ["body", "labels", 0, "id"]),
        ({"labels": []}, ["body", "labels"]),
        ({"records": []}, ["body", "labels"]),
        ({"labels": [{"id": "a", "label": 1}], "extra": 1}, ["body", "extra"]),
    ]
    for body, loc in shapes:
        response = client.post("/labels/breast_cancer", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"][0]["loc"] == loc, body
    assert read_labels("breast_cancer").empty


def test_unknown_use_case_and_mismatched_body(client: TestClient) -> None:
    missing = client.post("/labels/nope", json={"labels": [{"id": "a", "label": 1}]})
    assert missing.status_code == 404 and "unknown use case 'nope'" in missing.json()["detail"][0]["msg"]
    in_body = client.post("/labels", json={"use_case": "nope", "labels": [{"id": "a", "label": 1}]})
    assert in_body.status_code == 422 and in_body.json()["detail"][0]["loc"] == ["body", "use_case"]
    several = client.post("/labels", json={"labels": [{"id": "a", "label": 1}]})
    assert several.status_code == 422 and "serves several use cases" in several.json()["detail"][0]["msg"]
    other = client.post("/labels/bike_sharing", json={"use_case": "breast_cancer", "labels": []})
    assert other.status_code == 422 and "drop one" in other.json()["detail"][0]["msg"]
    json_header = {"content-type": "application/json"}
    assert client.post("/labels/bike_sharing", content=b"{", headers=json_header).status_code == 400
    assert client.post("/labels/bike_sharing", content=b"{").status_code == 415  # no Content-Type (issue 23)
