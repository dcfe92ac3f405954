"""The feature store's scale-out deployment, natively: Feast's SQL registry and offline store on PostgreSQL,
its online store on Redis, chosen by MLOPS_FEATURE_POSTGRES_URL and MLOPS_FEATURE_REDIS_URL as
docker-compose.yaml sets them.

The project's own definitions and feature pipeline (features/): apply, ingest into a PostgreSQL table,
materialize into Redis (incrementally), a point-in-time historical join checked against pandas
`merge_asof` on the same table, the training snapshot's join, and an online read through the prediction
service over HTTP. The module's database (its own name) is dropped and its Redis keys (its own Feast
project, which ends every key, in its own database number) deleted at the end, and its teardown checks
that nothing is left.

Needs PostgreSQL (trust auth, user postgres) and Redis on 127.0.0.1 and the `production` extra (feast's
redis and postgres extras; `./run` syncs it); without them the module skips with a WARNING, which the
run's closing line refuses unless MLOPS_ALLOW_SKIP names `celery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pandas as pd
import pytest
import yaml
from polling import wait_until
from test_serving import PROJECT_ROOT, Service, bike_frame, register, start_service

from mlops.predictionlog.predictions import read_predictions

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = 9
"""A database number of its own: the Celery test's broker keys are in 0."""
WEATHER = ["temp", "atemp", "hum", "windspeed", "weathersit"]
CALENDAR = ["season", "hr", "holiday", "weekday", "workingday"]
MATERIALIZED_UNTIL = pd.Timestamp("2011-09-01", tz="UTC")


def _skip(request: pytest.FixtureRequest, reason: str) -> NoReturn:
    # Straight to the terminal, past output capture: a skipped scale-out proof must not pass unnoticed.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\nWARNING: tests/integration/test_feature_store_scaleout.py skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


@dataclass
class Scaleout:
    repo: Any  # mlops.features.store.FeatureRepo
    env: dict[str, str]
    database: str
    admin: Any
    redis: Any
    offline: pd.DataFrame
    """The weather table as the feature pipeline wrote it (read back from PostgreSQL)."""

    def online_keys(self) -> list[bytes]:
        # Feast ends each online key with the project's name.
        return list(self.redis.scan_iter(match=f"*{self.repo.project}", count=1000))


@pytest.fixture(scope="module")
def scaleout(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scaleout]:
    try:
        import psycopg2
        import redis

        from mlops.features import store
    except ImportError as exc:
        _skip(request, f"{exc}; install the production extra: `uv sync --frozen --extra production`")
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5)
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=5)
        client.ping()
    except Exception as exc:
        _skip(request, f"PostgreSQL or Redis not reachable on 127.0.0.1 ({exc}); start them")
    admin.autocommit = True
    token = uuid.uuid4().hex[:8]
    database, project = f"mlops_features_{token}", f"mlops_test_{token}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    env = {
        "MLOPS_FEATURE_POSTGRES_URL": f"{PG}/{database}",
        "MLOPS_FEATURE_REDIS_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        "MLOPS_FEATURE_PROJECT": project,
    }
    repo = store.FeatureRepo(
        definitions_dir=PROJECT_ROOT / "features",
        home=tmp_path_factory.mktemp("features-home") / "features",
        redis_url=env["MLOPS_FEATURE_REDIS_URL"],
        postgres_url=env["MLOPS_FEATURE_POSTGRES_URL"],
        project=project,
    )
    setup = Scaleout(repo, env, database, admin, client, pd.DataFrame())
    try:
        yield setup
    finally:
        keys = setup.online_keys()
        if keys:
            client.delete(*keys)
        store.dispose_engines()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (database,))
            left = cur.fetchone()[0]
        admin.close()
        assert (left, setup.online_keys()) == (0, []), "the module's database or Redis keys are left behind"


