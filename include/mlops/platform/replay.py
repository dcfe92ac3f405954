"""Production replay: a use case's later rows, sent as live traffic in time order.

Works for any use case with a file source and a `time_column`. The replay walks
simulated days from `start` (default: the end of the configured training window) to
`end` (default: the day after the newest row). Each day's rows go to the prediction
service over HTTP (or through batch scoring) with their ids and event times, exactly
as the source holds them (nulls included: see `mlops.platform.replay_traffic`), and
their true targets are delivered as labels `label_delay` simulated days later.
Bundled data drifts by itself (bike rentals with the seasons; flight delays with the
seasons, a new carrier and summer storms), so drift and decay show up in monitoring.
`speed` is simulated days per wall-clock second.

    mlops replay --use-case flight_delays --via batch --speed 0
    mlops replay --use-case bike_sharing --start 2011-03-01 --end 2011-07-01 --speed 30 --via http
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from mlops.platform.replay_traffic import BatchSender, HttpSender, Sent, load_replay_rows, newest_day
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
    failures: dict[str, int] = field(default_factory=dict)
    """Rows that got no prediction, by reason, e.g. `{"HTTP 422": 48}`."""


def _as_date(value: date | str, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a date; use YYYY-MM-DD, e.g. 2023-03-01") from None


def replay(
    use_case: UseCase | str,
    start: date | str | None = None,
    end: date | str | None = None,
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
    """Replay [start, end) as production traffic; returns what was sent, refused and labelled.

    `start` defaults to the end of the training window, `end` to the day after the newest
    row. `speed`: simulated days per second (0 = as fast as possible). `label_delay`:
    simulated days (or a timedelta) between a row's event time and its label's arrival.
    Labels still in flight at `end` are delivered only when `deliver_remaining_labels` is
    set. `via="http"` posts to the service at `url` (default the configured serving port);
    `via="batch"` scores each day as partition `replay-<date>` (idempotent: a re-run
    replaces it).
    """
    from mlops.config import resolve_use_case

    uc = resolve_use_case(use_case)
    first, stop = _span(uc, start, end)
    if speed < 0:
        raise ValueError("speed is simulated days per second and must be >= 0 (0 = no waiting)")
    delay = label_delay if isinstance(label_delay, timedelta) else timedelta(days=float(label_delay))
    rows = load_replay_rows(uc, first, stop)
    if rows.empty:
        raise ValueError(f"no rows of {uc.name} between {first} and {stop}; the data covers other dates")
    sender = _open_sender(uc, via, url, rows_per_request, timeout, log_uri, tracking_uri)
    labels = _LabelsInFlight(uc, labels_uri, log_uri)
    total = Sent()
    month = _MonthTally()
    pace = _Pace(first, speed, sleep)
    by_day = dict(tuple(rows.groupby(rows["event_time"].dt.date, sort=True)))
    try:
        day = first
        while day < stop:
            day_rows = by_day.get(day)
            if day_rows is not None and not day_rows.empty:
                sent = sender.send(day_rows)
                total.failed.update(sent.failed)
                total.answered.update(sent.answered)
                month.add(len(day_rows), sent.answered)
                if sent.error:
                    progress(f"  {day}: {sent.failed_rows} rows failed: {sent.error}")
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
    result = ReplayResult(
        uc.name, str(first), str(stop), via, len(rows), total.failed_rows, labels.delivered, labels.pending,
        dict(total.answered), dict(total.failed),
    )  # fmt: skip
    progress(_summary(result))
    return result


def _span(use_case: UseCase, start: date | str | None, end: date | str | None) -> tuple[date, date]:
    """[start, end) as given, else from the end of the training window to the day after the newest row."""
    if start is not None:
        first = _as_date(start, "start")
    elif use_case.training.window.end is not None:
        first = use_case.training.window.end
    else:
        raise ValueError(
            f"use case {use_case.name} sets no training.window.end, so there is no default start: pass one"
        )
    stop = _as_date(end, "end") if end is not None else newest_day(use_case) + timedelta(days=1)
    if stop <= first:
        raise ValueError(f"end {stop} must be after start {first}")
    return first, stop


def _summary(result: ReplayResult) -> str:
    reasons = ", ".join(f"{reason}: {rows}" for reason, rows in sorted(result.failures.items()))
    return (
        f"replay of {result.use_case} {result.start}..{result.end} via {result.via}: {result.rows} rows, "
        f"{result.failed_rows} failed{f' ({reasons})' if reasons else ''}, "
        f"{result.labels_delivered} labels delivered, {result.labels_pending} still in flight"
    )


def _open_sender(
    use_case: UseCase,
    via: str,
    url: str | None,
    rows_per_request: int,
    timeout: float,
    log_uri: str | None,
    tracking_uri: str | None,
) -> HttpSender | BatchSender:
    if via == "http":
        settings = get_settings()
        return HttpSender(use_case, url or f"http://{settings.host}:{settings.serving_port}", rows_per_request, timeout)
    if via == "batch":
        return BatchSender(use_case, log_uri, tracking_uri)
    raise ValueError(f"via must be 'http' or 'batch', got {via!r}")


class _LabelsInFlight:
    """Ground truth on its way: written to the labels store, one batch a simulated day, once it has arrived."""

    def __init__(self, use_case: UseCase, labels_uri: str | None, log_uri: str | None = None) -> None:
        self.use_case = use_case
        self.labels_uri = labels_uri
        self.log_uri = log_uri
        self._in_flight: list[pd.DataFrame] = []
        self.delivered = 0

    @property
    def pending(self) -> int:
        return sum(len(frame) for frame in self._in_flight)

    def add(self, rows: pd.DataFrame, delay: timedelta) -> None:
        columns = ["request_id", self.use_case.target, "event_time"]
        self._in_flight.append(rows[columns].assign(arrival=rows["event_time"] + delay))

    def deliver(self, until: datetime | None) -> None:
        """Write the labels that arrive by `until` (None: all of them)."""
        import pandas as pd

        from mlops.predictionlog.labels import write_labels

        if not self._in_flight:
            return
        waiting = pd.concat(self._in_flight, ignore_index=True)
        due = waiting["arrival"] <= until if until is not None else pd.Series(True, index=waiting.index)
        self._in_flight = [waiting[~due]] if not due.all() else []
        # A row without a target has no outcome to deliver (write_labels refuses an empty label).
        arrived = waiting[due & waiting[self.use_case.target].notna()]
        if not arrived.empty:
            written = write_labels(
                self.use_case,
                arrived["request_id"].tolist(),
                arrived[self.use_case.target].tolist(),
                arrived["event_time"].tolist(),
                uri=self.labels_uri,
                log_uri=self.log_uri,
            )
            # Labels whose prediction the service has not flushed to the log yet are stored as
            # unmatched (written.unknown_ids) and join once it is: delivered all the same.
            self.delivered += written.written


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


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The replay options, on `mlops replay` and on `python -m mlops.platform.replay` alike."""
    parser.add_argument("--use-case", required=True, help="the use case to replay (a config in the configs folder)")
    parser.add_argument("--start", help="first simulated day (inclusive); default: the end of the training window")
    parser.add_argument("--end", help="last simulated day (exclusive); default: the day after the newest row")
    parser.add_argument("--speed", type=float, default=30.0, help="simulated days per second; 0 = as fast as possible")
    parser.add_argument(
        "--label-delay-days", type=float, default=1.0, help="simulated days until a row's label arrives"
    )
    parser.add_argument(
        "--via", choices=["http", "batch"], default="http", help="the prediction service or batch scoring"
    )
    parser.add_argument(
        "--url", default=None, help="prediction service (default http://<MLOPS_HOST>:<MLOPS_SERVING_PORT>)"
    )
    parser.add_argument("--rows-per-request", type=int, default=24)
    parser.add_argument(
        "--deliver-remaining-labels", action="store_true", help="at the end, deliver labels still in flight"
    )
    return parser


def build_parser(prog: str = "python -m mlops.platform.replay") -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0]))


def run(args: argparse.Namespace) -> int:
    """Replay as the parsed options say; 0 when every row got a prediction, 1 otherwise."""
    try:
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
    except (ValueError, LookupError, OSError) as exc:
        # An unknown use case, a bad date, a missing source, a service that is down: a message, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if result.failed_rows == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
