"""Which rows a replay sends, when, and as what, for any use case with a time column (no servers here).

The senders themselves run against a real service and a real MLflow server in
tests/integration/test_replay.py and tests/integration/test_scoring.py.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops import cli
from mlops.config import find_use_case, load_use_case
from mlops.platform.replay import replay
from mlops.platform.replay_traffic import json_records, load_replay_rows, newest_day

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_flight_rows_keep_their_departure_times_in_order() -> None:
    use_case = find_use_case("flight_delays")
    rows = load_replay_rows(use_case, date(2023, 7, 1), date(2023, 7, 3))
    source = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "flight_delays.csv")
    expected = source[source["scheduled_departure"].str[:10].isin(["2023-07-01", "2023-07-02"])]
    assert len(rows) == len(expected) > 100
    # A time column with a time of day is the event time itself, to the minute.
    assert rows["event_time"].tolist() == sorted(pd.to_datetime(expected["scheduled_departure"]).tolist())
    assert (rows["event_time"] == pd.to_datetime(rows["scheduled_departure"])).all()
    assert rows["request_id"].is_unique and rows["request_id"].iloc[0].startswith("flight_delays-20230701T")
    again = load_replay_rows(use_case, date(2023, 7, 1), date(2023, 7, 3))
    assert again["request_id"].tolist() == rows["request_id"].tolist()


def test_a_date_only_time_column_spreads_each_day_in_source_order() -> None:
    use_case = find_use_case("bike_sharing")
    rows = load_replay_rows(use_case, date(2011, 1, 17), date(2011, 1, 19))
    full, short = rows[rows["dteday"] == "2011-01-17"], rows[rows["dteday"] == "2011-01-18"]
    assert len(full) == 24 and len(short) == 12  # 2011-01-18 misses twelve hours in the source
    # A complete day of hourly rows lands on its hours; a short day is spread over the day, in source order.
    assert full["event_time"].dt.hour.tolist() == list(range(24)) and (full["event_time"].dt.minute == 0).all()
    assert short["event_time"].dt.hour.tolist() == list(range(0, 24, 2))
    source = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
    assert short["hr"].tolist() == source.loc[source["dteday"] == "2011-01-18", "hr"].tolist()


def test_a_store_backed_use_case_is_replayed_at_each_rows_hour_with_its_entity_key() -> None:
    use_case = find_use_case("bike_sharing_store")
    rows = load_replay_rows(use_case, date(2011, 1, 17), date(2011, 1, 19))
    short = rows[rows["dteday"] == "2011-01-18"]
    assert len(short) == 12  # the day missing twelve hours: each row is still sent at its own hour
    # The key training and batch scoring derive (the date at `hr`), and the event time is that hour.
    hours = [int(h.removesuffix("am").removesuffix("pm")) % 12 + 12 * h.endswith("pm") for h in short["hr"]]
    assert short["hour"].tolist() == [f"2011-01-18T{h:02d}" for h in hours]
    assert short["event_time"].tolist() == [pd.Timestamp(2011, 1, 18, h) for h in hours]
    # A client sends the key and the calendar; the weather is the store's.
    assert use_case.client_fields == ["hour", "season", "hr", "holiday", "weekday", "workingday"]
    records = json_records(short.head(1), use_case.client_fields)
    assert records == [{"hour": "2011-01-18T12", "season": "spring", "hr": "12pm", "holiday": "No",
                        "weekday": "Tue", "workingday": "Yes"}]  # fmt: skip
    assert find_use_case("bike_sharing").client_fields == find_use_case("bike_sharing").features.all


def test_the_default_span_is_what_the_model_has_not_seen() -> None:
    flights, bike = find_use_case("flight_delays"), find_use_case("bike_sharing")
    assert flights.training.window.end == date(2023, 3, 1) and newest_day(flights) == date(2023, 12, 31)
    assert bike.training.window.end == date(2011, 3, 1) and newest_day(bike) == date(2012, 12, 31)


def test_records_carry_the_source_types_and_nulls() -> None:
    use_case = find_use_case("flight_delays")
    rows = load_replay_rows(use_case, date(2023, 7, 4), date(2023, 7, 5))
    records = json_records(rows, use_case.features.all)
    assert len(records) == len(rows)
    with_null = [r for r in records if r["temperature"] is None]
    assert len(with_null) == int(rows["temperature"].isna().sum()) > 0
    # A station outage silences all four readings; nothing is filled in.
    assert all(r["wind_speed"] is r["precipitation"] is r["visibility"] is None for r in with_null)
    first = next(r for r in records if r["temperature"] is not None)
    assert all(type(first[c]) is int for c in ("dep_hour", "day_of_week", "distance", "seats"))
    assert all(type(first[c]) is float for c in ("temperature", "wind_speed", "precipitation", "visibility"))
    assert type(first["carrier"]) is str and {r["carrier"] for r in records} >= {"NK"}
    json.dumps(records, allow_nan=False)  # valid JSON: no NaN anywhere


def test_a_time_zone_is_converted_to_utc(tmp_path: Path) -> None:
    data = tmp_path / "events.csv"
    data.write_text("at,x,y\n2023-01-01T10:00:00+02:00,1,0\n2023-01-01T23:30:00-05:00,2,1\n")
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "flight_delays.yaml").read_text())
    config.update(name="events", source={"kind": "files", "path": str(data)}, target="y", time_column="at",
                  features={"numeric": ["x"]})  # fmt: skip
    (tmp_path / "events.yaml").write_text(yaml.safe_dump(config))
    rows = load_replay_rows(load_use_case(tmp_path / "events.yaml"), date(2023, 1, 1), date(2023, 1, 3))
    assert rows["event_time"].tolist() == [pd.Timestamp("2023-01-01 08:00"), pd.Timestamp("2023-01-02 04:30")]


def test_a_use_case_without_a_time_column_or_file_is_refused_with_the_reason() -> None:
    with pytest.raises(
        ValueError, match=r"breast_cancer cannot be replayed: replay needs a file source and a time_column"
    ):
        replay("breast_cancer", "2023-01-01", "2023-02-01", via="batch")


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("2023-07-05", "2023-07-01", r"end 2023-07-01 must be after start 2023-07-05"),
        ("2024-03-01", "2024-04-01", r"no rows of flight_delays between 2024-03-01 and 2024-04-01"),
        ("2023-13-01", None, r"start '2023-13-01' is not a date; use YYYY-MM-DD"),
    ],
)
def test_a_bad_span_is_refused_before_anything_is_sent(start: str, end: str | None, says: str) -> None:
    # via="http" with nothing listening: the span is checked first, so the error is about the span.
    with pytest.raises(ValueError, match=says):
        replay("flight_delays", start, end, via="http", url="http://127.0.0.1:9")


def test_the_command_says_what_is_wrong_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", "--use-case", "flight_delays", "--start", "2023-13-01", "--via", "batch"]) == 1
    assert capsys.readouterr().err.strip() == "error: start '2023-13-01' is not a date; use YYYY-MM-DD, e.g. 2023-03-01"
    # Nothing listens on port 9: the service being down is a message too.
    argv = ["replay", "--use-case", "flight_delays", "--start", "2023-07-01", "--end", "2023-07-02"]
    assert cli.main([*argv, "--via", "http", "--url", "http://127.0.0.1:9", "--speed", "0"]) == 1
    assert "error: the prediction service at http://127.0.0.1:9 is not reachable" in capsys.readouterr().err
