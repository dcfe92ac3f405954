"""Hourly weather for bike_sharing, keyed by the hour it was observed in.

The source path is a parameter: the offline Parquet lives under MLOPS_HOME, which the
wrapper (include/mlops/features/store.py) resolves at run time.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, String

HOUR_KEY = "hour"
EVENT_TIMESTAMP = "event_timestamp"
WEATHER_VIEW = "weather_hourly"
WEATHER_FEATURES = ("temp", "atemp", "hum", "windspeed", "weathersit")


def definitions(offline_dir: Path) -> list[Any]:
    """The entity and feature views, their offline source under `offline_dir`."""
    hour = Entity(
        name=HOUR_KEY,
        join_keys=[HOUR_KEY],
        value_type=ValueType.STRING,
        description="The hour, as 'YYYY-MM-DDTHH' (UTC).",
    )
    source = FileSource(
        name=f"{WEATHER_VIEW}_source",
        path=str(offline_dir / f"{WEATHER_VIEW}.parquet"),
        timestamp_field=EVENT_TIMESTAMP,
    )
    weather = FeatureView(
        name=WEATHER_VIEW,
        entities=[hour],
        # An observation is valid for the hour it describes and a little after (late rows).
        ttl=timedelta(hours=2),
        schema=[
            Field(name="temp", dtype=Float64),
            Field(name="atemp", dtype=Float64),
            Field(name="hum", dtype=Float64),
            Field(name="windspeed", dtype=Float64),
            Field(name="weathersit", dtype=String),
        ],
        source=source,
        online=True,
        tags={"use_case": "bike_sharing"},
    )
    return [hour, weather]
