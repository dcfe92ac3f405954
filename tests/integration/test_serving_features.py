"""A store-backed use case served over HTTP: the client sends the hour and the calendar, the service reads the
weather from the Feast online store, predicts and logs the values it used; bad keys are 422s, an unknown hour is
imputed (or refused under `serving.missing: refuse`), and an unreachable store is a 503 with `/health` degraded.

bike_sharing with a `feature_store` section, its own model name, a champion built with the platform's own
pipeline (median impute: an unknown hour's nulls are answerable), and a store under the service's MLOPS_HOME,
loaded by the project's own feature pipeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from polling import wait_until
from test_serving import PROJECT_ROOT, Service, bike_frame, register, start_service

from mlops.features.keys import hour_of_day
from mlops.predictionlog.predictions import read_predictions

pytestmark = pytest.mark.integration

WEATHER = ["temp", "atemp", "hum", "windspeed", "weathersit"]
CALENDAR = ["season", "hr", "holiday", "weekday", "workingday"]


@dataclass
class Setup:
    service: Service
    home: Path
    pipeline: Any
    raw: pd.DataFrame
    use_case: Any


@pytest.fixture(scope="module")
def setup(mlflow_server: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    from mlops.config import load_use_case
    from mlops.features import store
    from mlops.training.candidates import build_pipeline, expand_candidates

    root = tmp_path_factory.mktemp("features")
    home = root / "home"
    repo = store.FeatureRepo(definitions_dir=PROJECT_ROOT / "features", home=home / "features")
    store.apply_definitions(repo)
    store.ingest_offline(repo, PROJECT_ROOT)
    store.materialize(repo, pd.Timestamp("2011-09-01", tz="UTC").to_pydatetime())

    configs = root / "configs"
    configs.mkdir()
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "bike_sharing.yaml").read_text())
    raw["model_name"] = f"bike_features_{uuid.uuid4().hex[:8]}"
    raw["feature_store"] = {"entity_keys": ["hour"], "features": [f"weather_hourly:{f}" for f in WEATHER],
                            "request_features": CALENDAR, "hour_column": "hr"}  # fmt: skip
    (configs / "bike_sharing.yaml").write_text(yaml.safe_dump(raw))
    use_case = load_use_case(configs / "bike_sharing.yaml")
    frame = bike_frame()
    features = frame[use_case.features.all]
    pipeline = build_pipeline(use_case, expand_candidates(use_case)[0]).fit(features, frame["cnt"])
    register(use_case.model_name, pipeline, features)
    service = start_service(root, configs, root / "log", "--use-case", "bike_sharing", "--log-flush-seconds", "0.2",
                            env={"MLOPS_HOME": str(home)})  # fmt: skip
    try:
        raw_rows = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
        yield Setup(service, home, pipeline, raw_rows, use_case)
    finally:
        service.stop()


def _row(setup: Setup, day: str, hour: str) -> pd.Series:
    raw = setup.raw
    return raw[(raw["dteday"] == day) & (raw["hr"] == hour)].iloc[0]


def _calendar(row: pd.Series) -> dict[str, Any]:
    return {name: row[name] for name in CALENDAR}


def _post(setup: Setup, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{setup.service.url}/predict/bike_sharing", json=body, timeout=30)


def test_the_weather_comes_from_the_store_and_is_logged_with_the_prediction(setup: Setup) -> None:
    hours = [("2011-05-02", "8am", "2011-05-02T08"), ("2011-07-15", "2pm", "2011-07-15T14")]
    rows = [_row(setup, day, hour) for day, hour, _ in hours]
    ids = [f"fs-{uuid.uuid4().hex[:6]}-{i}" for i in range(len(rows))]
    body = {"records": [{"hour": key, **_calendar(row)} for (_, _, key), row in zip(hours, rows, strict=True)],
            "ids": ids, "event_times": ["2011-05-02T08:00:00", "2011-07-15T14:00:00"]}  # fmt: skip
    response = _post(setup, body)
    assert response.status_code == 200, response.text
    # The same answer as the pipeline on the full rows, the weather as observed: the store's values were used.
    full = pd.DataFrame([{**_calendar(r), **{w: r[w] for w in WEATHER}} for r in rows])
    expected = setup.pipeline.predict(full[list(setup.pipeline.feature_names_in_)])
    assert response.json()["predictions"] == pytest.approx(list(expected), rel=1e-9)

    def logged() -> pd.DataFrame:
        frame = read_predictions("bike_sharing", "2011-05-01", "2011-08-01", uri=str(setup.service.log_dir))
        return frame[frame["request_id"].isin(ids)]

    wait_until(lambda: len(logged()) == len(ids), what="the rows in the log")
    frame = logged().set_index("request_id").loc[ids]
    assert frame["hour"].tolist() == [key for _, _, key in hours]  # the entity keys, for the skew check
    assert frame["temp"].tolist() == [r["temp"] for r in rows] and frame["weathersit"].tolist() == [
        r["weathersit"] for r in rows
    ]


@pytest.mark.parametrize(
    ("record", "loc", "kind"),
    [
        ({"hour": 2011050208}, ["body", "record", "hour"], "entity_key"),
        ({}, ["body", "record", "hour"], "entity_key"),
        ({"hour": "2011-05-02T08", "temp": 20.0}, ["body", "record", "temp"], "extra_forbidden"),
    ],
    ids=["key-not-a-string", "key-missing", "store-feature-sent"],
)
def test_bad_entity_keys_are_422s_naming_the_field(
    setup: Setup, record: dict[str, Any], loc: list[str], kind: str
) -> None:
    response = _post(setup, {"record": {**record, **_calendar(_row(setup, "2011-05-02", "8am"))}})
    assert response.status_code == 422, response.text
    assert [(d["loc"], d["type"]) for d in response.json()["detail"]] == [(loc, kind)]


def test_an_unknown_hour_is_imputed_under_the_missing_value_policy(setup: Setup) -> None:
    response = _post(setup, {"record": {"hour": "1999-01-01T00", **_calendar(_row(setup, "2011-05-02", "8am"))}})
    assert response.status_code == 200, response.text
    health = httpx.get(f"{setup.service.url}/health").json()
    assert health["feature_store"]["bike_sharing"]["unknown_entities"] >= 1


def test_an_unreachable_online_store_is_a_503_and_degrades_health_until_it_is_back(setup: Setup) -> None:
    online = setup.home / "features" / "online.db"
    original = online.read_bytes()
    # Overwritten in place (the service holds the file open): SQLite then finds no database there.
    online.write_bytes(b"\0" * len(original))
    body = {"record": {"hour": "2011-05-02T08", **_calendar(_row(setup, "2011-05-02", "8am"))}}
    try:
        response = _post(setup, body)
        assert response.status_code == 503, response.text
        assert "online store unavailable" in response.text and "no prediction without its features" in response.text
        health = httpx.get(f"{setup.service.url}/health").json()
        assert health["status"] == "degraded" and health["feature_store"]["bike_sharing"]["failing"] is True
    finally:
        online.write_bytes(original)
    wait_until(lambda: _post(setup, body).status_code == 200, timeout=30, what="answers once the store is back")
    assert httpx.get(f"{setup.service.url}/health").json()["status"] == "ok"


def test_a_replay_sends_the_hour_and_the_calendar_and_every_row_is_answered_with_the_store_weather(
    setup: Setup, tmp_path: Path
) -> None:
    """`mlops replay` of the store-backed use case over HTTP, as its clients call it: no row refused (a store feature
    sent would be a 422), each logged at its own hour with its key and the store's weather for that hour."""
    from datetime import date

    from mlops.platform.replay import replay
    from mlops.platform.replay_traffic import load_replay_rows

    start, end = "2011-06-06", "2011-06-08"
    lines: list[str] = []
    result = replay(
        setup.use_case, start, end, speed=0, via="http", url=setup.service.url, rows_per_request=10,
        labels_uri=str(tmp_path / "labels"), progress=lines.append,
    )  # fmt: skip
    sent = load_replay_rows(setup.use_case, date.fromisoformat(start), date.fromisoformat(end))
    assert len(sent) == 48
    assert (result.rows, result.failed_rows, result.failures) == (len(sent), 0, {}), lines

    def logged() -> pd.DataFrame:
        frame = read_predictions("bike_sharing", start, end, uri=str(setup.service.log_dir))
        return frame[frame["request_id"].isin(sent["request_id"])]

    wait_until(lambda: len(logged()) == len(sent), what="every replayed row in the log")
    frame = logged().set_index("request_id").loc[sent["request_id"]]
    source = setup.raw.set_index(["dteday", "hr"]).loc[list(zip(sent["dteday"], sent["hr"], strict=True))]
    clock = sent["hr"].str[:-2].astype(int) % 12 + 12 * sent["hr"].str.endswith("pm")
    hours = [f"{day}T{h:02d}" for day, h in zip(sent["dteday"], clock, strict=True)]
    assert frame["hour"].tolist() == hours
    assert frame["event_time"].tolist() == pd.to_datetime(hours, format="%Y-%m-%dT%H").tolist()

    def values(column: pd.Series) -> list[Any]:
        return [None if pd.isna(v) else v for v in column]

    for name in WEATHER:  # the online store's values: the source's observation of that hour (a gap stays a null)
        assert values(frame[name]) == values(source[name]), name
    expected = setup.pipeline.predict(source.reset_index()[list(setup.pipeline.feature_names_in_)])
    assert frame["prediction"].tolist() == pytest.approx(list(expected), rel=1e-9)


