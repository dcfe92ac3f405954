"""Liveness, readiness and the models served: what an operator or a load balancer asks."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlops.serving.routes import json_response
from mlops.serving.state import service_state

router = APIRouter()


@router.get("/health", summary="Liveness, with prediction-log health (`degraded` when logging falls behind)")
async def health(request: Request) -> Response:
    state = service_state(request)
    models = {name: (m.version if (m := state.cache.get(name)) else None) for name in state.batchers}
    status = "degraded" if state.writer.degraded() else "ok"
    return json_response(
        200, {"status": status, "models": models, "log": state.writer.stats(), "registry": state.cache.status()}
    )


@router.get("/ready", summary="200 once every served use case has its model loaded, else 503")
async def ready(request: Request) -> Response:
    state = service_state(request)
    missing = [name for name in state.batchers if state.cache.get(name) is None]
    body = {"ready": not missing, "missing": missing, "errors": state.cache.status()["errors"]}
    return json_response(503 if missing else 200, body)


@router.get("/models", summary="The model each use case serves: name, version, alias, signature, run id")
async def models(request: Request) -> Response:
    state = service_state(request)
    out = []
    for name in state.batchers:
        model = state.cache.get(name)
        uc = state.cache.use_cases[name]
        out.append(
            model.describe()
            if model
            else {"use_case": name, "name": uc.model_name, "version": None, "alias": state.config.alias}
        )
    return json_response(200, {"models": out})
