"""The real-time prediction service: the FastAPI app and its lifecycle.

`create_app` builds the shared state (model cache, log writer, one micro-batcher per use
case), attaches it to the app and includes the routers (serving/routes/). The lifespan
starts the alias poller and the log writer, and at shutdown flushes the log before it
lets the poller go.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mlops.serving import openapi
from mlops.serving.auth import ApiKeyMiddleware, load_keys
from mlops.serving.config import ServingConfig
from mlops.serving.routes import health, invocations, labels, predict
from mlops.serving.state import ServiceState, build_state


def create_app(config: ServingConfig | None = None) -> FastAPI:
    """The service for `config` (default: from MLOPS_SERVING_CONFIG, else defaults)."""
    state = build_state(config or ServingConfig.from_env())
    app = FastAPI(
        title="MLOps prediction service",
        description="Serves the @champion model of every configured use case. Every prediction is logged.",
        version="1",
        lifespan=_lifespan,
    )
    app.state.service = state
    # Read here, in every worker, from the environment: the keys never travel in MLOPS_SERVING_CONFIG.
    app.state.api_keys = keys = load_keys()
    if keys.enabled:
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(labels.router)
    app.include_router(invocations.router)
    openapi.install(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    _skip_sklearn_input_checks()
    state.start()
    try:
        yield
    finally:
        state.stop()


def _skip_sklearn_input_checks() -> None:
    # Inputs are checked for NaN/inf before they reach the model (serving/schema.py), so
    # scikit-learn's own finiteness and parameter checks would only repeat the work.
    import sklearn

    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)


def app_from_env() -> FastAPI:
    """uvicorn factory (`--factory`): workers rebuild the app from MLOPS_SERVING_CONFIG."""
    return create_app(ServingConfig.from_env())