def test_concurrent_requests_mixing_known_unknown_and_malformed_keys_each_get_their_own_answer(setup: Setup) -> None:
    import asyncio

    row = _row(setup, "2011-05-02", "8am")
    kinds = {
        "known": {"record": {"hour": "2011-05-02T08", **_calendar(row)}},
        "unknown": {"record": {"hour": "1999-01-01T00", **_calendar(row)}},
        "malformed": {"record": {"hour": 2011050208, **_calendar(row)}},
    }
    asked = list(kinds) * 4  # at once, so that they share micro-batches (and their store reads)

    async def at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=setup.service.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict/bike_sharing", json=kinds[k]) for k in asked))

    responses = asyncio.run(at_once())
    frame = pd.DataFrame(
        [{**_calendar(row), **{w: row[w] for w in WEATHER}}, {**_calendar(row), **dict.fromkeys(WEATHER, float("nan"))}]
    )
    known, imputed = setup.pipeline.predict(frame[list(setup.pipeline.feature_names_in_)])
    for kind, response in zip(asked, responses, strict=True):
        if kind == "malformed":
            assert response.status_code == 422, response.text
            assert [d["loc"] for d in response.json()["detail"]] == [["body", "record", "hour"]]
        else:
            assert response.status_code == 200, response.text
            expected = known if kind == "known" else imputed  # the observed weather, or nulls the pipeline imputes
            assert response.json()["predictions"] == pytest.approx([expected], rel=1e-9)


