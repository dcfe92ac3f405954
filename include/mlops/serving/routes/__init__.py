"""The prediction service's HTTP routes: `health` (/health, /ready, /models) and `predict`.

Every route answers through `json_response`, encoded with orjson (schema.dumps): FastAPI's
default response runs each body through jsonable_encoder and json.dumps, which costs more.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from mlops.serving.schema import dumps


def json_response(status: int, body: Any) -> Response:
    return Response(content=dumps(body), status_code=status, media_type="application/json")
