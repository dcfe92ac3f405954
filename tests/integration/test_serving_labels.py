"""`POST /labels` on a real prediction service (a subprocess, real HTTP, real MLflow registry).

Predictions go in through `/predict`, labels through `/labels`; both are read back
from the stores the service wrote, joined by `read_predictions(..., with_labels=True)`.
A label sent before its prediction is logged is reported unknown and joins once it is.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from polling import wait_until
from test_serving import Service, bike_record, register, regressor, start_service, write_configs

from mlops.predictionlog.predictions import read_predictions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(mlflow_server: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("serving-labels")
    names = write_configs(root / "configs", uuid.uuid4().hex[:8])
    pipeline, features = regressor(root / "configs" / "bike_sharing.yaml")
    register(names["bike_sharing"], pipeline, features)
    # Only bike_sharing: POST /labels without a use case then needs none in the body.
    running = start_service(root, root / "configs", root / "log", "--use-case", "bike_sharing",
                            "--log-flush-seconds", "0.2")  # fmt: skip
    try:
        yield running, features
    finally:
        running.stop()


def _labels(service: Service, ids: list[str]) -> dict[str, Any]:
    frame = read_predictions("bike_sharing", "2011-05-01", "2011-05-03", with_labels=True, uri=str(service.log_dir))
    frame = frame[frame["request_id"].isin(ids)]
    return dict(zip(frame["request_id"], frame["label"], strict=True))


def test_labels_over_http_join_replace_and_wait_for_their_prediction(service: Any) -> None:
    running, features = service
    tag = uuid.uuid4().hex[:6]
    ids = [f"{tag}-{i}" for i in range(3)]
    early = f"{tag}-early"

    # A label that beats its prediction: kept, reported, joined later.
    first = httpx.post(f"{running.url}/labels", json={"labels": [{"id": early, "label": 9}]})
    assert first.status_code == 200, first.text
    assert first.json() == {"use_case": "bike_sharing", "written": 1, "replaced": 0, "unknown_ids": [early]}

    records = [bike_record(features, i) for i in range(4)]
    times = ["2011-05-01T08:00:00", "2011-05-01T09:00:00", "2011-05-02T10:00:00", "2011-05-02T11:00:00"]
    answer = httpx.post(
        f"{running.url}/predict/bike_sharing", json={"records": records, "ids": [*ids, early], "event_times": times}
    )
    assert answer.status_code == 200, answer.text
    wait_until(lambda: len(_labels(running, [*ids, early])) == 4, what="the predictions in the log")
    assert _labels(running, [early]) == {early: 9.0}

    body = {"labels": [{"id": ids[0], "label": 40}, {"id": ids[1], "label": 41.5, "event_time": "2011-05-09T00:00:00"}]}
    sent = httpx.post(f"{running.url}/labels/bike_sharing", json=body)
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"use_case": "bike_sharing", "written": 2, "replaced": 0, "unknown_ids": []}
    resent = httpx.post(f"{running.url}/labels/bike_sharing", json={"labels": [{"id": ids[0], "label": 42}]})
    assert resent.json() == {"use_case": "bike_sharing", "written": 1, "replaced": 1, "unknown_ids": []}

    joined = _labels(running, [*ids, early])
    assert joined[ids[0]] == 42.0 and joined[ids[1]] == 41.5 and math.isnan(joined[ids[2]]) and joined[early] == 9.0
    frame = read_predictions("bike_sharing", "2011-05-01", "2011-05-03", with_labels=True, uri=str(running.log_dir))
    arrived = frame.set_index("request_id")["label_arrived_at"]
    assert pd.notna(arrived[ids[0]]) and pd.isna(arrived[ids[2]])

    refused = httpx.post(
        f"{running.url}/labels/bike_sharing",
        json={"labels": [{"id": ids[2], "label": 1}, {"id": ids[2], "label": "a lot", "event_time": "2011-05-01"}]},
    )
    assert refused.status_code == 422, refused.text
    locs = [d["loc"] for d in refused.json()["detail"]]
    assert ["body", "labels", 1, "id"] in locs and ["body", "labels", 1, "label"] in locs
    assert ["body", "labels", 1, "event_time"] in locs  # 2011-05-01T00:00 is before its prediction at 10:00
    assert math.isnan(_labels(running, [ids[2]])[ids[2]])  # nothing of the refused batch was written
    assert httpx.post(f"{running.url}/labels/nope", json={"labels": [{"id": "a", "label": 1}]}).status_code == 404
