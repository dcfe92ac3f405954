"""The real-time prediction service: FastAPI app, micro-batching and lifecycle.

`POST /predict/{use_case}` (or `POST /predict` with the use case in the body, or
none when only one is served) is the hot path. It reads the body with a size cap,
decodes it with orjson, validates it with the model's compiled schema and joins
a micro-batch: every request that arrived in the same event-loop turn is
predicted with one `pipeline.predict` call, because a scikit-learn pipeline
costs nearly the same for 1 row as for 100. The model reference is taken once
per micro-batch, so a hot swap never mixes versions inside one response. The
prediction is then queued for the log writer thread and the response goes out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from mlops.config import UseCase, load_all
from mlops.serving.logwriter import LogEntry, PredictionLogWriter
from mlops.serving.models import LoadedModel, ModelCache
from mlops.serving.schema import ParsedRequest, RequestError, dumps, parse_json

log = logging.getLogger("mlops.serving")
CONFIG_ENV = "MLOPS_SERVING_CONFIG"


@dataclass(frozen=True)
class ServingConfig:
    """Everything the service can be told; carried to uvicorn workers as JSON in MLOPS_SERVING_CONFIG."""

    configs_dir: str | None = None
    use_cases: list[str] = field(default_factory=list)
    """Serve only these use cases; empty serves every configured one."""
    alias: str = "champion"
    poll_seconds: float = 5.0
    log_uri: str | None = None
    """Prediction log; None means settings.prediction_log_uri."""
    log_queue_size: int = 10_000
    log_flush_seconds: float = 1.0
    max_body_bytes: int = 1_048_576
    max_records: int = 10_000
    batch_window_ms: float = 1.0
    """How long the first request of a micro-batch waits for others; 0 batches only what
    arrived in the same event-loop turn."""
    array_predict: bool = True
    """Predict on arrays where the load-time check allows it (serving/fastpath.py); False: Pipeline.predict."""

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServingConfig:
        raw = os.environ.get(CONFIG_ENV)
        return cls(**json.loads(raw)) if raw else cls()

    def load_use_cases(self) -> list[UseCase]:
        found = load_all(Path(self.configs_dir) if self.configs_dir else None)
        if not self.use_cases:
            return found
        known = {u.name: u for u in found}
        missing = [n for n in self.use_cases if n not in known]
        if missing:
            raise ValueError(f"use cases {missing} are not configured; known: {sorted(known)}")
        return [known[n] for n in self.use_cases]


class _VersionChanged(Exception):
    pass


class MicroBatcher:
    """Gathers the requests of a short window into a single predict call.

    Why a window and not just one event-loop turn: a scikit-learn `Pipeline.predict` on a
    DataFrame costs about a millisecond whether it gets 1 row or 100. At 8 connections the
    requests of one turn were mostly single, so each paid that millisecond and the worker
    ran out of CPU (docs/serving.md); waiting up to `window_seconds` for companions makes
    one call serve several requests.
    """

    def __init__(self, cache: ModelCache, use_case: str, window_seconds: float = 0.0) -> None:
        self.cache = cache
        self.use_case = use_case
        self.window_seconds = window_seconds
        self._pending: list[tuple[LoadedModel, list[list[Any]], asyncio.Future[tuple[LoadedModel, list[Any]]]]] = []
        self._scheduled = False

    async def predict(self, model: LoadedModel, rows: list[list[Any]]) -> tuple[LoadedModel, list[Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[LoadedModel, list[Any]]] = loop.create_future()
        self._pending.append((model, rows, future))
        if not self._scheduled:
            self._scheduled = True
            if self.window_seconds > 0:
                loop.call_later(self.window_seconds, self._flush)
            else:
                # call_soon runs after every request already runnable in this turn has joined.
                loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        model = self.cache.get(self.use_case)
        if model is None:
            for _, _, future in pending:
                if not future.done():
                    future.set_exception(RuntimeError("no model loaded"))
            return
        usable = []
        for validated_with, rows, future in pending:
            # Rows are ordered by the schema they were validated with; a new version
            # with other columns cannot take them (never seen in practice: same use case).
            if validated_with.schema.names != model.schema.names:
                future.set_exception(_VersionChanged())
            else:
                usable.append((rows, future))
        if not usable:
            return
        try:
            all_rows = [row for rows, _ in usable for row in rows]
            predictions = model.predict_frame(model.schema.to_frame(all_rows)).tolist()
        except Exception:
            if len(usable) == 1:
                self._predict_one(model, *usable[0])
                return
            # One bad request must not fail its neighbours: predict them one by one.
            for rows, future in usable:
                self._predict_one(model, rows, future)
            return
        start = 0
        for rows, future in usable:
            if not future.done():
                future.set_result((model, predictions[start : start + len(rows)]))
            start += len(rows)

    @staticmethod
    def _predict_one(
        model: LoadedModel, rows: list[list[Any]], future: asyncio.Future[tuple[LoadedModel, list[Any]]]
    ) -> None:
        try:
            result = model.predict_frame(model.schema.to_frame(rows)).tolist()
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result((model, result))


def _json(status: int, body: Any) -> Response:
    return Response(content=dumps(body), status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
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


def create_app(config: ServingConfig | None = None) -> FastAPI:
    """The service for `config` (default: from MLOPS_SERVING_CONFIG, else defaults)."""
    config = config or ServingConfig.from_env()
    use_cases = config.load_use_cases()
    cache = ModelCache(
        use_cases, alias=config.alias, poll_seconds=config.poll_seconds, array_predict=config.array_predict
    )
    writer = PredictionLogWriter(
        config.log_uri, queue_size=config.log_queue_size, flush_seconds=config.log_flush_seconds
    )
    batchers = {u.name: MicroBatcher(cache, u.name, config.batch_window_ms / 1000) for u in use_cases}
    served = sorted(batchers)  # fixed for the life of the app; named in every refusal of a use case

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import sklearn

        # Inputs are checked for NaN/inf before they reach the model, so skip sklearn's own checks.
        sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
        writer.start()
        cache.start()
        try:
            yield
        finally:
            # The log first: a poller stuck in the MLflow client's retries against an
            # unreachable registry can take minutes to return, and waiting for it before
            # the flush let the supervisor's SIGKILL take the buffered predictions with it.
            cache.signal_stop()
            writer.stop()
            log.warning("prediction service stopped; log writer flushed (%s)", writer.stats())
            # A daemon thread: if it is still inside a registry call, exiting abandons only that call.
            cache.stop(timeout=2.0)

    app = FastAPI(
        title="MLOps prediction service",
        description="Serves the @champion model of every configured use case. Every prediction is logged.",
        version="1",
        lifespan=lifespan,
    )
    app.state.cache = cache
    app.state.writer = writer

    @app.get("/health", summary="Liveness, with prediction-log health (`degraded` when logging falls behind)")
    async def health() -> Response:
        models = {name: (m.version if (m := cache.get(name)) else None) for name in batchers}
        status = "degraded" if writer.degraded() else "ok"
        return _json(200, {"status": status, "models": models, "log": writer.stats(), "registry": cache.status()})

    @app.get("/ready", summary="200 once every served use case has its model loaded, else 503")
    async def ready() -> Response:
        missing = [name for name in batchers if cache.get(name) is None]
        body = {"ready": not missing, "missing": missing, "errors": cache.status()["errors"]}
        return _json(503 if missing else 200, body)

    @app.get("/models", summary="The model each use case serves: name, version, alias, signature, run id")
    async def models() -> Response:
        out = []
        for name in batchers:
            model = cache.get(name)
            uc = cache.use_cases[name]
            out.append(
                model.describe()
                if model
                else {"use_case": name, "name": uc.model_name, "version": None, "alias": config.alias}
            )
        return _json(200, {"models": out})

    predict_responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "`{use_case, model_name, model_version, ids, predictions}`"},
        400: {"description": "Malformed or too deeply nested JSON"},
        413: {"description": "Body or batch too large"},
        422: {"description": "Invalid fields; `detail[].loc` names each one"},
        503: {"description": "No model loaded yet for this use case"},
    }

    def unknown_use_case(loc: list[str], name: str, status: int) -> Response:
        msg = f"unknown use case {name!r}; served: {served}"
        return _json(status, {"detail": [{"loc": loc, "msg": msg, "type": "not_found"}]})

    async def answer(use_case: str, model: LoadedModel, payload: Any) -> Response:
        """Validate, predict (micro-batched), queue for the log, answer."""
        try:
            parsed = model.schema.parse(payload, config.max_records)
        except RequestError as exc:
            return _json(exc.status, exc.body())
        try:
            used, predictions = await batchers[use_case].predict(model, parsed.rows)
        except _VersionChanged:
            return _json(503, {"detail": "the model changed its input columns during this request; retry"})
        except (ValueError, TypeError, KeyError) as exc:
            # The pipeline refused values the signature allowed (e.g. an unknown category).
            return _json(
                422,
                {"detail": [{"loc": ["body"], "msg": f"the model rejected the input: {exc}", "type": "model_error"}]},
            )
        ids = parsed.ids or [uuid.uuid4().hex for _ in parsed.rows]
        _log(writer, used, parsed, ids, predictions)
        return _json(
            200,
            {
                "use_case": use_case,
                "model_name": used.model_name,
                "model_version": used.version,
                "ids": ids,
                "predictions": predictions,
            },
        )

    def not_loaded(use_case: str) -> Response:
        reason = cache.status()["errors"].get(use_case, "the model is still loading")
        return _json(503, {"detail": f"no @{config.alias} model loaded for {use_case}: {reason}"})

    @app.post(
        "/predict",
        summary="Predict one record or a batch; the body's `use_case` names the model (optional with one use case)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _PREDICT_BODY_SCHEMA,
                        "example": {"use_case": "bike_sharing", **_PREDICT_EXAMPLE},
                    }
                },
            }
        },
        responses=predict_responses,
    )
    async def predict_any(request: Request) -> Response:
        try:
            payload = parse_json(await _read_body(request, config.max_body_bytes))
            use_case = _use_case_of(payload, served)
        except RequestError as exc:
            return _json(exc.status, exc.body())
        if use_case not in batchers:
            return unknown_use_case(["body", "use_case"], use_case, 422)
        model = cache.get(use_case)
        if model is None:
            return not_loaded(use_case)
        return await answer(use_case, model, payload)

    @app.post(
        "/predict/{use_case}",
        summary="Predict one record or a batch with the use case's @champion",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _PREDICT_BODY_SCHEMA, "example": _PREDICT_EXAMPLE}},
            }
        },
        responses={**predict_responses, 404: {"description": "Unknown use case"}},
    )
    async def predict(use_case: str, request: Request) -> Response:
        if use_case not in batchers:
            return unknown_use_case(["path", "use_case"], use_case, 404)
        model = cache.get(use_case)
        if model is None:
            return not_loaded(use_case)
        try:
            payload = parse_json(await _read_body(request, config.max_body_bytes))
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
        except RequestError as exc:
            return _json(exc.status, exc.body())
        return await answer(use_case, model, payload)

    return app


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


def _log(
    writer: PredictionLogWriter, model: LoadedModel, parsed: ParsedRequest, ids: list[str], predictions: list[Any]
) -> None:
    times = parsed.event_times
    if times is None:
        now = datetime.now(UTC).replace(tzinfo=None)
        times = [now] * len(ids)
    writer.submit(
        LogEntry(
            use_case=model.use_case,
            model_name=model.model_name,
            model_version=model.version,
            source=parsed.source,
            ids=ids,
            event_times=times,
            names=model.schema.names,
            rows=parsed.rows,
            predictions=predictions,
        )
    )


def app_from_env() -> FastAPI:
    """uvicorn factory (`--factory`): workers rebuild the app from MLOPS_SERVING_CONFIG."""
    return create_app(ServingConfig.from_env())
