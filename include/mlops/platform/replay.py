"""Production replay: the later rows of the bundled data, sent as live traffic in time order.

The replay walks simulated days from `start` to `end`. Each day's rows go to the
prediction service over HTTP (or through batch scoring), with their ids and event
times, and their true targets are delivered as labels `label_delay` simulated days
later. The bike data drifts with the seasons, so drift and decay show up in
monitoring by themselves. `speed` is simulated days per wall-clock second.

    mlops replay --start 2011-03-01 --end 2011-07-01 --speed 30 --via http
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import UseCase


@dataclass(frozen=True)
class ReplayResult:
    use_case: str
    start: str
    end: str
    via: str
    rows: int
    failed_rows: int
    labels_delivered: int
    labels_pending: int
    """Labels whose delay had not elapsed at `end` and were not delivered."""
    model_versions: dict[str, int] = field(default_factory=dict)
    """Rows answered by each model version."""


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _hour_of(value: Any) -> int | None:
    """Hour from the bike data's `hr` text (`12am` ... `11pm`) or an integer 0-23."""
    if isinstance(value, int | float) and value == value and 0 <= int(value) <= 23:
        return int(value)
    match = re.fullmatch(r"(\d{1,2})\s*(am|pm)", str(value).strip().lower())
    if not match:
        return None
    hour = int(match.group(1)) % 12
    return hour + 12 if match.group(2) == "pm" else hour


def load_replay_rows(use_case: UseCase, start: date, end: date) -> pd.DataFrame:
    """Rows of the use case's file source with event time in [start, end), oldest first.

    Adds `event_time` (the date plus the hour when an `hr` column says it, else
    the rows of a day spread evenly over it) and a stable `request_id`.
    """
    import pandas as pd

    path = use_case.source_path
    if path is None or use_case.time_column is None:
        raise ValueError(
            f"use case {use_case.name} cannot be replayed: replay needs a file source and a time_column in its config"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"replay source {path} does not exist; check source.path in configs/{use_case.name}.yaml"
        )
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    days = pd.to_datetime(frame[use_case.time_column]).dt.normalize()
    frame = frame[(days >= pd.Timestamp(start)) & (days < pd.Timestamp(end))].copy()
    days = days.loc[frame.index]
    hours = frame["hr"].map(_hour_of) if "hr" in frame.columns else None
    if hours is not None and hours.notna().all():
        frame["event_time"] = days + pd.to_timedelta(hours.astype(int), unit="h")
    else:
        position = frame.groupby(days).cumcount()
        size = frame.groupby(days)[use_case.time_column].transform("size")
        frame["event_time"] = days + pd.to_timedelta(position * (86400 / size), unit="s")
    frame = frame.sort_values("event_time", kind="stable").reset_index(drop=True)
    frame["request_id"] = [f"{use_case.name}-{t:%Y%m%dT%H%M%S}-{i}" for i, t in enumerate(frame["event_time"])]
    return frame


def _records(use_case: UseCase, rows: pd.DataFrame) -> list[dict[str, Any]]:
    import pandas as pd

    out = []
    for values in rows[use_case.features.all].itertuples(index=False, name=None):
        record: dict[str, Any] = {}
        for name, value in zip(use_case.features.all, values, strict=True):
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                record[name] = None
            elif name in use_case.features.numeric:
                record[name] = float(value)
            else:
                record[name] = str(value)
        out.append(record)
    return out


class _HttpSender:
    def __init__(self, use_case: UseCase, url: str, rows_per_request: int, timeout: float) -> None:
        import httpx

        self.use_case = use_case
        self.url = url.rstrip("/")
        self.rows_per_request = rows_per_request
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        try:
            ready = self.client.get("/ready")
        except httpx.HTTPError as exc:
            raise ConnectionError(
                f"the prediction service at {self.url} is not reachable ({exc}); start it with "
                "`python -m mlops.serving` or pass --url / via='batch'"
            ) from exc
        # Only this use case's champion matters; the service picks a new one up on its next
        # alias poll, so give it a little time right after a first promotion.
        deadline = time.monotonic() + 90
        while use_case.name in (ready.json().get("missing") or []) and time.monotonic() < deadline:
            time.sleep(2)
            ready = self.client.get("/ready")
        if use_case.name in (ready.json().get("missing") or []):
            raise ConnectionError(f"the prediction service at {self.url} is not ready: {ready.text[:300]}")

    def send(self, rows: pd.DataFrame) -> tuple[int, Counter[str], str | None]:
        import httpx

        failed = 0
        versions: Counter[str] = Counter()
        error = None
        for begin in range(0, len(rows), self.rows_per_request):
            chunk = rows.iloc[begin : begin + self.rows_per_request]
            body = {
                "records": _records(self.use_case, chunk),
                "ids": chunk["request_id"].tolist(),
                "event_times": [t.isoformat() for t in chunk["event_time"]],
                "source": "replay",
            }
            try:
                response = self.client.post(f"/predict/{self.use_case.name}", json=body)
            except httpx.HTTPError as exc:
                failed, error = failed + len(chunk), str(exc)
                continue
            if response.status_code != 200:
                failed, error = failed + len(chunk), f"HTTP {response.status_code}: {response.text[:300]}"
                continue
            versions[str(response.json()["model_version"])] += len(chunk)
        return failed, versions, error

    def close(self) -> None:
        self.client.close()


