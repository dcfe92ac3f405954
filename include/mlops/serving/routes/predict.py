"""Predictions: `POST /predict/{use_case}`, and `POST /predict` with the use case in the body.

The hot path reads the body with a size cap, decodes it with orjson, validates it with
the model's compiled schema and joins a micro-batch (serving/microbatch.py): every
request of the batch window is predicted with one `pipeline.predict` call, because a
scikit-learn pipeline costs nearly the same for 1 row as for 100. The prediction is then
queued for the log writer thread and the response goes out. With a shadow (deployment.strategy:
shadow), the micro-batcher hands the same rows to the shadow worker after the answers are set;
nothing here waits for it. With a canary (strategy: canary), a request whose routing key
(`X-Routing-Key`, else its first id) falls in the canary's fraction is answered by `@canary`
through its own batcher; if the canary fails it, the champion answers it instead and the
failure counts against the canary's guard (serving/canary.py), so a bad canary never fails
a client. Every answered request is counted and timed for /metrics, and the guard reads the
same times.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlops.naming import ROLE_CANARY, ROLE_CHAMPION
from mlops.serving.canary import goes_to_canary
from mlops.serving.logentry import LogEntry
from mlops.serving.microbatch import VersionChanged
from mlops.serving.online_features import StoreLookup, StoreRequestError
from mlops.serving.openapi import PREDICT_ERRORS, error_responses
from mlops.serving.routes import json_body, json_response
from mlops.serving.schema import RequestError, parse_json
from mlops.serving.shadow import RequestContext
from mlops.serving.state import service_state

if TYPE_CHECKING:
    from mlops.serving.models import LoadedModel
    from mlops.serving.spoolwriter import LogWriter
    from mlops.serving.state import ServiceState

router = APIRouter()
log = logging.getLogger("mlops.serving")
ROUTING_KEY_HEADER = "x-routing-key"
"""A request header naming who the request is for (a user or session id): the same key, the same side of a
canary. Without it, the request's first id routes it."""
VERSION_HEADER, ROLE_HEADER = "x-model-version", "x-model-role"
"""/invocations answers in MLflow's shape, with no room for them in the body: which version answered."""

_PREDICT_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Either `records` (a batch) or `record` (one). Feature names and types: GET /models (signature).",
    "properties": {
        "use_case": {
            "type": "string",
            "description": "POST /predict only: the use case whose @champion answers; optional when the service "
            "serves one use case. On /predict/{use_case} it may repeat the path's.",
        },
        "records": {"type": "array", "items": {"type": "object"}, "description": "Feature objects, one per row."},
        "record": {"type": "object", "description": "One feature object."},
        "ids": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Optional request ids, one per record (joins labels later).",
        },
        "id": {"type": "string"},
        "event_times": {
            "type": "array",
            "items": {"type": "string", "format": "date-time"},
            "description": "Optional business time per record (monitoring windows use it); default: now.",
        },
        "event_time": {"type": "string", "format": "date-time"},
        "source": {"type": "string", "enum": ["online", "replay"], "default": "online"},
    },
}
_PREDICT_EXAMPLE = {
    "records": [
        {
            "temp": 12.3,
            "atemp": 11.0,
            "hum": 60.0,
            "windspeed": 11.0,
            "season": "spring",
            "hr": "8am",
            "holiday": "No",
            "weekday": "Mon",
            "workingday": "Yes",
            "weathersit": "Clear",
        }
    ],
    "ids": ["r-1"],
    "event_times": ["2011-05-02T08:00:00"],
}
_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`{use_case, model_name, model_version, role, ids, predictions}` (`model_version` and "
        "`role`: the version that answered, `champion` or `canary`); a classifier adds `classes` "
        "(its class labels) and `probabilities` (one array per record, in the order of `classes`)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictResponse"}}},
    },
    **error_responses(*PREDICT_ERRORS),
}


@router.post(
    "/predict",
    summary="Predict one record or a batch; the body's `use_case` names the model (optional with one use case)",
    openapi_extra=json_body(_PREDICT_BODY_SCHEMA, {"use_case": "bike_sharing", **_PREDICT_EXAMPLE}),
    responses=_PREDICT_RESPONSES,
)
async def predict_any(request: Request) -> Response:
    state = service_state(request)
    try:
        payload = await read_json_body(request, state)
        use_case = _use_case_of(payload, state.served)
    except RequestError as exc:
        return json_response(exc.status, exc.body())
    if use_case not in state.batchers:
        return _unknown_use_case(state, ["body", "use_case"], use_case, 422)
    model = state.cache.get(use_case)
    if model is None:
        return _not_loaded(state, use_case)
    return await _answer(state, use_case, model, payload, request.headers.get(ROUTING_KEY_HEADER))


