"""MLflow's scoring protocol: `POST /invocations` and `POST /invocations/{use_case}`, and `GET /ping`.

A client or script written for `mlflow models serve` works unchanged: the body is one of
MLflow's JSON formats (`dataframe_split`, `dataframe_records`, `instances`, `inputs`), the
answer is `{"predictions": [...]}` and an error is `{"error_code", "message"}` (with a
`detail` naming the fields). The rows go through the same validation, micro-batch and
prediction log as `POST /predict` (source "online"), so every prediction is logged.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlops.serving.routes import json_response
from mlops.serving.routes.predict import (
    ROLE_HEADER,
    ROUTING_KEY_HEADER,
    VERSION_HEADER,
    observe_answer,
    read_json_body,
    score,
)
from mlops.serving.schema import RequestError
from mlops.serving.state import ServiceState, service_state

router = APIRouter()

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# MLflow passes `params` to the model's predict; a scikit-learn pipeline takes none, so it is ignored.
_IGNORED_KEYS = ("params",)
_STATUS_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "BAD_REQUEST", 415: "BAD_REQUEST"}
_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "Exactly one of MLflow's formats; the columns are the model's signature "
                "(POST /predict/<use case> documents them).",
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "required": ["columns", "data"],
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": {"type": "array"}},
                            "index": {"type": "array"},
                        },
                    },
                    "dataframe_records": {"type": "array", "items": {"type": "object"}},
                    "instances": {"type": "array", "items": {"type": "object"}},
                    "inputs": {"anyOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]},
                    "params": {"type": "object", "description": "Accepted and ignored (scikit-learn takes none)."},
                },
            },
            "example": {"dataframe_split": {"columns": ["temp", "season"], "data": [[12.3, "spring"]]}},
        }
    },
}


@router.get("/ping", summary="MLflow's liveness probe: 200 once every served use case has its model")
async def ping(request: Request) -> Response:
    state = service_state(request)
    missing = [name for name in state.batchers if state.cache.get(name) is None]
    body = {"ready": not missing, "missing": missing, "errors": state.cache.status()["errors"]}
    return json_response(503 if missing else 200, body)


@router.post(
    "/invocations",
    summary="MLflow scoring protocol for the one served use case (`mlflow models serve` compatible)",
    openapi_extra={"requestBody": _BODY},
)
async def invocations_any(request: Request) -> Response:
    state = service_state(request)
    if len(state.served) != 1:
        return _error(
            400,
            f"this service serves several use cases, {state.served}; POST to /invocations/<use case>",
            [{"loc": ["path"], "msg": f"name one of {state.served}", "type": "missing"}],
        )
    return await _invoke(state, state.served[0], request)


@router.post(
    "/invocations/{use_case}",
    summary="MLflow scoring protocol for one use case (`mlflow models serve` compatible)",
    openapi_extra={"requestBody": _BODY},
)
async def invocations(use_case: str, request: Request) -> Response:
    return await _invoke(service_state(request), use_case, request)


async def _invoke(state: ServiceState, use_case: str, request: Request) -> Response:
    if use_case not in state.batchers:
        msg = f"unknown use case {use_case!r}; served: {state.served}"
        return _error(404, msg, [{"loc": ["path", "use_case"], "msg": msg, "type": "not_found"}])
    model = state.cache.get(use_case)
    if model is None:
        reason = state.cache.status()["errors"].get(use_case, "the model is still loading")
        return _error(503, f"no @{state.config.alias} model loaded for {use_case}: {reason}")
    try:
        payload = await read_json_body(request, state)
        key, records = to_records(payload, client_columns(state, use_case, model.schema.names))
    except RequestError as exc:
        return _refusal(exc.status, exc.detail)
    started = time.perf_counter()
    answer = await score(state, use_case, model, {"records": records}, request.headers.get(ROUTING_KEY_HEADER))
    status = answer.status_code if isinstance(answer, Response) else 200
    observe_answer(state, use_case, model, answer, status, time.perf_counter() - started)
    if isinstance(answer, Response):
        body = json.loads(bytes(answer.body))
        detail = body["detail"] if isinstance(body.get("detail"), list) else None
        if detail:
            for item in detail:
                loc = item.get("loc", [])
                if loc[:2] == ["body", "records"]:
                    item["loc"] = ["body", key, *loc[2:]]
            return _refusal(answer.status_code, detail)
        return _error(answer.status_code, str(body.get("detail")))
    response = json_response(200, {"predictions": answer["predictions"]})
    # MLflow's body has no room for it: which version answered (a canary or the champion) goes in headers.
    response.headers[VERSION_HEADER], response.headers[ROLE_HEADER] = str(answer["model_version"]), answer["role"]
    return response


def client_columns(state: ServiceState, use_case: str, names: list[str]) -> list[str]:
    """The columns of a row sent without names: the signature's, or for a store-backed use case its entity keys
    and the signature's columns the store does not give (the client never sends those; a 422 if it does)."""
    online = state.online.get(use_case)
    if online is None:
        return names
    return [*online.entity_keys, *(n for n in names if n not in online.names)]


