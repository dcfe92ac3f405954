"""Liveness, readiness, the models served, Prometheus metrics: what an operator, a load balancer, a scraper asks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlops.serving.routes import json_response
from mlops.serving.state import service_state

router = APIRouter()


@router.get("/health", summary="Liveness, with prediction-log health (`degraded` when logging falls behind)")
async def health(request: Request) -> Response:
    state = service_state(request)
    models = {name: (m.version if (m := state.cache.get(name)) else None) for name in state.batchers}
    # Degraded: answers are still right but something behind them fails (the log falls behind, or a
    # store-backed use case's online features cannot be read: those requests get a 503).
    degraded = state.writer.degraded() or any(online.degraded() for online in state.online.values())
    status = "degraded" if degraded else "ok"
    body = {"status": status, "models": models, "log": state.writer.stats(), "registry": state.cache.status()}
    if state.online:
        body["feature_store"] = {name: online.stats() for name, online in state.online.items()}
    if state.shadows:
        # Per use case with strategy shadow: the @shadow version scoring beside the champion (None: no
        # @shadow now) and its worker's counts.
        body["shadows"] = {
            name: {"version": m.version if (m := state.cache.get_shadow(name)) else None, **scorer.stats()}
            for name, scorer in state.shadows.items()
        }
    if state.guards:
        # Per use case with strategy canary: the @canary version, the share of requests it answers now
        # (0 after a breach) and its guard's recent numbers.
        body["canaries"] = {
            name: {**(state.cache.canary_status(name) or {"version": None}), "guard": guard.stats()}
            for name, guard in state.guards.items()
        }
    return json_response(200, body)


@router.get("/ready", summary="200 once every served use case has its model loaded, else 503")
async def ready(request: Request) -> Response:
    state = service_state(request)
    missing = [name for name in state.batchers if state.cache.get(name) is None]
    body = {"ready": not missing, "missing": missing, "errors": state.cache.status()["errors"]}
    return json_response(503 if missing else 200, body)


@router.get(
    "/models",
    summary="The model each use case serves: name, version, alias, signature, run id; `shadow`: its @shadow; "
    "`canary`: its @canary, the fraction it answers and its guard's numbers",
)
async def models(request: Request) -> Response:
    state = service_state(request)
    out = []
    for name in state.batchers:
        model = state.cache.get(name)
        uc = state.cache.use_cases[name]
        entry: dict[str, Any] = (
            model.describe()
            if model
            else {"use_case": name, "name": uc.model_name, "version": None, "alias": state.config.alias}
        )
        entry["strategy"] = uc.deployment.strategy
        if name in state.shadows:
            shadow = state.cache.get_shadow(name)
            entry["shadow"] = shadow.describe() if shadow else None
        if name in state.guards:
            entry["canary"] = state.cache.canary_status(name)
            if entry["canary"] is not None:
                entry["canary"]["guard"] = state.guards[name].stats()
        out.append(entry)
    return json_response(200, {"models": out})


@router.get("/metrics", summary="Prometheus metrics: requests, latency, shadow failures and time-outs, log, models")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(content=service_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