@router.post(
    "/predict/{use_case}",
    summary="Predict one record or a batch with the use case's @champion",
    openapi_extra=json_body(_PREDICT_BODY_SCHEMA, _PREDICT_EXAMPLE),
    responses=_PREDICT_RESPONSES,
)
async def predict(use_case: str, request: Request) -> Response:
    state = service_state(request)
    if use_case not in state.batchers:
        return _unknown_use_case(state, ["path", "use_case"], use_case, 404)
    model = state.cache.get(use_case)
    if model is None:
        return _not_loaded(state, use_case)
    try:
        payload = await read_json_body(request, state)
        _drop_use_case_matching(payload, use_case)
    except RequestError as exc:
        return json_response(exc.status, exc.body())
    return await _answer(state, use_case, model, payload, request.headers.get(ROUTING_KEY_HEADER))


async def _answer(
    state: ServiceState, use_case: str, model: LoadedModel, payload: Any, routing_key: str | None = None
) -> Response:
    """Validate, predict (micro-batched), queue for the log, answer; count and time it."""
    started = time.perf_counter()
    answer = await score(state, use_case, model, payload, routing_key)
    response = answer if isinstance(answer, Response) else json_response(200, answer)
    observe_answer(state, use_case, model, answer, response.status_code, time.perf_counter() - started)
    return response


def observe_answer(
    state: ServiceState,
    use_case: str,
    model: LoadedModel,
    answer: dict[str, Any] | Response,
    status: int,
    seconds: float,
) -> None:
    """Count and time an answered request for /metrics, and for the canary's guard."""
    # The version that answered: the canary's, or another than `model` after a hot swap mid-request.
    if isinstance(answer, dict):
        version, role = str(answer["model_version"]), str(answer["role"])
    else:
        version, role = model.version, ROLE_CHAMPION
    state.metrics.observe_request(use_case, version, role, status, seconds)
    guard = state.guards.get(use_case)
    if guard is not None:
        if role == ROLE_CANARY:
            guard.observe_canary(version, seconds, failed=status >= 500)
        else:
            guard.observe_champion(seconds)


async def score(
    state: ServiceState, use_case: str, model: LoadedModel, payload: Any, routing_key: str | None = None
) -> dict[str, Any] | Response:
    """Validate, predict (micro-batched), queue for the log: the answer's body, or the refusal.

    /invocations (routes/invocations.py) scores through here too, so its rows are validated
    and logged like every other prediction.
    """
    lookup = None
    try:
        online = state.online.get(use_case)
        if online is None:
            parsed = model.schema.parse(payload, state.config.max_records)
        else:
            # A store-backed use case: the entity keys checked and taken out here, the store's features
            # filled in by the micro-batch (one read for all its requests) and validated there.
            payload, lookup = online.prepare(payload)
            parsed = model.schema.with_store_columns(online.names).parse(payload, state.config.max_records)
    except RequestError as exc:
        return json_response(exc.status, exc.body())
    entity_keys = lookup.entity_rows if lookup is not None else None
    # Ids and event times before predicting: the shadow logs its rows under the same ones.
    ids = parsed.ids or new_ids(len(parsed.rows))
    times = parsed.event_times
    if times is None:
        now = datetime.now(UTC).replace(tzinfo=None)
        times = [now] * len(ids)
    context = RequestContext(ids, times, parsed.source)
    rows, role = parsed.rows, ROLE_CHAMPION
    canary = _canary_for(state, use_case, routing_key or ids[0])
    try:
        answered = await _predict_canary(state, use_case, canary, payload, context, lookup) if canary else None
    except StoreRequestError as exc:
        return json_response(exc.status, exc.body())
    if answered is not None:
        used, predictions, probabilities, rows = answered
        role = ROLE_CANARY
        _log(state.writer, used, rows, context, predictions, probabilities, role, entity_keys)
        return _body(use_case, used, role, ids, predictions, probabilities)
    try:
        used, predictions, probabilities = await state.batchers[use_case].predict(model, rows, context, lookup)
    except VersionChanged:
        return json_response(503, {"detail": "the model changed its input columns during this request; retry"})
    except RequestError as exc:  # the store could not complete this request (serving/online_features.py)
        return json_response(exc.status, exc.body())
    except (ValueError, TypeError, KeyError) as exc:
        # The pipeline refused values the signature allowed (e.g. an unknown category).
        return json_response(
            422,
            {"detail": [{"loc": ["body"], "msg": f"the model rejected the input: {exc}", "type": "model_error"}]},
        )
    bad = _non_finite(predictions, probabilities)
    if bad is not None:
        # JSON has no NaN: the answer would say `null`, a 200 with no prediction. Refuse, naming the record.
        loc = ["body", "record"] if "record" in payload else ["body", "records", bad]
        msg = (
            "the model returned no finite prediction for this record (NaN or infinity): a null its pipeline "
            "does not impute, or values far outside the training range"
        )
        return json_response(422, {"detail": [{"loc": loc, "msg": msg, "type": "model_error"}]})
    _log(state.writer, used, rows, context, predictions, probabilities, role, entity_keys)
    return _body(use_case, used, role, ids, predictions, probabilities)


