"""Real-time prediction service: `python -m mlops.serving --host 127.0.0.1 --port 8000`.

Modules: `app` (FastAPI app, micro-batching, lifecycle), `models` (MLflow registry
access and the alias-following model cache), `schema` (request validation),
`logwriter` (prediction logging off the request path), `cli` (the entry point).
"""

from __future__ import annotations

from mlops.serving.cli import main

__all__ = ["main"]
