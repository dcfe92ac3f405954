"""The service's OpenAPI document, exact per use case and rebuilt from the models it serves.

FastAPI documents the routes as written: one generic `POST /predict/{use_case}` whose body
no client or fuzzer can fill in. `install(app)` replaces `app.openapi` so `/openapi.json`
adds, for every served use case, a `POST /predict/<use case>` operation whose request body
is the loaded model's signature (types; nullability from `serving.missing`; categorical
domains as `enum` from the use case's expectation suite) and whose 200 is the exact answer
(a classifier's `classes` and `probabilities` included), and documents every status a
route returns with its body. The document is cached per set of loaded versions, so it
follows `@champion` to a version with another signature.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.naming import ROLE_CANARY, ROLE_CHAMPION

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mlops.config import UseCase
    from mlops.serving.models import LoadedModel
    from mlops.serving.schema import Column, InputSchema
    from mlops.serving.state import ServiceState

REF = "#/components/schemas/"
# The documented range of a number: the service takes any finite double, but a model fed values
# this far beyond any training range overflows (a 422 `model_error`), so the contract stops here.
_DOUBLE_MAX = 1e12
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

# An event time the log accepts (serving/schema.py: 1900..2200, after conversion to UTC).
# JSON Schema cannot say "a date that exists", so the pattern spells the days of each month
# (29 February left out) and keeps the years one inside the bounds so no offset crosses them.
_DATE = (
    r"(190[1-9]|19[1-9]\d|20\d\d|21[0-8]\d|219[0-8])-"
    r"((0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
)
EVENT_TIME_PATTERN = rf"^{_DATE}(T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{{1,6}})?)?(Z|[+-](0\d|1[0-3]):[0-5]\d)?)?$"

FIELD_ERROR = {
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
}
FIELD_ERRORS = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "array", "items": {"$ref": REF + "FieldError"}}},
    "description": 'Every problem with its location, FastAPI style: `{"detail": [{"loc", "msg", "type"}]}`.',
}
# A 404 from the router itself (no route) says `{"detail": "Not Found"}`; a 503 explains in a sentence.
ERROR = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": REF + "FieldError"}}]}},
}
MLFLOW_ERROR = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {
        "error_code": {"type": "string", "examples": ["BAD_REQUEST"]},
        "message": {"type": "string"},
        "detail": {"type": "array", "items": {"$ref": REF + "FieldError"}},
    },
    "description": "As `mlflow models serve` answers an error, plus `detail` naming the fields.",
}


def _response(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF + schema}}}}


def error_responses(*statuses: int, schema: str = "FieldErrors") -> dict[int | str, Any]:
    """The documented refusals of a route, each with its body."""
    descriptions = {
        400: "Malformed, empty or too deeply nested JSON",
        404: "Unknown use case (the message names the served ones)",
        413: "Body or batch too large (`max_body_bytes`, `max_records`): split the batch",
        415: "Content-Type is not application/json",
        422: "Invalid fields: every `detail[].loc` names one (a body that is not a JSON object included)",
        503: "No model loaded yet for this use case",
    }
    out: dict[int | str, Any] = {}
    for status in statuses:
        body = "Error" if status in (404, 503) and schema == "FieldErrors" else schema
        out[str(status)] = _response(descriptions[status], body)
    return out


PREDICT_ERRORS = (400, 404, 413, 415, 422, 503)


def install(app: FastAPI) -> None:
    """Serve `/openapi.json` from the models loaded now (cached until a loaded version changes)."""
    from fastapi.openapi.utils import get_openapi

    lock = threading.Lock()
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        state: ServiceState = app.state.service
        current = {name: state.cache.get(name) for name in state.served}
        key = json.dumps({n: m.version if m else None for n, m in current.items()})
        with lock:
            if cache.get("key") == key:
                document: dict[str, Any] = cache["document"]
                return document
            base = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            document = complete(base, state, current)
            from mlops.serving.auth import document as document_keys

            document_keys(document, app.state.api_keys)
            cache.update(key=key, document=document)
            app.openapi_schema = document
            return document

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any], state: ServiceState, current: dict[str, LoadedModel | None]) -> dict[str, Any]:
    """Add the shared error bodies and one exact `POST /predict/<use case>` per served use case."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI's own 422 entries would document pydantic's error shape, which these routes never answer.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(FieldError=FIELD_ERROR, FieldErrors=FIELD_ERRORS, Error=ERROR, MlflowError=MLFLOW_ERROR)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if "422" in responses and "$ref" in json.dumps(responses["422"]):
                responses["422"] = error_responses(422)["422"]
    served = state.served
    paths = document.setdefault("paths", {})
    for path in ("/predict/{use_case}", "/invocations/{use_case}"):
        for operation in paths.get(path, {}).values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "use_case":
                    # Unknown names are still answered (404) and documented; the enum says what is served.
                    parameter["schema"] = {"type": "string", "enum": served}
    generic = paths.get("/predict", {}).get("post")
    if generic is not None:
        props = _request_body_schema(generic).get("properties", {})
        if "use_case" in props:
            props["use_case"] = {**props["use_case"], "enum": served}
    for name in served:
        use_case = state.cache.use_cases[name]
        model = current.get(name)
        schemas.update(use_case_schemas(use_case, model, state.config.max_records))
        paths[f"/predict/{name}"] = {"post": predict_operation(use_case, model)}
    schemas["PredictResponse"] = {"anyOf": [{"$ref": REF + _schema_name(n, "Response")} for n in served]}
    schemas.update(Ready=READY, LabelsWritten=LABELS_WRITTEN, Invocation=INVOCATION)
    _document_fixed_routes(paths)
    return document


