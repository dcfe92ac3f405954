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


def json_body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself: the body's schema and example."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}}