def test_apply_and_ingest_write_the_registry_and_the_offline_table_in_postgres(scaleout: Scaleout) -> None:
    from mlops.features import store

    repo = scaleout.repo
    assert not store.registry_written(repo)  # the self-check reports a fresh stack's store as not applied yet
    assert store.apply_definitions(repo) == ["weather_hourly"]
    assert store.registry_written(repo) and store.stale_definitions(repo) == []
    written = store.ingest_offline(repo, PROJECT_ROOT)
    version = store.offline_version(repo, "weather_hourly")
    # A re-run writes the same table: the same version.
    assert store.ingest_offline(repo, PROJECT_ROOT) == written
    assert store.offline_version(repo, "weather_hourly") == version
    with scaleout.admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (scaleout.database,))
        assert cur.fetchone() is not None
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{scaleout.database}")
    try:
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
            scaleout.offline = pd.read_sql_table("weather_hourly", conn)
    finally:
        engine.dispose()
    # Feast's SQL registry and the view's offline table, nothing on disk.
    assert {"feature_views", "entities", "weather_hourly"} <= tables, tables
    assert not (repo.home / "registry.db").exists() and not list(repo.offline_dir.glob("*.parquet"))
    assert len(scaleout.offline) == written["weather_hourly"] > 8000
    assert str(scaleout.offline["event_timestamp"].dt.tz) == "UTC"


def test_the_point_in_time_join_matches_merge_asof_and_never_sees_the_future(scaleout: Scaleout) -> None:
    from mlops.features import store

    offline = scaleout.offline.sort_values("event_timestamp")
    # A year's sample of hours, each asked for half an hour into the hour and five minutes before it starts.
    hours = offline[offline["event_timestamp"].dt.year == 2011].sample(300, random_state=7)
    entity = pd.concat(
        [
            pd.DataFrame({"hour": hours["hour"], "event_timestamp": hours["event_timestamp"] + pd.Timedelta("30min")}),
            pd.DataFrame({"hour": hours["hour"], "event_timestamp": hours["event_timestamp"] - pd.Timedelta("5min")}),
        ],
        ignore_index=True,
    )
    entity["row"] = range(len(entity))
    joined = store.historical_features(scaleout.repo, entity, [f"weather_hourly:{f}" for f in WEATHER])
    got = joined.set_index("row").reindex(range(len(entity)))
    expected = pd.merge_asof(
        entity.sort_values("event_timestamp"), offline[["hour", "event_timestamp", *WEATHER]],
        on="event_timestamp", by="hour", tolerance=pd.Timedelta(hours=2), direction="backward",
    ).set_index("row").reindex(range(len(entity)))  # fmt: skip
    pd.testing.assert_series_equal(got["temp"], expected["temp"], check_names=False)
    assert _text(got["weathersit"]) == _text(expected["weathersit"])
    # Five minutes before an hour is observed, its key has no value yet: never the later one.
    before = (entity["row"] >= len(hours)).to_numpy()
    assert got.loc[before, WEATHER].isna().all().all()
    assert got.loc[~before, "temp"].notna().all()


def test_a_training_snapshot_joins_its_weather_from_postgres(scaleout: Scaleout) -> None:
    from mlops.config import load_use_case
    from mlops.data.store_features import join_store_features
    from mlops.features import store

    use_case = load_use_case(_store_backed_config(Path(scaleout.repo.home).parent / "configs"))
    frame = bike_frame("2011-05-01", "2011-05-08")
    without_weather = frame.drop(columns=["temp", "atemp", "hum", "windspeed"])
    out, joined = join_store_features(use_case, without_weather, scaleout.repo)
    assert joined.rows == len(frame) and joined.rows_without_features == 0
    assert joined.views["weather_hourly"] == store.offline_version(scaleout.repo, "weather_hourly")
    assert out["temp"].tolist() == pytest.approx(frame["temp"].tolist())
    assert _text(out["weathersit"]) == _text(frame["weathersit"])


