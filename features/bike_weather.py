"""Hourly weather for bike_sharing, keyed by the hour it was observed in.

The source path is a parameter: the offline Parquet lives under MLOPS_HOME, which the
wrapper (include/mlops/features/store.py) resolves at run time. `offline_frames` is this
repository's feature pipeline: it reads the weather observations (the bundled UCI hourly
data, where they sit beside the rentals) into the view's offline table; `mlops features
ingest` and the materialize_features DAG run it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, String

WEATHER_SOURCE = Path("data") / "raw" / "bike_sharing_hourly.csv"
"""Relative to the project root: where the weather observations come from."""

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


def offline_frames(project_root: Path) -> dict[str, Any]:
    """`{view: frame}`: the weather observations as the offline table, one row per observed hour."""
    import pandas as pd

    raw = pd.read_csv(project_root / WEATHER_SOURCE)
    observed = pd.to_datetime(raw["dteday"], utc=True) + pd.to_timedelta(raw["hr"].map(_hour_of_day), unit="h")
    frame = pd.DataFrame({HOUR_KEY: observed.dt.strftime("%Y-%m-%dT%H"), EVENT_TIMESTAMP: observed})
    for name in WEATHER_FEATURES:
        frame[name] = raw[name]
    # Text, with a missing observation kept missing (not the string "nan").
    frame["weathersit"] = raw["weathersit"].astype(object).where(raw["weathersit"].notna(), None)
    return {WEATHER_VIEW: frame.drop_duplicates(HOUR_KEY, keep="last").reset_index(drop=True)}


def _hour_of_day(label: Any) -> int:
    """'12am' -> 0, '1pm' -> 13: the bundled data's hour labels (mlops.features.keys does the same for the
    platform; this module is loaded by path and keeps to Feast and pandas)."""
    text = str(label).strip().lower()
    if text.isdigit():
        return int(text)
    return int(text[:-2]) % 12 + (12 if text.endswith("pm") else 0)
