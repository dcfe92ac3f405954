"""Real-time prediction service: `python -m mlops.serving --host 127.0.0.1 --port 8000`.

Modules: `app` (the FastAPI app and its lifespan), `routes` (the HTTP endpoints),
`state` (what the routes share), `config` (what the service can be told),
`microbatch` (one predict call per batch window), `models` (the alias-following model
cache), `fastpath` (predicting on arrays), `schema` (request validation), `logwriter`
(prediction logging off the request path), `batch` (batch scoring of a partition),
`cli` (the entry point).
"""

from __future__ import annotations

from mlops.serving.cli import main

__all__ = ["main"]