def test_materialize_loads_redis_once_and_the_service_reads_it(scaleout: Scaleout, mlflow_server: str) -> None:
    from mlops.config import load_use_case
    from mlops.features import store
    from mlops.training.candidates import build_pipeline, expand_candidates

    repo = scaleout.repo
    assert store.materialize(repo, MATERIALIZED_UNTIL.to_pydatetime()) == ["weather_hourly"]
    keys = scaleout.online_keys()
    loaded = scaleout.offline[scaleout.offline["event_timestamp"] <= MATERIALIZED_UNTIL]  # the end is included
    assert len(keys) == loaded["hour"].nunique()
    # A re-run up to the same end writes nothing twice.
    assert store.materialize(repo, MATERIALIZED_UNTIL.to_pydatetime()) == ["weather_hourly"]
    assert len(scaleout.online_keys()) == len(keys)

    configs = Path(repo.home).parent / "configs"
    use_case = load_use_case(_store_backed_config(configs))
    frame = bike_frame()
    features = frame[use_case.features.all]
    pipeline = build_pipeline(use_case, expand_candidates(use_case)[0]).fit(features, frame["cnt"])
    register(use_case.model_name, pipeline, features)
    root = Path(repo.home).parent
    service: Service = start_service(
        root, configs, root / "log", "--use-case", "bike_sharing", "--log-flush-seconds", "0.2",
        env={"MLOPS_HOME": str(root / "home"), **scaleout.env},
    )  # fmt: skip
    try:
        raw = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
        row = raw[(raw["dteday"] == "2011-07-15") & (raw["hr"] == "2pm")].iloc[0]
        request_id = f"fs-scaleout-{uuid.uuid4().hex[:6]}"
        body = {"record": {"hour": "2011-07-15T14", **{c: row[c] for c in CALENDAR}},
                "id": request_id, "event_time": "2011-07-15T14:00:00"}  # fmt: skip
        response = httpx.post(f"{service.url}/predict/bike_sharing", json=body, timeout=30)
        assert response.status_code == 200, response.text
        full = pd.DataFrame([{**{c: row[c] for c in CALENDAR}, **{w: row[w] for w in WEATHER}}])
        expected = pipeline.predict(full[list(pipeline.feature_names_in_)])
        assert response.json()["predictions"] == pytest.approx(list(expected), rel=1e-9)

        def logged() -> pd.DataFrame:
            frame = read_predictions("bike_sharing", "2011-07-01", "2011-08-01", uri=str(service.log_dir))
            return frame[frame["request_id"] == request_id]

        wait_until(lambda: len(logged()) == 1, what="the row in the log")
        assert logged()["temp"].tolist() == [row["temp"]] and logged()["weathersit"].tolist() == [row["weathersit"]]
        health = httpx.get(f"{service.url}/health", timeout=30).json()
        assert health["feature_store"]["bike_sharing"]["failing"] is False
    finally:
        service.stop()


def test_an_unreachable_redis_is_a_store_error_not_a_guess(scaleout: Scaleout) -> None:
    import socket

    from mlops.features import store

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = store.FeatureRepo(
        definitions_dir=scaleout.repo.definitions_dir, home=scaleout.repo.home, project=scaleout.repo.project,
        postgres_url=scaleout.repo.postgres_url, redis_url=f"redis://127.0.0.1:{closed_port}/{REDIS_DB}",
    )  # fmt: skip
    reader = store.OnlineReader(down, ["weather_hourly:temp"])
    with pytest.raises(store.FeatureStoreError, match="online store unavailable"):
        reader.read([{"hour": "2011-07-15T14"}])
    # The service's path: the async read of a micro-batch.
    with pytest.raises(store.FeatureStoreError, match="online store unavailable"):
        asyncio.run(reader.read_async([{"hour": "2011-07-15T14"}]))


def test_one_async_read_from_redis_serves_every_entity_row(scaleout: Scaleout) -> None:
    from mlops.features import store

    reader = store.OnlineReader(scaleout.repo, [f"weather_hourly:{f}" for f in WEATHER])
    hours = ["2011-07-15T14", "2011-03-01T08", "2011-07-15T14", "1999-01-01T00"]
    got = asyncio.run(reader.read_async([{"hour": hour} for hour in hours]))
    assert reader._direct  # Feast's hashes read with one HMGET per key, not get_online_features
    assert got == [{k: v for k, v in row.items() if k != "hour"} for row in reader.read([{"hour": h} for h in hours])]
    offline = scaleout.offline.set_index("hour")
    for hour, row in zip(hours[:3], got[:3], strict=True):
        assert (row["temp"], row["weathersit"]) == (offline.loc[hour, "temp"], offline.loc[hour, "weathersit"])
    assert all(got[3][name] is None for name in WEATHER)  # not in the store: nulls, for the missing-value policy
    assert reader.reads == 1


def _text(values: pd.Series) -> list[Any]:
    """Text values with every missing one as None (Feast gives None, pandas NaN)."""
    return values.astype(object).where(values.notna(), None).tolist()


def _store_backed_config(configs: Path) -> Path:
    """bike_sharing with its weather from the store (a model name of its own), written to `configs`."""
    configs.mkdir(exist_ok=True)
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "bike_sharing.yaml").read_text())
    raw["model_name"] = f"bike_scaleout_{uuid.uuid4().hex[:8]}"
    raw["feature_store"] = {"entity_keys": ["hour"], "features": [f"weather_hourly:{f}" for f in WEATHER],
                            "request_features": CALENDAR, "hour_column": "hr"}  # fmt: skip
    path = configs / "bike_sharing.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
