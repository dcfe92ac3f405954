"""Entity keys and timestamps for hourly data, without Feast."""

from __future__ import annotations

import pandas as pd


def hour_of_day(label: str | int) -> int:
    """'12am' -> 0, '1pm' -> 13, 7 -> 7: the bike_sharing `hr` column as an hour."""
    if isinstance(label, int):
        return label
    text = str(label).strip().lower()
    if text.isdigit():
        return int(text)
    number, half = int(text[:-2]), text[-2:]
    if half not in {"am", "pm"} or not 1 <= number <= 12:
        raise ValueError(f"hour {label!r} is neither 0-23 nor like '12am' / '1pm'")
    return number % 12 + (12 if half == "pm" else 0)


def hour_timestamps(days: pd.Series, hours: pd.Series) -> pd.Series:
    """UTC timestamps of the start of each (day, hour)."""
    base = pd.to_datetime(days, utc=True)
    return base + pd.to_timedelta(hours.map(hour_of_day), unit="h")


def hour_keys(timestamps: pd.Series) -> pd.Series:
    """The `hour` entity key: 'YYYY-MM-DDTHH'."""
    return timestamps.dt.strftime("%Y-%m-%dT%H")