class _BatchSender:
    def __init__(self, use_case: UseCase, log_uri: str | None, tracking_uri: str | None) -> None:
        from mlops.serving.models import ModelCache

        self.use_case = use_case
        self.log_uri = log_uri
        # The cache follows @champion, so a promotion during the replay takes effect the next day.
        self.cache = ModelCache([use_case], tracking_uri=tracking_uri)

    def send(self, rows: pd.DataFrame) -> tuple[int, Counter[str], str | None]:
        from mlops.serving.batch import score_partition

        self.cache.refresh()
        model = self.cache.get(self.use_case.name)
        if model is None:
            error = self.cache.status()["errors"].get(self.use_case.name, "no champion")
            return len(rows), Counter(), error
        day = rows["event_time"].iloc[0].strftime("%Y-%m-%d")
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
        return 0, Counter({result.model_version: result.rows}), None

    def close(self) -> None:
        pass


def replay(
    use_case: UseCase | str = "bike_sharing",
    start: date | str = "2011-03-01",
    end: date | str = "2011-07-01",
    speed: float = 30.0,
    label_delay: float | timedelta = 1.0,
    via: Literal["http", "batch"] = "http",
    *,
    url: str | None = None,
    rows_per_request: int = 24,
    deliver_remaining_labels: bool = False,
    log_uri: str | None = None,
    labels_uri: str | None = None,
    tracking_uri: str | None = None,
    timeout: float = 30.0,
    progress: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayResult:
    """Replay [start, end) as production traffic; returns what was sent and labelled.

    `speed`: simulated days per second (0 = as fast as possible). `label_delay`:
    simulated days (or a timedelta) between a row's event time and its label's
    arrival. Labels still in flight at `end` are delivered only when
    `deliver_remaining_labels` is set. `via="http"` posts to the service at `url`
    (default the configured serving port); `via="batch"` scores each day as
    partition `replay-<date>` (idempotent: a re-run replaces it).
    """
    from mlops.config import find_use_case

    uc = find_use_case(use_case) if isinstance(use_case, str) else use_case
    first, stop = _as_date(start), _as_date(end)
    if stop <= first:
        raise ValueError(f"end {stop} must be after start {first}")
    if speed < 0:
        raise ValueError("speed is simulated days per second and must be >= 0 (0 = no waiting)")
    delay = label_delay if isinstance(label_delay, timedelta) else timedelta(days=float(label_delay))
    rows = load_replay_rows(uc, first, stop)
    if rows.empty:
        raise ValueError(f"no rows of {uc.name} between {first} and {stop}; the data covers other dates")
    sender = _open_sender(uc, via, url, rows_per_request, timeout, log_uri, tracking_uri)
    labels = _LabelsInFlight(uc, labels_uri)
    failed = 0
    versions: Counter[str] = Counter()
    month = _MonthTally()
    pace = _Pace(first, speed, sleep)
    by_day = dict(tuple(rows.groupby(rows["event_time"].dt.date, sort=True)))
    try:
        day = first
        while day < stop:
            day_rows = by_day.get(day)
            if day_rows is not None and not day_rows.empty:
                bad, answered, error = sender.send(day_rows)
                failed += bad
                versions.update(answered)
                month.add(len(day_rows), answered)
                if error:
                    progress(f"  {day}: {bad} rows failed: {error}")
                # Ground truth arrives whether or not the prediction call worked.
                labels.add(day_rows, delay)
            next_day = day + timedelta(days=1)
            labels.deliver(datetime.combine(next_day, datetime.min.time()))
            if next_day.month != day.month or next_day >= stop:
                progress(month.report(day, labels.delivered))
                month = _MonthTally()
            pace.wait_until(next_day)
            day = next_day
        if deliver_remaining_labels:
            labels.deliver(None)
    finally:
        sender.close()
    progress(
        f"replay of {uc.name} {first}..{stop} via {via}: {len(rows)} rows, {failed} failed, "
        f"{labels.delivered} labels delivered, {labels.pending} still in flight"
    )
    return ReplayResult(
        uc.name, str(first), str(stop), via, len(rows), failed, labels.delivered, labels.pending, dict(versions)
    )


def _open_sender(
    use_case: UseCase,
    via: str,
    url: str | None,
    rows_per_request: int,
    timeout: float,
    log_uri: str | None,
    tracking_uri: str | None,
) -> _HttpSender | _BatchSender:
    if via == "http":
        settings = get_settings()
        return _HttpSender(
            use_case, url or f"http://{settings.host}:{settings.serving_port}", rows_per_request, timeout
        )
    if via == "batch":
        return _BatchSender(use_case, log_uri, tracking_uri)
    raise ValueError(f"via must be 'http' or 'batch', got {via!r}")


class _LabelsInFlight:
    """Ground truth on its way: written to the labels store once its arrival time has passed."""

    def __init__(self, use_case: UseCase, labels_uri: str | None) -> None:
        self.use_case = use_case
        self.labels_uri = labels_uri
        self._in_flight: list[tuple[datetime, pd.DataFrame]] = []
        self.delivered = 0

    @property
    def pending(self) -> int:
        return sum(len(frame) for _, frame in self._in_flight)

    def add(self, rows: pd.DataFrame, delay: timedelta) -> None:
        for arrival, frame in rows.groupby(rows["event_time"] + delay):
            self._in_flight.append((arrival.to_pydatetime(), frame))

    def deliver(self, until: datetime | None) -> None:
        """Write the labels that arrive by `until` (None: all of them)."""
        from mlops.predictionlog.labels import write_labels

        due = [(t, f) for t, f in self._in_flight if until is None or t <= until]
        self._in_flight = [(t, f) for t, f in self._in_flight if not (until is None or t <= until)]
        for _, frame in due:
            write_labels(
                self.use_case,
                frame["request_id"].tolist(),
                frame[self.use_case.target].tolist(),
                frame["event_time"].tolist(),
                uri=self.labels_uri,
            )
            self.delivered += len(frame)


class _MonthTally:
    """Rows sent and model versions that answered in one simulated month, for the progress line."""

    def __init__(self) -> None:
        self.rows = 0
        self.versions: Counter[str] = Counter()

    def add(self, rows: int, versions: Counter[str]) -> None:
        self.rows += rows
        self.versions.update(versions)

    def report(self, day: date, labels_delivered: int) -> str:
        models = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items())) or "none"
        return f"replaying {day:%Y-%m} ... {self.rows} rows (model {models}; labels delivered: {labels_delivered})"


