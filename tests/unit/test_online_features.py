"""A store-backed use case's requests completed inside the prediction micro-batch (serving/online_features.py).

A real SQLite online store (the project's `weather_hourly` view, four hours materialized), the
bike_sharing_store config, a real MicroBatcher and a model that answers from the weather it was given:
each request of one batch gets its own answer, and the batch reads the store once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.config import UseCase, find_use_case
from mlops.features import keys, store
from mlops.serving.microbatch import MicroBatcher
from mlops.serving.models import LoadedModel
from mlops.serving.online_features import OnlineFeatures, StoreRequestError
from mlops.serving.schema import InputSchema, RequestError

ROOT = Path(__file__).resolve().parents[2]
CALENDAR = {"season": "winter", "hr": "1am", "holiday": "No", "weekday": "Sat", "workingday": "No"}
TEMPS = [1.0, 2.0, 3.0, 4.0]  # the store's temp for 2011-01-01T00..03


class WeatherModel:
    """Predicts the temp it was given times ten (-10 for a null, i.e. what an imputer would fill), and records
    the size of every predict call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, frame: pd.DataFrame) -> Any:
        self.calls.append(len(frame))
        return np.where(frame["temp"].isna(), -1.0, frame["temp"]) * 10


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> store.FeatureRepo:
    repo = store.FeatureRepo(definitions_dir=ROOT / "features", home=tmp_path_factory.mktemp("features"))
    store.apply_definitions(repo)
    times = pd.Series(pd.date_range("2011-01-01", periods=4, freq="h", tz="UTC"))
    frame = pd.DataFrame({"hour": keys.hour_keys(times), "event_timestamp": times, "temp": TEMPS, "atemp": 0.0,
                          "hum": 50.0, "windspeed": 0.0, "weathersit": "Clear"})  # fmt: skip
    store.write_offline(repo, "weather_hourly", frame)
    store.materialize(repo, datetime(2011, 1, 2, tzinfo=UTC))
    return repo


def _use_case(missing: str = "impute") -> UseCase:
    use_case = find_use_case("bike_sharing_store", ROOT / "configs")
    return use_case.model_copy(update={"serving": use_case.serving.model_copy(update={"missing": missing})})


def _model(use_case: UseCase) -> LoadedModel:
    schema = InputSchema.from_signature(None, use_case.features.numeric, use_case.features.categorical,
                                        use_case.serving.missing, use_case.name)  # fmt: skip
    return LoadedModel(use_case=use_case.name, model_name="m", version="1", alias="champion", run_id=None,
                       aliases=("champion",), signature=None, schema=schema, model=WeatherModel(),
                       loaded_at=datetime.now(UTC))  # fmt: skip


class _Cache:
    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def get(self, use_case: str) -> LoadedModel | None:
        return self.model


async def _request(online: OnlineFeatures, batcher: MicroBatcher, model: LoadedModel, payload: Any) -> Any:
    """What the predict route does: the keys checked before batching, the rest in the batch."""
    payload, lookup = online.prepare(payload)
    parsed = model.schema.with_store_columns(online.names).parse(payload, 100)
    _, predictions, _ = await batcher.predict(model, parsed.rows, None, lookup)
    return predictions


def _batch(online: OnlineFeatures, model: LoadedModel, payloads: list[Any]) -> list[Any]:
    batcher = MicroBatcher(_Cache(model), model.use_case, window_seconds=0.005)  # type: ignore[arg-type]

    async def together() -> list[Any]:
        return await asyncio.gather(*(_request(online, batcher, model, p) for p in payloads), return_exceptions=True)

    return asyncio.run(together())


def _record(hour: Any) -> dict[str, Any]:
    return {"hour": hour, **CALENDAR}