READY = {
    "type": "object",
    "required": ["ready", "missing", "errors"],
    "properties": {
        "ready": {"type": "boolean"},
        "missing": {"type": "array", "items": {"type": "string"}, "description": "Use cases with no model loaded."},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
LABELS_WRITTEN = {
    "type": "object",
    "required": ["use_case", "written", "replaced", "unknown_ids"],
    "properties": {
        "use_case": {"type": "string"},
        "written": {"type": "integer", "minimum": 0},
        "replaced": {"type": "integer", "minimum": 0},
        "unknown_ids": {"type": "array", "items": {"type": "string"}},
    },
}
INVOCATION = {
    "type": "object",
    "required": ["predictions"],
    "additionalProperties": False,
    "properties": {"predictions": {"type": "array", "items": {"type": ["number", "integer", "string", "boolean"]}}},
    "description": "As `mlflow models serve` answers.",
}


def _document_fixed_routes(paths: dict[str, Any]) -> None:
    """Statuses and bodies of the hand-written routes that FastAPI cannot see (they answer Responses)."""
    for ready in (paths.get("/ready", {}).get("get"), paths.get("/ping", {}).get("get")):
        if ready is None:
            continue
        ready["responses"] = {
            "200": _response("Every served use case has its model loaded", "Ready"),
            "503": _response("A model is missing (`missing` names the use cases, `errors` says why)", "Ready"),
        }
    for path in ("/labels", "/labels/{use_case}"):
        operation = paths.get(path, {}).get("post")
        if operation is not None:
            statuses = (400, 404, 413, 415, 422, 503) if "{" in path else (400, 413, 415, 422, 503)
            operation["responses"] = {
                "200": _response("Labels written; `unknown_ids` have no logged prediction (yet)", "LabelsWritten"),
                **error_responses(*statuses),
            }
    for path in ("/invocations", "/invocations/{use_case}"):
        operation = paths.get(path, {}).get("post")
        if operation is not None:
            refusals = (400, 404, 413, 415, 503) if "{" in path else (400, 413, 415, 503)
            operation["responses"] = {
                "200": _response('`{"predictions": [...]}`, as `mlflow models serve`', "Invocation"),
                **error_responses(*refusals, schema="MlflowError"),
            }


def _request_body_schema(operation: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = (
        operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    )
    return schema


def predict_operation(use_case: UseCase, model: LoadedModel | None) -> dict[str, Any]:
    name = use_case.name
    version = f"version {model.version} of {model.model_name}" if model else "no version loaded yet"
    return {
        "tags": [name],
        "summary": f"Predict {name} with its @champion ({version})",
        "description": (
            f"{use_case.description}\n\nThe body follows the model's MLflow signature; `serving.missing` is "
            f"`{use_case.serving.missing}`. A categorical value outside its `enum` (the expectation suite's domain) "
            "is still answered and logged, so drift monitoring sees it; the schema lists the known values."
        ),
        "operationId": f"predict_{name}",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"{REF}{_schema_name(name, 'Request')}"},
                    "example": example_body(use_case, model),
                }
            },
        },
        "responses": {
            "200": _response("The predictions, in the order of the records", _schema_name(name, "Response")),
            **error_responses(*PREDICT_ERRORS),
        },
    }


def _schema_name(use_case: str, what: str) -> str:
    return "".join(part.capitalize() for part in use_case.split("_")) + what