_UUID4_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_UUID4_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


def new_ids(n: int) -> list[str]:
    """`n` random version-4 UUIDs as 32 hex digits, what `uuid.uuid4().hex` gives, from one `os.urandom` call.

    Why not uuid4 per row: at 100 rows a request it was 6-8 % of the service's samples (py-spy,
    docs/benchmarks.md), ~6 us a row of Python; here the version and variant bits of every id are set
    by two C-level `translate` calls over the random bytes.
    """
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_UUID4_VERSION)
    raw[8::16] = raw[8::16].translate(_UUID4_VARIANT)
    text = raw.hex()
    return [text[i : i + 32] for i in range(0, 32 * n, 32)]


def _canary_for(state: ServiceState, use_case: str, key: str) -> LoadedModel | None:
    """The `@canary` version when this request's key falls in its fraction; None: the champion answers."""
    if use_case not in state.guards:
        return None
    found = state.cache.get_canary(use_case)
    if found is None or not goes_to_canary(key, found[1]):
        return None
    return found[0]


async def _predict_canary(
    state: ServiceState,
    use_case: str,
    canary: LoadedModel,
    payload: Any,
    context: RequestContext,
    lookup: StoreLookup | None = None,
) -> tuple[LoadedModel, list[Any], list[list[float]] | None, list[list[Any]]] | None:
    """The canary's answer, or None (counted against its guard) when it fails: the champion answers then."""
    started = time.perf_counter()
    try:
        # Usually the same columns as the champion's; a canary that reads others validates the request itself.
        schema = canary.schema if lookup is None else canary.schema.with_store_columns(lookup.online.names)
        parsed = schema.parse(payload, state.config.max_records)
        timeout = state.guards[use_case].rules.canary_timeout_ms / 1000
        batcher = state.canary_batchers[use_case]
        # asyncio.timeout, not wait_for: wait_for wraps the call in a Task, which starts a loop turn later, so
        # every canary request missed the batch it arrived with (py-spy and the bench: a 3x p99 under load).
        async with asyncio.timeout(timeout):
            used, predictions, probabilities = await batcher.predict(canary, parsed.rows, context, lookup)
        if _non_finite(predictions, probabilities) is not None:
            raise ValueError("no finite prediction (NaN or infinity)")
    except StoreRequestError:
        raise  # the store's answer, not the canary's failure
    except Exception as exc:
        state.metrics.canary_fallbacks.labels(use_case, canary.version).inc()
        state.guards[use_case].observe_canary(canary.version, time.perf_counter() - started, failed=True)
        log.warning("canary version %s of %s failed a request, the champion answered it: %s: %s",
                    canary.version, use_case, type(exc).__name__, exc)  # fmt: skip
        return None
    return used, predictions, probabilities, parsed.rows


def _body(
    use_case: str,
    used: LoadedModel,
    role: str,
    ids: list[str],
    predictions: list[Any],
    probabilities: list[list[float]] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "use_case": use_case,
        "model_name": used.model_name,
        "model_version": used.version,
        "role": role,
        "ids": ids,
        "predictions": predictions,
    }
    if probabilities is not None and used.classes is not None:
        # Arrays in the order of `classes` rather than one object per record: cheaper to build
        # and to encode, and the labels keep their JSON type (1, not "1").
        body["classes"] = list(used.classes)
        body["probabilities"] = probabilities
    return body


def _non_finite(predictions: list[Any], probabilities: list[list[float]] | None) -> int | None:
    """The first record whose prediction or probabilities are NaN or infinite; None when all are finite."""
    for i, value in enumerate(predictions):
        if type(value) is float and not math.isfinite(value):
            return i
    if probabilities is not None:
        for i, row in enumerate(probabilities):
            if not all(math.isfinite(p) for p in row):
                return i
    return None


def _unknown_use_case(state: ServiceState, loc: list[str], name: str, status: int) -> Response:
    msg = f"unknown use case {name!r}; served: {state.served}"
    return json_response(status, {"detail": [{"loc": loc, "msg": msg, "type": "not_found"}]})