class _Pace:
    """Holds simulated day k back until k / speed wall-clock seconds after the start (speed 0: no waiting)."""

    def __init__(self, first: date, speed: float, sleep: Callable[[float], None]) -> None:
        self.first = first
        self.speed = speed
        self.sleep = sleep
        self.started = time.monotonic()

    def wait_until(self, day: date) -> None:
        if self.speed > 0:
            lag = (day - self.first).days / self.speed - (time.monotonic() - self.started)
            if lag > 0:
                self.sleep(lag)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops replay", description="Replay bundled data as production traffic.")
    p.add_argument("--use-case", default="bike_sharing")
    p.add_argument("--start", default="2011-03-01", help="first simulated day (inclusive)")
    p.add_argument("--end", default="2011-07-01", help="last simulated day (exclusive)")
    p.add_argument("--speed", type=float, default=30.0, help="simulated days per second; 0 = as fast as possible")
    p.add_argument("--label-delay-days", type=float, default=1.0, help="simulated days until a row's label arrives")
    p.add_argument("--via", choices=["http", "batch"], default="http")
    p.add_argument("--url", default=None, help="prediction service (default http://<MLOPS_HOST>:<MLOPS_SERVING_PORT>)")
    p.add_argument("--rows-per-request", type=int, default=24)
    p.add_argument("--deliver-remaining-labels", action="store_true", help="at the end, deliver labels still in flight")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = replay(
        args.use_case,
        args.start,
        args.end,
        speed=args.speed,
        label_delay=args.label_delay_days,
        via=args.via,
        url=args.url,
        rows_per_request=args.rows_per_request,
        deliver_remaining_labels=args.deliver_remaining_labels,
    )
    return 0 if result.failed_rows == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