def use_case_schemas(use_case: UseCase, model: LoadedModel | None, max_records: int) -> dict[str, Any]:
    """The `<UseCase>Record`, `<UseCase>Request` and `<UseCase>Response` component schemas."""
    name = use_case.name
    record_ref = {"$ref": REF + _schema_name(name, "Record")}
    record = record_schema(use_case, model)
    common = {
        "use_case": {"type": "string", "const": name, "description": "May repeat the path's use case."},
        "source": {"type": "string", "enum": ["online", "replay"], "default": "online"},
    }
    single = {
        "type": "object",
        "title": "one record",
        "additionalProperties": False,
        "required": ["record"],
        "properties": {
            "record": record_ref,
            "id": _id_schema(),
            "event_time": _time_schema(),
            **common,
        },
    }
    batch = {
        "type": "object",
        "title": "a batch",
        "additionalProperties": False,
        "required": ["records"],
        "properties": {
            "records": {"type": "array", "minItems": 1, "maxItems": max_records, "items": record_ref},
            "ids": {
                "type": "array",
                "items": _id_schema(),
                "description": "One per record (same length as `records`); default: generated.",
            },
            "event_times": {
                "type": "array",
                "items": _time_schema(),
                "description": "One per record (same length as `records`); default: now.",
            },
            **common,
        },
    }
    return {
        _schema_name(name, "Record"): record,
        _schema_name(name, "Request"): {"oneOf": [single, batch]},
        _schema_name(name, "Response"): response_schema(use_case, model),
    }


def _id_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 200},
            {"type": "integer", "minimum": _LONG_MIN, "maximum": _LONG_MAX},
        ],
        "description": "A request id, to join labels later (POST /labels).",
    }


def _time_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": EVENT_TIME_PATTERN,
        "description": "The record's business time, ISO 8601, between 1900 and 2200; monitoring windows use it.",
        "examples": ["2011-05-02T08:00:00"],
    }


def _input_schema(use_case: UseCase, model: LoadedModel | None) -> InputSchema:
    from mlops.serving.schema import InputSchema

    if model is not None:
        return model.schema
    # No version loaded yet: the configured features, as the service would compile them without a signature.
    return InputSchema.from_signature(
        None, use_case.features.numeric, use_case.features.categorical, use_case.serving.missing, use_case.name
    )


def record_schema(use_case: UseCase, model: LoadedModel | None) -> dict[str, Any]:
    schema = _input_schema(use_case, model)
    domains = suite_domains(use_case)
    # A store-backed use case: the client sends the entity keys; the store's features are not the client's.
    from_store = set(use_case.feature_store.feature_names) if use_case.feature_store is not None else set()
    columns = [c for c in schema.columns if c.name not in from_store]
    properties = {c.name: column_schema(c, domains.get(c.name)) for c in columns}
    required = [c.name for c in columns if c.required]
    source = f"the signature of version {model.version}" if model else "the configured features (no model loaded)"
    if use_case.feature_store is not None:
        for key in use_case.feature_store.entity_keys:
            properties[key] = {"type": "string", "minLength": 1, "description": "Entity key of the feature store."}
            required.append(key)
        source += f"; {', '.join(sorted(from_store))} come from the feature store"
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
        "description": f"One record's features, from {source}.",
    }


def column_schema(column: Column, domain: list[Any] | None) -> dict[str, Any]:
    if column.kind == "double":
        out: dict[str, Any] = {"type": "number", "minimum": -_DOUBLE_MAX, "maximum": _DOUBLE_MAX}
    elif column.kind == "long":
        out = {"type": "integer", "minimum": _LONG_MIN, "maximum": _LONG_MAX}
    elif column.kind == "string":
        out = {"type": "string"}
        if domain:
            out["enum"] = [v for v in domain if type(v) is str]
    elif column.kind == "bool":
        out = {"type": "boolean"}
    else:
        out = {"type": ["string", "number", "boolean"]}
    if column.nullable:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def response_schema(use_case: UseCase, model: LoadedModel | None) -> dict[str, Any]:
    classes = list(model.classes) if model is not None and model.classes is not None else None
    if use_case.task == "classification":
        label: dict[str, Any] = {"enum": classes} if classes else {"type": ["integer", "string", "boolean"]}
    else:
        label = {"type": "number"}
    properties: dict[str, Any] = {
        "use_case": {"type": "string", "const": use_case.name},
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "role": {
            "type": "string",
            "enum": [ROLE_CHAMPION, ROLE_CANARY],
            "description": "Which alias answered: the champion, or the canary for the requests routed to it "
            "(deployment.strategy: canary). A shadow never answers.",
        },
        "ids": {"type": "array", "items": {"type": "string"}, "description": "Sent or generated, one per record."},
        "predictions": {"type": "array", "items": label},
    }
    required = list(properties)
    if use_case.task == "classification":
        n = len(classes) if classes else None
        row: dict[str, Any] = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}}
        if n:
            row.update(minItems=n, maxItems=n)
        properties["classes"] = {"type": "array", "items": label, "description": "The class labels, in order."}
        properties["probabilities"] = {
            "type": "array",
            "items": row,
            "description": "One array per record, in the order of `classes`.",
        }
        required += ["classes", "probabilities"]
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


