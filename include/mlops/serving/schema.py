"""Request validation for the prediction service, compiled once per model version.

The hot path avoids pydantic and pandas per field: the model signature becomes a
list of small per-column checks, a record becomes a row of Python values, and a
whole micro-batch becomes one DataFrame. Every problem is reported with its
location (`["body", "records", 3, "temp"]`), FastAPI style, and nothing a client
sends can raise past this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

try:  # orjson is about 5x faster; plain json keeps the service working without it
    import orjson

    def _fast_loads(body: bytes) -> Any:
        return orjson.loads(body)

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

except ImportError:  # pragma: no cover

    def _fast_loads(body: bytes) -> Any:
        return json.loads(body, parse_constant=_reject_constant)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=str).encode()


_MISSING = object()
SOURCES_ALLOWED_ONLINE = ("online", "replay")
TOP_LEVEL_KEYS = ("record", "records", "id", "ids", "event_time", "event_times", "source")


class RequestError(Exception):
    """A client error: HTTP status plus FastAPI-style `detail` entries naming the fields."""

    def __init__(self, status: int, detail: list[dict[str, Any]]) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}


def _error(loc: Sequence[str | int], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN/Infinity literals; keep the value so validation can name the field.
    return float(name.replace("Infinity", "inf"))


def parse_json(body: bytes) -> Any:
    """Decode a request body; malformed or too deeply nested JSON is a 400."""
    if not body.strip():
        raise RequestError(400, [_error(["body"], "the request body is empty; send a JSON object", "json_invalid")])
    try:
        return _fast_loads(body)
    except (ValueError, RecursionError) as fast_error:
        # NaN/Infinity literals are not JSON; parse them anyway so the 422 can say which field.
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except RecursionError:
            raise RequestError(
                400, [_error(["body"], "JSON nested too deeply; records are flat objects", "json_too_deep")]
            ) from None
        except ValueError:
            message = str(fast_error)
            kind = "json_too_deep" if "recursion" in message.lower() else "json_invalid"
            raise RequestError(400, [_error(["body"], f"malformed JSON: {message}", kind)]) from None


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    """double, long, string, bool or any."""
    required: bool = True
    nullable: bool = False


def _check_double(value: Any) -> tuple[Any, str | None]:
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value, None
        return None, f"must be a finite number, got {value}"
    if kind is int:
        # Plain json hands over integers of any length; float() of a 400-digit one overflows.
        try:
            return float(value), None
        except OverflowError:
            return None, "must be a finite number, got an integer too large for a 64-bit float"
    return None, f"must be a number, got {_type_name(value)}"


# What an integer column holds once it is an array (and a log column): a signed 64-bit integer.
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _check_long(value: Any) -> tuple[Any, str | None]:
    if type(value) is int:
        if _LONG_MIN <= value <= _LONG_MAX:
            return value, None
        return None, "must be an integer that fits in 64 bits"
    if type(value) is float and math.isfinite(value) and value.is_integer():
        # 3.0 is the integer 3 (JSON writers and pandas send integers with nulls as floats).
        if _LONG_MIN <= value < 2.0**63:
            return int(value), None
        return None, "must be an integer that fits in 64 bits"
    if type(value) is float:
        return None, f"must be an integer, got {value!r}; the model was trained on whole numbers"
    return None, f"must be an integer, got {_type_name(value)}"


def _check_string(value: Any) -> tuple[Any, str | None]:
    if type(value) is str:
        return value, None
    return None, f"must be a string, got {_type_name(value)}"


def _check_bool(value: Any) -> tuple[Any, str | None]:
    if type(value) is bool:
        return value, None
    return None, f"must be true or false, got {_type_name(value)}"


def _check_any(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, dict | list):
        return None, f"must be a scalar, got {_type_name(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"must be a finite number, got {value}"
    if type(value) is int and not _LONG_MIN <= value <= _LONG_MAX:
        return None, "must be an integer that fits in 64 bits"
    return value, None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


_CHECKS: dict[str, Callable[[Any], tuple[Any, str | None]]] = {
    "double": _check_double,
    "long": _check_long,
    "string": _check_string,
    "bool": _check_bool,
    "any": _check_any,
}
_MLFLOW_KINDS = {
    "double": "double",
    "float": "double",
    "long": "long",
    "integer": "long",
    "string": "string",
    "boolean": "bool",
}


@dataclass(frozen=True)
class ParsedRequest:
    rows: list[list[Any]]
    ids: list[str] | None
    event_times: list[datetime] | None
    source: str


MISSING_POLICIES = ("impute", "refuse")
MAX_EXTRAS_LISTED = 10


@dataclass
class InputSchema:
    """The columns a model takes, in order, with one check per column.

    `missing` is the use case's `serving.missing`: with `impute` a null in any feature is
    accepted (the pipeline imputes it; the log keeps the null); with `refuse` it is a 422
    naming the field and the policy.
    """

    columns: list[Column]
    missing: str = "impute"
    use_case: str = ""
    names: list[str] = field(init=False)
    _checks: list[tuple[str, Callable[[Any], tuple[Any, str | None]], bool, bool]] = field(init=False, repr=False)
    _known: frozenset[str] = field(init=False, repr=False)
    _index: dict[str, int] = field(init=False, repr=False)
    _with_store: dict[tuple[str, ...], InputSchema] = field(init=False, repr=False)
    _null_message: str = field(init=False, repr=False)
    log_types: dict[str, str] = field(init=False, repr=False)
    """Feature -> kind for the prediction log (frames.FEATURE_KINDS); `any` columns are inferred there."""

    def __post_init__(self) -> None:
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"serving.missing must be one of {MISSING_POLICIES}, got {self.missing!r}")
        self.names = [c.name for c in self.columns]
        self.log_types = {c.name: c.kind for c in self.columns if c.kind != "any"}
        self._null_message = (
            f"may not be null: serving.missing is 'refuse' for {self.use_case or 'this use case'}; "
            "send a value or set serving.missing: impute"
            if self.missing == "refuse"
            else "may not be null"
        )
        self._checks = [(c.name, _CHECKS[c.kind], c.required, c.nullable) for c in self.columns]
        self._known = frozenset(self.names)
        self._index = {name: j for j, name in enumerate(self.names)}
        self._with_store: dict[tuple[str, ...], InputSchema] = {}

    @classmethod
    def from_signature(
        cls,
        inputs: list[dict[str, Any]] | None,
        numeric: Sequence[str],
        categorical: Sequence[str],
        missing: str = "impute",
        use_case: str = "",
    ) -> InputSchema:
        """From MLflow signature inputs (`[{"name", "type", "required"}]`), else from the use-case features.

        Under `missing="impute"` every feature may be null (the pipelines impute); under
        `refuse` none may. A field the signature requires must be sent either way.
        """
        nullable = missing == "impute"
        if not inputs:
            columns = [Column(n, "double", nullable=nullable) for n in numeric]
            columns += [Column(n, "string", nullable=nullable) for n in categorical]
            return cls(columns, missing, use_case)
        columns = []
        for spec in inputs:
            name = str(spec["name"])
            kind = _MLFLOW_KINDS.get(str(spec.get("type")), "any")
            required = bool(spec.get("required", True))
            columns.append(Column(name, kind, required=required, nullable=nullable))
        return cls(columns, missing, use_case)

    def with_store_columns(self, names: Sequence[str]) -> InputSchema:
        """This schema for a request whose `names` come from the feature store later (in the micro-batch).

        Those columns may be absent from the request: `parse` leaves None in their places, and
        `fill_store_values` validates the store's values into them. Built once per model and set of names.
        """
        key = tuple(names)
        found = self._with_store.get(key)
        if found is None:
            deferred = set(names)
            columns = [
                Column(c.name, c.kind, required=False, nullable=True) if c.name in deferred else c for c in self.columns
            ]
            found = self._with_store[key] = InputSchema(columns, self.missing, self.use_case)
        return found

    def fill_store_values(
        self, row: list[Any], values: dict[str, Any], loc: list[str | int], errors: list[dict[str, Any]]
    ) -> None:
        """Validate the feature store's `values` into their columns of a parsed `row` (`with_store_columns`),
        as a client's would be: a null under `refuse`, or a value of the wrong type, is an entry in `errors`."""
        for name, value in values.items():
            j = self._index.get(name)
            if j is None:
                msg = "the feature store gives a feature this model does not take; make feature_store.features match"
                errors.append(_error([*loc, name], msg, "extra_forbidden"))
                continue
            _, check, _, nullable = self._checks[j]
            if value is None:
                if not nullable:
                    errors.append(_error([*loc, name], self._null_message, "null"))
                row[j] = None
                continue
            checked, problem = check(value)
            if problem is not None:
                errors.append(_error([*loc, name], f"the feature store's value {problem}", "type_error"))
            row[j] = checked

    @property
    def all_double(self) -> bool:
        # None becomes NaN in a float64 array, so nullable double columns take the fast path too.
        return all(c.kind == "double" for c in self.columns)

    def validate_record(self, record: Any, loc: list[str | int], errors: list[dict[str, Any]]) -> list[Any] | None:
        if type(record) is not dict:
            errors.append(
                _error(loc, f"a record must be an object of feature values, got {_type_name(record)}", "dict_type")
            )
            return None
        row: list[Any] = []
        failed = False
        for name, check, required, nullable in self._checks:
            value = record.get(name, _MISSING)
            if value is _MISSING:
                if required:
                    errors.append(_error([*loc, name], "field required", "missing"))
                    failed = True
                row.append(None)
                continue
            if value is None:
                if not nullable:
                    errors.append(_error([*loc, name], self._null_message, "null"))
                    failed = True
                row.append(None)
                continue
            checked, problem = check(value)
            if problem is not None:
                errors.append(_error([*loc, name], problem, "type_error"))
                failed = True
            row.append(checked)
        if len(record) > len(row) or not self._known.issuperset(record):
            extras = sorted(str(k) for k in record.keys() - self._known)
            # A record with thousands of unknown columns gets a short answer, not one entry per column.
            for extra in extras[:MAX_EXTRAS_LISTED]:
                errors.append(_error([*loc, extra], "extra field not permitted", "extra_forbidden"))
            if len(extras) > MAX_EXTRAS_LISTED:
                msg = f"{len(extras)} extra fields in all; the model takes these {len(self.names)}: {self.names}"
                errors.append(_error(loc, msg, "extra_forbidden"))
            failed = True
        return None if failed else row

    def parse(self, payload: Any, max_records: int) -> ParsedRequest:
        """Validate a decoded request body; raises RequestError (422) naming every bad field."""
        if type(payload) is not dict:
            raise RequestError(
                422, [_error(["body"], 'send a JSON object: {"records": [{...}]} or {"record": {...}}', "dict_type")]
            )
        errors: list[dict[str, Any]] = []
        for key in payload.keys() - set(TOP_LEVEL_KEYS):
            errors.append(
                _error(
                    ["body", str(key)], f"extra field not permitted; allowed: {list(TOP_LEVEL_KEYS)}", "extra_forbidden"
                )
            )
        single = "record" in payload
        if single and "records" in payload:
            errors.append(_error(["body"], "send either 'record' or 'records', not both", "value_error"))
        if single:
            records: Any = [payload["record"]]
            prefix: list[str | int] = ["body", "record"]
        else:
            records = payload.get("records", _MISSING)
            prefix = ["body", "records"]
            if records is _MISSING:
                errors.append(_error(["body", "records"], "field required (or send one 'record')", "missing"))
                raise RequestError(422, errors)
            if type(records) is not list:
                raise RequestError(
                    422,
                    [*errors, _error(prefix, f"must be an array of records, got {_type_name(records)}", "list_type")],
                )
            if not records:
                raise RequestError(422, [*errors, _error(prefix, "must hold at least one record", "too_short")])
            if len(records) > max_records:
                raise RequestError(
                    413,
                    [
                        _error(
                            prefix,
                            f"{len(records)} records exceed the limit of {max_records}; split the batch",
                            "too_long",
                        )
                    ],
                )
        rows: list[list[Any]] = []
        for i, record in enumerate(records):
            row = self.validate_record(record, prefix if single else [*prefix, i], errors)
            if row is not None:
                rows.append(row)
            if len(errors) > 50:
                errors.append(_error(["body"], "more errors left out", "too_many_errors"))
                break
        ids = _parse_list(payload, "id", "ids", single, len(records), _check_id, errors)
        times = _parse_list(payload, "event_time", "event_times", single, len(records), _check_time, errors)
        source = payload.get("source", "online")
        if source not in SOURCES_ALLOWED_ONLINE:
            errors.append(_error(["body", "source"], f"must be one of {list(SOURCES_ALLOWED_ONLINE)}", "enum"))
        if errors:
            raise RequestError(422, errors)
        return ParsedRequest(rows, ids, times, str(source))

    def to_frame(self, rows: list[list[Any]]) -> pd.DataFrame:
        """One DataFrame for a micro-batch, dtypes as the pipeline was trained with."""
        import numpy as np
        import pandas as pd

        if self.all_double:
            return pd.DataFrame(np.asarray(rows, dtype=np.float64), columns=self.names, copy=False)
        data: dict[str, Any] = {}
        for j, column in enumerate(self.columns):
            values = [row[j] for row in rows]
            if column.kind == "double":
                data[column.name] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
            elif column.kind == "long":
                # int64 as trained; a null (serving.missing: impute) makes it float64 with NaN for the imputer.
                if None in values:
                    data[column.name] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
                else:
                    data[column.name] = np.asarray(values, dtype=np.int64)
            elif column.kind == "string":
                # Missing categories arrive as NaN from CSV/Parquet at training time; match that.
                data[column.name] = np.asarray([np.nan if v is None else v for v in values], dtype=object)
            else:
                data[column.name] = values
        return pd.DataFrame(data, copy=False)