def test_one_batch_mixing_known_unknown_and_malformed_keys_answers_each_request_on_its_own(
    repo: store.FeatureRepo,
) -> None:
    use_case = _use_case("impute")
    online, model = OnlineFeatures(use_case, repo), _model(use_case)
    got = _batch(online, model, [
        {"record": _record("2011-01-01T01")},
        {"records": [_record("2011-01-01T03"), _record("1999-01-01T00")]},
        {"record": _record(2011010100)},
        {"record": {**_record("2011-01-01T00"), "temp": 9.0}},
    ])  # fmt: skip
    assert got[0] == [20.0]  # the store's temp for 01:00, used
    assert got[1] == [40.0, -10.0]  # an unknown hour: null weather, imputed (impute)
    assert isinstance(got[2], RequestError) and got[2].status == 422
    assert [(d["loc"], d["type"]) for d in got[2].detail] == [(["body", "record", "hour"], "entity_key")]
    assert isinstance(got[3], RequestError) and got[3].status == 422
    assert [(d["loc"], d["type"]) for d in got[3].detail] == [(["body", "record", "temp"], "extra_forbidden")]
    # The two well-formed requests: one store read and one predict call for the three rows.
    assert (online.reader.reads, model.model.calls) == (1, [3])
    assert (online.lookups, online.unknown_entities, online.degraded()) == (2, 1, False)


def test_under_refuse_an_unknown_entity_fails_its_request_only(repo: store.FeatureRepo) -> None:
    use_case = _use_case("refuse")
    online, model = OnlineFeatures(use_case, repo), _model(use_case)
    got = _batch(online, model, [
        {"record": _record("2011-01-01T02")},
        {"records": [_record("2011-01-01T00"), _record("1999-01-01T00")]},
        {"record": _record("2011-01-01T03")},
    ])  # fmt: skip
    assert got[0] == [30.0] and got[2] == [40.0]
    refused = got[1]
    assert isinstance(refused, StoreRequestError) and refused.status == 422
    assert [(d["loc"], d["type"]) for d in refused.detail] == [(["body", "records", 1], "unknown_entity")]
    assert "1999-01-01T00" in refused.detail[0]["msg"]
    assert (online.reader.reads, model.model.calls) == (1, [2])


def test_the_store_down_during_a_batch_is_a_503_for_its_requests_until_it_is_back(
    repo: store.FeatureRepo, tmp_path: Path
) -> None:
    import shutil

    home = tmp_path / "features"
    shutil.copytree(repo.home, home)
    copy = store.FeatureRepo(definitions_dir=repo.definitions_dir, home=home)
    use_case = _use_case("impute")
    online, model = OnlineFeatures(use_case, copy), _model(use_case)
    payloads = [{"record": _record("2011-01-01T01")}, {"record": _record("1999-01-01T00")}]
    assert _batch(online, model, payloads) == [[20.0], [-10.0]]

    original = copy.online_path.read_bytes()
    copy.online_path.write_bytes(b"\0" * len(original))  # in place: what the reader has open is no database now
    got = _batch(online, model, payloads)
    assert all(isinstance(e, StoreRequestError) and e.status == 503 for e in got), got
    assert all("online store unavailable" in e.detail[0]["msg"] for e in got)
    assert online.degraded() and "online store unavailable" in str(online.stats()["last_error"])
    assert model.model.calls == [2]  # nothing predicted without its features, no guessed value

    copy.online_path.write_bytes(original)
    assert _batch(online, model, payloads) == [[20.0], [-10.0]]
    assert not online.degraded()


def test_requests_arriving_during_a_batchs_read_wait_for_it_and_then_share_one_batch(
    repo: store.FeatureRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next batch opens no window while one reads the store (else it would flush, small, right after)."""
    use_case = _use_case("impute")
    online, model = OnlineFeatures(use_case, repo), _model(use_case)
    batcher = MicroBatcher(_Cache(model), model.use_case, window_seconds=0.0)  # type: ignore[arg-type]
    real_read, reads_started = online.reader.read_async, []

    async def scenario() -> list[Any]:
        release = asyncio.Event()

        async def held_read(entity_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            reads_started.append(len(entity_rows))
            await release.wait()  # the store answers only once the later requests have arrived
            return await real_read(entity_rows)

        monkeypatch.setattr(online.reader, "read_async", held_read)

        def ask(hour: str) -> asyncio.Task[Any]:
            return asyncio.create_task(_request(online, batcher, model, {"record": _record(hour)}))

        first = [ask("2011-01-01T01") for _ in range(2)]
        await asyncio.sleep(0.02)
        later = [ask("2011-01-01T02") for _ in range(3)]
        await asyncio.sleep(0.02)
        assert reads_started == [2]  # the later three wait for the batch in flight, without a read of their own
        release.set()
        return list(await asyncio.gather(*first, *later))

    assert asyncio.run(scenario()) == [[20.0]] * 2 + [[30.0]] * 3
    assert reads_started == [2, 3] and model.model.calls == [2, 3]