def to_records(payload: Any, names: list[str]) -> tuple[str, list[Any]]:
    """The format key and the records of an MLflow scoring body; a 400 naming what is wrong."""

    def refuse(loc: list[str | int], msg: str) -> RequestError:
        return RequestError(400, [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])

    if type(payload) is not dict:
        raise refuse([], f"send a JSON object with exactly one of {list(FORMATS)}")
    keys = [k for k in payload if k in FORMATS]
    other = [k for k in payload if k not in FORMATS and k not in _IGNORED_KEYS]
    if len(keys) != 1 or other:
        raise refuse([], f"send exactly one of {list(FORMATS)} (and optionally params); got keys {list(payload)}")
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        return key, _split(data, names, refuse)
    if type(data) is list:
        if all(type(row) is dict for row in data):
            return key, data
        if key in ("inputs", "instances") and all(type(row) is list for row in data):
            return key, _positional(data, names, [key], refuse)
        raise refuse([key], "must be a list of records (one object per row)")
    if type(data) is dict and key in ("inputs", "instances"):
        return key, _columns(data, [key], refuse)
    raise refuse(
        [key], "must be a list of records" + (" or an object of columns" if key != "dataframe_records" else "")
    )


def _split(data: Any, names: list[str], refuse: Any) -> list[dict[str, Any]]:
    if type(data) is not dict or type(data.get("data")) is not list:
        raise refuse(["dataframe_split"], 'must be {"columns": [...], "data": [[...], ...]}')
    unknown = set(data) - {"columns", "data", "index"}
    if unknown:
        raise refuse(["dataframe_split", sorted(unknown)[0]], "unknown key; send columns, data and optionally index")
    columns = data.get("columns")
    if columns is None:
        return _positional(data["data"], names, ["dataframe_split", "data"], refuse)
    if type(columns) is not list or not all(type(c) is str for c in columns):
        raise refuse(["dataframe_split", "columns"], "must be a list of column names")
    rows = data["data"]
    out = []
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != len(columns):
            raise refuse(["dataframe_split", "data", i], f"must be a list of {len(columns)} values, one per column")
        out.append(dict(zip(columns, row, strict=True)))
    return out


def _positional(rows: list[Any], names: list[str], loc: list[str | int], refuse: Any) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != len(names):
            raise refuse([*loc, i], f"without column names a row must hold {len(names)} values in the order {names}")
        out.append(dict(zip(names, row, strict=True)))
    return out


def _columns(data: dict[str, Any], loc: list[str | int], refuse: Any) -> list[dict[str, Any]]:
    lengths = {len(v) if type(v) is list else -1 for v in data.values()}
    if -1 in lengths or len(lengths) != 1:
        raise refuse(loc, "an object of columns maps each column to a list of values, all of one length")
    (n,) = lengths
    return [{name: values[i] for name, values in data.items()} for i in range(n)]


def _error(status: int, message: str, detail: list[dict[str, Any]] | None = None) -> Response:
    body: dict[str, Any] = {"error_code": _STATUS_CODES.get(status, "TEMPORARILY_UNAVAILABLE"), "message": message}
    if detail:
        body["detail"] = detail
    return json_response(status, body)


def _refusal(status: int, detail: list[dict[str, Any]]) -> Response:
    # MLflow answers every input problem 400 BAD_REQUEST; the field errors stay in `detail`.
    status = 400 if status == 422 else status
    message = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail[:5])
    return _error(status, message, detail)