def _check_id(value: Any) -> tuple[Any, str | None]:
    if type(value) is str and 0 < len(value) <= 200:
        return value, None
    if type(value) is int and _LONG_MIN <= value <= _LONG_MAX:
        return str(value), None
    if type(value) is float and value.is_integer() and _LONG_MIN <= value < 2.0**63:
        # JSON does not tell 141 from 141.0 (JSON Schema calls both an integer): the same id.
        return str(int(value)), None
    return None, "must be a non-empty string (at most 200 characters) or a 64-bit integer"


# Event times the log accepts. The prediction log keeps times as pandas datetime64[ns],
# which holds 1677-09-21..2262-04-11 only; a time outside it would be answered 200 and
# then fail every write of its log batch. The narrower bound also catches typos (3011 for
# 2011) while leaving any real business time, historical or planned, well inside.
EARLIEST_EVENT_TIME = datetime(1900, 1, 1)
LATEST_EVENT_TIME = datetime(2200, 1, 1)


def _check_time(value: Any) -> tuple[Any, str | None]:
    if type(value) is not str:
        return None, f"must be an ISO 8601 date or datetime string, got {_type_name(value)}"
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        return None, f"{value[:40]!r} is not an ISO 8601 date or datetime such as 2011-05-01T13:00:00"
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 has no UTC equivalent
        parsed = None
    if parsed is None or not EARLIEST_EVENT_TIME <= parsed < LATEST_EVENT_TIME:
        return None, (
            f"{value[:40]!r} is outside the event times the log accepts, "
            f"{EARLIEST_EVENT_TIME:%Y-%m-%d} to {LATEST_EVENT_TIME:%Y-%m-%d}; send the record's business time"
        )
    return parsed, None


def _parse_list(
    payload: dict[str, Any],
    one: str,
    many: str,
    single: bool,
    count: int,
    check: Callable[[Any], tuple[Any, str | None]],
    errors: list[dict[str, Any]],
) -> list[Any] | None:
    key = one if single else many
    wrong = many if single else one
    if wrong in payload:
        errors.append(
            _error(["body", wrong], f"use '{key}' with '{'record' if single else 'records'}'", "extra_forbidden")
        )
        return None
    if key not in payload or payload[key] is None:
        return None
    raw = [payload[key]] if single else payload[key]
    if type(raw) is not list:
        errors.append(_error(["body", key], f"must be an array, got {_type_name(raw)}", "list_type"))
        return None
    if len(raw) != count:
        errors.append(_error(["body", key], f"has {len(raw)} entries for {count} records", "length_mismatch"))
        return None
    out: list[Any] = []
    for i, value in enumerate(raw):
        checked, problem = check(value)
        if problem is not None:
            errors.append(_error(["body", key] if single else ["body", key, i], problem, "value_error"))
            return None
        out.append(checked)
    return out
