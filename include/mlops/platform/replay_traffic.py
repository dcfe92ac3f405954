"""Replayed traffic: which rows, at what event time, and how they reach the model.

Rows come from the use case's file source, read as ingestion reads it, each with an
event time from its time column. They reach the model over HTTP to the prediction
service or through batch scoring. Both send each row as it is in the source: integers
as integers, floats as floats, text as text and a missing value as null, as a client of
the service would. Neither drops or fills anything: a row the service refuses is
counted as failed, by reason, so a replay shows what production traffic would meet.

A store-backed use case (`feature_store:`) is replayed as its clients call it: each row
carries its entity keys, derived as training and batch scoring derive them (bike_sharing_store's
`hour` from the date at `hr`), and is sent at that hour with the keys and the request-time
features only; the store's features (the weather) are never sent, the service reads them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import UseCase


def _event_times(times: pd.Series) -> pd.Series:
    """A row's event time: its time column when that carries a time of day, else its day spread over 24 h.

    A date-only column (one row per hour of a day, say) has no time of day to send, so the
    rows of each day are spread evenly over it in source order: a day of 24 rows lands on
    the hours, a day of 48 on the half hours.
    """
    import pandas as pd

    days = times.dt.normalize()
    if (times != days).any():
        return times
    position = times.groupby(days).cumcount()
    size = times.groupby(days).transform("size")
    return days + pd.to_timedelta(position * (86400 / size), unit="s")


def load_replay_rows(use_case: UseCase, start: date, end: date) -> pd.DataFrame:
    """Rows of the use case's file source with event time in [start, end), oldest first.

    Adds `event_time` (see `_event_times`) and a stable `request_id`. Rows whose time is
    missing or not a date fall on no day and are not replayed.
    """
    import pandas as pd

    frame = _source_with_times(use_case)
    days = frame["event_time"].dt.normalize()
    frame = frame[(days >= pd.Timestamp(start)) & (days < pd.Timestamp(end))]
    frame = frame.sort_values("event_time", kind="stable").reset_index(drop=True)
    frame["request_id"] = [f"{use_case.name}-{t:%Y%m%dT%H%M%S}-{i}" for i, t in enumerate(frame["event_time"])]
    return frame


def _source_with_times(use_case: UseCase) -> pd.DataFrame:
    """The whole file source, read as ingestion reads it, with `event_time` on every dated row."""
    import pandas as pd

    from mlops.data.ingestion import load_source

    if use_case.source_path is None or use_case.time_column is None:
        raise ValueError(
            f"use case {use_case.name} cannot be replayed: replay needs a file source and a time_column "
            f"in configs/{use_case.name}.yaml"
        )
    frame = load_source(use_case)
    if use_case.feature_store is not None:
        return _with_entity_keys(use_case, frame)
    # Naive times are kept as they are; times with an offset or zone become UTC, like the service's.
    times = pd.to_datetime(frame[use_case.time_column], errors="coerce", utc=True).dt.tz_localize(None)
    frame = frame[times.notna()].copy()
    frame["event_time"] = _event_times(times[times.notna()])
    return frame


def _with_entity_keys(use_case: UseCase, frame: pd.DataFrame) -> pd.DataFrame:
    """A store-backed use case's dated rows, each with its entity keys and its event time, both as training and
    batch scoring derive them (`mlops.data.store_features`): the time column at `hour_column`'s hour, UTC.

    The event time is the hour itself, not a spread over the day: the online store is asked for that hour,
    and the skew check looks the same key up in the offline store as of the event time.
    """
    from mlops.data.store_features import entity_frame, event_times

    section = use_case.feature_store
    assert section is not None and use_case.time_column is not None
    frame = frame[frame[use_case.time_column].notna()].reset_index(drop=True)
    times = event_times(use_case, frame)
    entity = entity_frame(use_case, frame, times)
    for key in section.entity_keys:
        frame[key] = entity[key].to_numpy()
    frame["event_time"] = times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    return frame


def newest_day(use_case: UseCase) -> date:
    """The day of the source's newest row."""
    frame = _source_with_times(use_case)
    if frame.empty:
        raise ValueError(f"use case {use_case.name} has no dated rows in its source to replay")
    newest: date = frame["event_time"].max().date()
    return newest


@dataclass
class Sent:
    """What sending one simulated day cost."""

    failed: Counter[str] = field(default_factory=Counter)
    """Rows that got no prediction, by reason (`HTTP 422`, `connection error`, `no champion`)."""
    answered: Counter[str] = field(default_factory=Counter)
    """Rows answered by each model version."""
    error: str | None = None
    """The last failure's message, for the progress line."""

    @property
    def failed_rows(self) -> int:
        return sum(self.failed.values())