def example_record(use_case: UseCase, model: LoadedModel | None) -> dict[str, Any]:
    """A record that validates: the suite's first known category, the middle of its numeric range."""
    schema = _input_schema(use_case, model)
    domains = suite_domains(use_case)
    ranges = suite_ranges(use_case)
    out: dict[str, Any] = {}
    from_store = set(use_case.feature_store.feature_names) if use_case.feature_store is not None else set()
    for column in schema.columns:
        if column.name in from_store:
            continue
        low, high = ranges.get(column.name, (0, 1))
        if column.kind == "double":
            out[column.name] = round((low + high) / 2, 3)
        elif column.kind == "long":
            out[column.name] = int((low + high) // 2)
        elif column.kind == "string":
            out[column.name] = next((v for v in domains.get(column.name, []) if type(v) is str), "value")
        elif column.kind == "bool":
            out[column.name] = False
        else:
            out[column.name] = None if column.nullable else 0
    if use_case.feature_store is not None:
        out |= example_entity_keys(use_case, out)[0]
    return out


def example_body(use_case: UseCase, model: LoadedModel | None) -> dict[str, Any]:
    """The operation's example request: one record, its id, and for a store-backed use case its event time, the
    hour its keys name (the skew check looks the keys up in the offline store as of the event time)."""
    record = example_record(use_case, model)
    body: dict[str, Any] = {"records": [record], "ids": ["r-1"]}
    if use_case.feature_store is not None:
        body["event_times"] = [example_entity_keys(use_case, record)[1]]
    return body


def example_entity_keys(use_case: UseCase, record: dict[str, Any]) -> tuple[dict[str, str], str]:
    """Entity keys the store holds once `materialize_features` has run, and their event time (ISO).

    `hour` is the last day of the training window at the record's `feature_store.hour_column` hour, so the
    example's calendar and key agree and the key is one training joined; without a training window end, today.
    A key nothing here can derive is a placeholder, which the service answers as an unknown entity (imputed
    under `serving.missing: impute`).
    """
    import contextlib
    from datetime import UTC, datetime, timedelta

    from mlops.features.keys import hour_of_day

    section = use_case.feature_store
    assert section is not None
    day = (use_case.training.window.end or datetime.now(UTC).date()) - timedelta(days=1)
    hour = 12
    if section.hour_column and record.get(section.hour_column) is not None:
        with contextlib.suppress(ValueError):  # a label that is no hour: noon
            hour = hour_of_day(record[section.hour_column])
    at = f"{day:%Y-%m-%d}T{hour:02d}"
    keys = {key: at if key == "hour" else f"<{key}>" for key in section.entity_keys}
    return keys, f"{at}:00:00"


def _suite_expectations(use_case: UseCase) -> list[dict[str, Any]]:
    """The suite's expectations read as JSON (no Great Expectations import in the service); [] if none."""
    from mlops.settings import get_settings

    path = Path(get_settings().great_expectations_dir) / "expectations" / f"{use_case.suite_name}.json"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return []
    cached = _SUITES.get(str(path))
    if cached is None or cached[0] != stamp:
        try:
            expectations = json.loads(path.read_text()).get("expectations", [])
        except (OSError, ValueError):
            expectations = []
        cached = (stamp, expectations)
        _SUITES[str(path)] = cached
    return cached[1]


_SUITES: dict[str, tuple[int, list[dict[str, Any]]]] = {}


def suite_domains(use_case: UseCase) -> dict[str, list[Any]]:
    """Column -> the value set of its `expect_column_values_to_be_in_set` expectation."""
    out: dict[str, list[Any]] = {}
    for expectation in _suite_expectations(use_case):
        kwargs = expectation.get("kwargs", {})
        values = kwargs.get("value_set")
        if expectation.get("type") == "expect_column_values_to_be_in_set" and isinstance(values, list):
            out[str(kwargs.get("column"))] = values
    return out


def suite_ranges(use_case: UseCase) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for expectation in _suite_expectations(use_case):
        kwargs = expectation.get("kwargs", {})
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if (
            expectation.get("type") == "expect_column_values_to_be_between"
            and isinstance(low, int | float)
            and isinstance(high, int | float)
        ):
            out[str(kwargs.get("column"))] = (float(low), float(high))
    return out