def _not_loaded(state: ServiceState, use_case: str) -> Response:
    state.metrics.observe_request(use_case, "", ROLE_CHAMPION, 503, 0.0)
    reason = state.cache.status()["errors"].get(use_case, "the model is still loading")
    return json_response(503, {"detail": f"no @{state.config.alias} model loaded for {use_case}: {reason}"})


async def read_json_body(request: Request, state: ServiceState) -> Any:
    """The request's JSON body: 415 without a JSON Content-Type, 413 over the size limit, 400 if malformed."""
    require_json(request)
    return parse_json(await _read_body(request, state.config.max_body_bytes))


def require_json(request: Request) -> None:
    """A 415 unless the body is declared JSON: a form or text body would only fail later, less clearly."""
    declared = request.headers.get("content-type")
    media_type, _, params = (declared or "").partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if "charset" in params.lower() else "utf-8"
    if media_type.strip().lower() == "application/json" and charset in ("utf-8", "utf8"):
        return
    got = f"got {declared!r}" if declared else "none was sent"
    raise RequestError(
        415,
        [
            {
                "loc": ["header", "content-type"],
                "msg": f"send the body as JSON with 'Content-Type: application/json' (UTF-8); {got}",
                "type": "content_type",
            }
        ],
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body; a 413 as soon as its declared or streamed size passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(
                400, [{"loc": ["header", "content-length"], "msg": "not an integer", "type": "value_error"}]
            ) from None
        if size > limit:
            raise RequestError(
                413,
                [
                    {
                        "loc": ["body"],
                        "msg": f"body of {size} bytes exceeds the limit of {limit} bytes; split the batch",
                        "type": "too_large",
                    }
                ],
            )
        return await request.body()
    chunks = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(
                413,
                [
                    {
                        "loc": ["body"],
                        "msg": f"body exceeds the limit of {limit} bytes; split the batch",
                        "type": "too_large",
                    }
                ],
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _use_case_of(payload: Any, served: list[str]) -> str:
    """The use case a `POST /predict` body names (removing the key), or the only one served."""
    if type(payload) is not dict:
        raise RequestError(
            422,
            [
                {
                    "loc": ["body"],
                    "msg": 'send a JSON object: {"use_case": "...", "records": [{...}]} or {"record": {...}}',
                    "type": "dict_type",
                }
            ],
        )
    if "use_case" not in payload:
        if len(served) == 1:
            return served[0]
        raise RequestError(
            422,
            [
                {
                    "loc": ["body", "use_case"],
                    "msg": f"field required: this service serves several use cases, name one of {served} "
                    "(or POST to /predict/<use_case>)",
                    "type": "missing",
                }
            ],
        )
    named = payload.pop("use_case")
    if type(named) is not str:
        raise RequestError(
            422, [{"loc": ["body", "use_case"], "msg": f"must be one of {served}", "type": "string_type"}]
        )
    return named


def _drop_use_case_matching(payload: Any, use_case: str) -> None:
    """Remove the `use_case` a `POST /predict/{use_case}` body may repeat; naming another is a 422."""
    if type(payload) is dict and "use_case" in payload:
        named = payload.pop("use_case")
        if named != use_case:
            raise RequestError(
                422,
                [
                    {
                        "loc": ["body", "use_case"],
                        "msg": f"names {named!r} but the path names {use_case!r}; drop one",
                        "type": "value_error",
                    }
                ],
            )


def _log(
    writer: LogWriter,
    model: LoadedModel,
    rows: list[list[Any]],
    context: RequestContext,
    predictions: list[Any],
    probabilities: list[list[float]] | None,
    role: str,
    entity_keys: list[dict[str, str]] | None = None,
) -> None:
    """Queue the answered rows for the prediction log, with the role that answered them (and, for a
    store-backed use case, each row's entity keys beside the features the store gave it)."""
    names, types = model.schema.names, model.schema.log_types
    if entity_keys:
        keys = list(entity_keys[0])
        names, types = [*names, *keys], {**types, **dict.fromkeys(keys, "string")}
        rows = [[*row, *(entity[k] for k in keys)] for row, entity in zip(rows, entity_keys, strict=True)]
    writer.submit(
        LogEntry(
            use_case=model.use_case,
            model_name=model.model_name,
            model_version=model.version,
            source=context.source,
            ids=context.ids,
            event_times=context.event_times,
            names=names,
            rows=rows,
            predictions=predictions,
            feature_types=types,
            classes=model.classes if probabilities is not None else None,
            probabilities=probabilities,
            role=role,
        )
    )