def json_value(value: Any) -> Any:
    """A frame cell as the JSON value a client sends: null for missing, Python scalars for numpy ones."""
    import numpy as np
    import pandas as pd

    if not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value):
        return None  # None, NaN, NaT and pd.NA alike
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, date):  # datetimes and pandas Timestamps too
        return value.isoformat()
    return value


def json_records(rows: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The rows' `columns` as JSON-ready records, each value as it is in the frame."""
    return [
        {name: json_value(value) for name, value in zip(columns, values, strict=True)}
        for values in rows[list(columns)].itertuples(index=False, name=None)
    ]


class HttpSender:
    """Posts each day's rows to `POST /predict/<use case>`, `rows_per_request` at a time."""

    def __init__(self, use_case: UseCase, url: str, rows_per_request: int, timeout: float) -> None:
        import httpx

        if rows_per_request < 1:
            raise ValueError(f"rows_per_request must be at least 1, got {rows_per_request}")
        self.use_case = use_case
        self.url = url.rstrip("/")
        self.rows_per_request = rows_per_request
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        try:
            ready = self.client.get("/ready")
        except httpx.HTTPError as exc:
            self.client.close()
            raise ConnectionError(
                f"the prediction service at {self.url} is not reachable ({exc}); start it with "
                "`python -m mlops.serving` or pass --url / --via batch"
            ) from exc
        # Only this use case's champion matters; the service picks a new one up on its next
        # alias poll, so give it a little time right after a first promotion.
        deadline = time.monotonic() + 90
        while use_case.name in (ready.json().get("missing") or []) and time.monotonic() < deadline:
            time.sleep(2)
            ready = self.client.get("/ready")
        if use_case.name in (ready.json().get("missing") or []):
            self.client.close()
            raise ConnectionError(f"the prediction service at {self.url} is not ready: {ready.text[:300]}")

    def send(self, rows: pd.DataFrame) -> Sent:
        import httpx

        sent = Sent()
        for begin in range(0, len(rows), self.rows_per_request):
            chunk = rows.iloc[begin : begin + self.rows_per_request]
            body = {
                "records": json_records(chunk, self.use_case.client_fields),
                "ids": chunk["request_id"].tolist(),
                "event_times": [t.isoformat() for t in chunk["event_time"]],
                "source": "replay",
            }
            try:
                response = self.client.post(f"/predict/{self.use_case.name}", json=body)
            except httpx.HTTPError as exc:
                sent.failed["connection error"] += len(chunk)
                sent.error = str(exc)
                continue
            if response.status_code != 200:
                sent.failed[f"HTTP {response.status_code}"] += len(chunk)
                sent.error = f"HTTP {response.status_code}: {response.text[:300]}"
                continue
            sent.answered[str(response.json()["model_version"])] += len(chunk)
        return sent

    def close(self) -> None:
        self.client.close()


class BatchSender:
    """Scores each day as batch partition `replay-<date>` of the prediction log (a re-run replaces it)."""

    def __init__(self, use_case: UseCase, log_uri: str | None, tracking_uri: str | None) -> None:
        from mlops.serving.models import ModelCache

        self.use_case = use_case
        self.log_uri = log_uri
        # The cache follows @champion, so a promotion during the replay takes effect the next day.
        self.cache = ModelCache([use_case], tracking_uri=tracking_uri)

    def send(self, rows: pd.DataFrame) -> Sent:
        from mlops.serving.batch import score_partition

        self.cache.refresh()
        model = self.cache.get(self.use_case.name)
        if model is None:
            error = self.cache.status()["errors"].get(self.use_case.name, "no champion")
            return Sent(failed=Counter({"no champion": len(rows)}), error=str(error))
        day = rows["event_time"].iloc[0].strftime("%Y-%m-%d")
        if self.use_case.feature_store is not None:
            # As over HTTP, the store's features are not the client's: batch scoring joins them from the store.
            rows = rows.drop(columns=[c for c in self.use_case.feature_store.feature_names if c in rows.columns])
        result = score_partition(
            self.use_case,
            f"replay-{day}",
            rows,
            ids=rows["request_id"].tolist(),
            event_times=rows["event_time"].tolist(),
            source="replay",
            log_uri=self.log_uri,
            model=model,
        )
        return Sent(answered=Counter({result.model_version: result.rows}))

    def close(self) -> None:
        pass
