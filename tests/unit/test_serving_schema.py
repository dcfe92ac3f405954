"""Request validation of the prediction service: what used to slip through as a 200 or a 500."""

from __future__ import annotations

from typing import Any

import pytest

from mlops.serving.schema import InputSchema, RequestError, parse_json

SCHEMA = InputSchema.from_signature(
    [
        {"name": "temp", "type": "double", "required": True},
        {"name": "count", "type": "long", "required": True},
        {"name": "season", "type": "string", "required": True},
    ],
    numeric=["temp", "count"],
    categorical=["season"],
)
GOOD = {"temp": 1.5, "count": 3, "season": "spring"}


def _refusal(body: bytes) -> RequestError:
    with pytest.raises(RequestError) as caught:
        SCHEMA.parse(parse_json(body), max_records=100)
    return caught.value


def _locations(error: RequestError) -> list[list[Any]]:
    return [item["loc"] for item in error.detail]


@pytest.mark.parametrize(
    "event_time",
    [
        "3000-01-01",  # a datetime, but outside pandas' datetime64[ns] range: the log could not hold it
        "2262-04-12",
        "1677-01-01T00:00:00",
        "2500-06-01T10:00:00+02:00",
        "0001-01-01T00:00:00+01:00",  # no UTC equivalent: OverflowError converting it
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_event_times_the_log_cannot_hold_are_a_422_naming_the_field(event_time: str) -> None:
    error = _refusal(f'{{"record": {{"temp": 1.5, "count": 3, "season": "a"}}, "event_time": "{event_time}"}}'.encode())
    assert error.status == 422 and _locations(error) == [["body", "event_time"]]
    assert "1900-01-01 to 2200-01-01" in error.detail[0]["msg"]


def test_event_times_inside_the_bounds_pass_and_become_naive_utc() -> None:
    parsed = SCHEMA.parse(
        parse_json(b'{"records": [{"temp": 1.5, "count": 3, "season": "a"}, {"temp": 2, "count": 4, "season": "b"}],'
                   b' "event_times": ["2011-05-01", "2199-12-31T23:00:00+01:00"]}'),
        max_records=100,
    )  # fmt: skip
    assert [t.isoformat() for t in parsed.event_times or []] == ["2011-05-01T00:00:00", "2199-12-31T22:00:00"]


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("temp", "1" + "0" * 400),  # float() of it raises OverflowError
        ("temp", "-" + "9" * 400),
        ("count", "1" + "0" * 400),
        ("count", "18446744073709551615"),  # fits uint64, not int64
        ("count", "1e20"),  # an integral float beyond int64
    ],
)
def test_numbers_out_of_range_are_a_422_naming_the_field(field: str, literal: str) -> None:
    record = {**GOOD, field: "PLACEHOLDER"}
    body = ('{"record": ' + str(record).replace("'", '"') + "}").replace('"PLACEHOLDER"', literal).encode()
    error = _refusal(body)
    assert error.status == 422 and _locations(error) == [["body", "record", field]], error.detail


def test_a_huge_integer_id_is_a_422_naming_the_field() -> None:
    error = _refusal(b'{"record": {"temp": 1.5, "count": 3, "season": "a"}, "id": 1' + b"0" * 400 + b"}")
    assert error.status == 422 and _locations(error) == [["body", "id"]]


def test_numbers_in_range_keep_their_values() -> None:
    parsed = SCHEMA.parse(parse_json(b'{"record": {"temp": 12345678901234567890, "count": -9223372036854775808,'
                                     b' "season": "a"}, "id": 42}'), max_records=100)  # fmt: skip
    assert parsed.rows == [[12345678901234567890.0, -9223372036854775808, "a"]] and parsed.ids == ["42"]