def test_the_openapi_example_is_answered_with_the_stores_weather_for_its_hour(setup: Setup) -> None:
    """The documented example sends the entity key and the calendar only, for an hour the store holds: answered
    with that hour's observed weather, not as an unknown entity's imputed nulls."""
    url = setup.service.url
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    body = document["paths"]["/predict/bike_sharing"]["post"]["requestBody"]["content"]["application/json"]["example"]
    record = body["records"][0]
    assert not set(WEATHER) & set(record) and set(record) == {"hour", *CALENDAR}
    unknown = httpx.get(f"{url}/health").json()["feature_store"]["bike_sharing"]["unknown_entities"]
    response = _post(setup, {**body, "ids": [f"example-{uuid.uuid4().hex[:8]}"]})
    assert response.status_code == 200, response.text
    assert httpx.get(f"{url}/health").json()["feature_store"]["bike_sharing"]["unknown_entities"] == unknown
    day, clock = record["hour"].split("T")
    observed = setup.raw[setup.raw["dteday"] == day]
    observed = observed[observed["hr"].map(hour_of_day) == int(clock)].iloc[0]
    full = pd.DataFrame([{**{c: record[c] for c in CALENDAR}, **{w: observed[w] for w in WEATHER}}])
    expected = setup.pipeline.predict(full[list(setup.pipeline.feature_names_in_)])
    assert response.json()["predictions"] == pytest.approx(list(expected), rel=1e-9)


def test_mlflows_scoring_protocol_takes_the_hour_and_the_calendar_named_or_in_order(setup: Setup) -> None:
    """`POST /invocations/<use case>` of a store-backed use case: rows with column names, and rows without them in
    the order entity keys then request features (the store's features are not the client's), answered alike."""
    row = _row(setup, "2011-07-15", "2pm")
    values = ["2011-07-15T14", *(_calendar(row)[c] for c in CALENDAR)]
    full = pd.DataFrame([{**_calendar(row), **{w: row[w] for w in WEATHER}}])
    expected = list(setup.pipeline.predict(full[list(setup.pipeline.feature_names_in_)]))
    url = f"{setup.service.url}/invocations/bike_sharing"
    for body in (
        {"dataframe_split": {"columns": ["hour", *CALENDAR], "data": [values]}},
        {"instances": [values]},
    ):
        response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pytest.approx(expected, rel=1e-9)
    short = httpx.post(url, json={"instances": [values[:-1]]}, timeout=30)
    assert short.status_code == 400 and "['hour', 'season', 'hr', 'holiday', 'weekday', 'workingday']" in short.text
