"""Ground truth in: `POST /labels/{use_case}`, and `POST /labels` with the use case in the body.

A batch of `{id, label, [event_time]}` is validated against the use case's config (type,
class set, duplicates, a label before its prediction) and written through
`mlops.predictionlog.labels.write_labels`: a re-sent label replaces the earlier one, and
ids the log does not hold yet are stored, reported in `unknown_ids`, and joined once
their prediction is logged. A refused batch is a 422 naming each bad row and field, and
nothing of it is written. The write runs in a worker thread: it reads and writes files.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mlops.serving.routes import json_body, json_response
from mlops.serving.routes.predict import (
    _drop_use_case_matching,
    _unknown_use_case,
    _use_case_of,
    read_json_body,
)
from mlops.serving.schema import RequestError
from mlops.serving.state import ServiceState, service_state

router = APIRouter()

_ITEM_KEYS = ("id", "label", "event_time")
_LABELS_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["labels"],
    "properties": {
        "use_case": {
            "type": "string",
            "description": "POST /labels only: the use case the labels belong to; optional when the service "
            "serves one use case. On /labels/{use_case} it may repeat the path's.",
        },
        "labels": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "label"],
                "properties": {
                    "id": {"type": ["string", "integer"], "description": "The request id the prediction answered."},
                    "label": {
                        "type": ["number", "integer", "string"],
                        "description": "The observed outcome: a finite number (regression) or one of the classes.",
                    },
                    "event_time": {
                        "type": "string",
                        "format": "date-time",
                        "description": "Optional; default: the prediction's event time. Not before it.",
                    },
                },
            },
        },
    },
}
_LABELS_EXAMPLE = {"labels": [{"id": "r-1", "label": 42}, {"id": "r-2", "label": 17, "event_time": "2011-05-02T09:00"}]}
_LABELS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "`{use_case, written, replaced, unknown_ids}`"},
    400: {"description": "Malformed JSON"},
    413: {"description": "Body or batch too large"},
    422: {"description": "Invalid labels; `detail[].loc` names each row and field; nothing was written"},
    503: {"description": "The labels store cannot be written now; retry"},
}


@router.post(
    "/labels",
    summary="Write ground truth for logged predictions; the body's `use_case` names the use case",
    openapi_extra=json_body(_LABELS_BODY_SCHEMA, {"use_case": "bike_sharing", **_LABELS_EXAMPLE}),
    responses=_LABELS_RESPONSES,
)
async def post_labels_any(request: Request) -> Response:
    state = service_state(request)
    try:
        payload = await read_json_body(request, state)
        use_case = _use_case_of(payload, state.served)
    except RequestError as exc:
        return json_response(exc.status, exc.body())
    if use_case not in state.cache.use_cases:
        return _unknown_use_case(state, ["body", "use_case"], use_case, 422)
    return await _write(state, use_case, payload)


@router.post(
    "/labels/{use_case}",
    summary="Write ground truth for the use case's logged predictions",
    openapi_extra=json_body(_LABELS_BODY_SCHEMA, _LABELS_EXAMPLE),
    responses={**_LABELS_RESPONSES, 404: {"description": "Unknown use case"}},
)
async def post_labels(use_case: str, request: Request) -> Response:
    state = service_state(request)
    if use_case not in state.cache.use_cases:
        return _unknown_use_case(state, ["path", "use_case"], use_case, 404)
    try:
        payload = await read_json_body(request, state)
        _drop_use_case_matching(payload, use_case)
    except RequestError as exc:
        return json_response(exc.status, exc.body())
    return await _write(state, use_case, payload)


async def _write(state: ServiceState, use_case: str, payload: Any) -> Response:
    from mlops.predictionlog.labels import LabelError, write_labels
    from mlops.predictionlog.stores import PredictionLogError

    try:
        ids, labels, times = _items(payload, state.config.max_records)
    except RequestError as exc:
        return json_response(exc.status, exc.body())
    try:
        result = await run_in_threadpool(
            write_labels, state.cache.use_cases[use_case], ids, labels, times, log_uri=state.config.log_uri
        )
    except LabelError as exc:
        detail = [
            {
                "loc": ["body", "labels"] if p.row is None else ["body", "labels", p.row, p.field],
                "msg": p.message if p.request_id is None else f"id {p.request_id!r}: {p.message}",
                "type": "value_error",
            }
            for p in exc.problems
        ]
        return json_response(422, {"detail": detail, "message": str(exc)})
    except PredictionLogError as exc:
        return json_response(503, {"detail": f"labels not written: {exc}; retry"})
    return json_response(200, {"use_case": use_case, **result.to_dict()})


def _items(payload: Any, max_records: int) -> tuple[list[Any], list[Any], list[Any]]:
    """ids, labels and event times of a `{"labels": [...]}` body; a 422 naming the field for a wrong shape."""
    if type(payload) is not dict or "labels" not in payload:
        msg = 'send a JSON object {"labels": [{"id": "...", "label": ...}, ...]}'
        raise RequestError(422, [{"loc": ["body", "labels"], "msg": msg, "type": "missing"}])
    extra = sorted(set(payload) - {"labels"})
    if extra:
        msg = f"unknown field {extra[0]!r}; the body holds `labels` (and `use_case` on POST /labels)"
        raise RequestError(422, [{"loc": ["body", extra[0]], "msg": msg, "type": "extra_forbidden"}])
    items = payload["labels"]
    if type(items) is not list or not items:
        msg = "must be a non-empty list of {id, label, [event_time]} objects"
        raise RequestError(422, [{"loc": ["body", "labels"], "msg": msg, "type": "list_type"}])
    if len(items) > max_records:
        msg = f"{len(items)} labels exceed the limit of {max_records} per request; split the batch"
        raise RequestError(413, [{"loc": ["body", "labels"], "msg": msg, "type": "too_large"}])
    problems = []
    for i, item in enumerate(items):
        if type(item) is not dict:
            problems.append({"loc": ["body", "labels", i], "msg": "must be an object {id, label}", "type": "dict_type"})
            continue
        for key in sorted(set(item) - set(_ITEM_KEYS)):
            msg = f"unknown field; a label holds {', '.join(_ITEM_KEYS)}"
            problems.append({"loc": ["body", "labels", i, key], "msg": msg, "type": "extra_forbidden"})
        for key in ("id", "label"):
            if key not in item:
                problems.append({"loc": ["body", "labels", i, key], "msg": "field required", "type": "missing"})
        if type(item.get("id")) not in (str, int, type(None)):
            msg = "must be a string (the request id the prediction was answered with)"
            problems.append({"loc": ["body", "labels", i, "id"], "msg": msg, "type": "string_type"})
        if type(item.get("label")) not in (str, int, float, bool, type(None)):
            msg = "must be a number or a class label, not an object or a list"
            problems.append({"loc": ["body", "labels", i, "label"], "msg": msg, "type": "value_error"})
        if type(item.get("event_time")) not in (str, type(None)):
            msg = "must be an ISO date-time string such as 2011-05-01T13:00, or left out"
            problems.append({"loc": ["body", "labels", i, "event_time"], "msg": msg, "type": "datetime_type"})
    if problems:
        raise RequestError(422, problems)
    return (
        [item["id"] for item in items],
        [item["label"] for item in items],
        [item.get("event_time") for item in items],
    )
