"""Optional API keys for the prediction service: one set for scoring, another for ground truth.

Each set comes from the environment, never from a committed file:

- `MLOPS_SERVING_PREDICT_KEYS`: comma-separated keys for `/predict` and `/invocations`;
- `MLOPS_SERVING_LABELS_KEYS`: keys for `/labels` (a labeller need not be able to score, nor a
  scoring client to rewrite the ground truth that monitoring trusts);
- `MLOPS_SERVING_METRICS_KEYS`: keys for `/metrics`, off by default;

or from a file named by the same variable with `_FILE` appended (one key a line, `#` comments:
what Docker and Kubernetes secrets mount). An unset set leaves its routes open, as before.

A client sends `Authorization: Bearer <key>` or `X-API-Key: <key>`. A missing key is a 401
with `WWW-Authenticate: Bearer`, a wrong one a 403; the body has the route's own error shape
(`{"detail": ...}`, or MLflow's `{"error_code", "message"}` on /invocations). Every key is
compared with `hmac.compare_digest`, so the time taken does not say how much of a key matched.

`/health`, `/ready`, `/ping`, `/models` and `/openapi.json` stay open: load balancers and
orchestrators probe them without credentials, and they say nothing a scoring client may not
know. `/metrics` stays open by default because a Prometheus scrape inside the stack's network is
the usual reader; set `MLOPS_SERVING_METRICS_KEYS` when the port is reachable from outside.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.serving.schema import dumps

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREDICT = "predict"
LABELS = "labels"
METRICS = "metrics"
ENV = {
    PREDICT: "MLOPS_SERVING_PREDICT_KEYS",
    LABELS: "MLOPS_SERVING_LABELS_KEYS",
    METRICS: "MLOPS_SERVING_METRICS_KEYS",
}
# The route prefix of each protected set; the first match wins.
_PREFIXES = (("/predict", PREDICT), ("/invocations", PREDICT), ("/labels", LABELS), ("/metrics", METRICS))
_WHAT = {PREDICT: "scoring", LABELS: "sending labels", METRICS: "reading metrics"}


class KeyConfigError(ValueError):
    """A key variable or file that cannot be used; the message names it."""


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys per protected set; a set absent here is open."""

    keys: Mapping[str, tuple[bytes, ...]]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def protects(self, scope_name: str) -> bool:
        return scope_name in self.keys

    def check(self, scope_name: str, presented: bytes | None) -> int:
        """200 if `presented` is one of the set's keys (or the set is open), 401 if none was sent, else 403."""
        accepted = self.keys.get(scope_name)
        if accepted is None:
            return 200
        if not presented:
            return 401
        # Compare against every key, not stopping at the first match: the time does not say which one.
        matched = False
        for key in accepted:
            matched |= hmac.compare_digest(presented, key)
        return 200 if matched else 403


def load_keys(environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The key sets configured in `environ` (default os.environ); a clear error for an unusable one."""
    env = os.environ if environ is None else environ
    out: dict[str, tuple[bytes, ...]] = {}
    for name, var in ENV.items():
        keys = _read(var, env)
        if keys is not None:
            out[name] = keys
    return ApiKeys(out)


def _read(var: str, env: Mapping[str, str]) -> tuple[bytes, ...] | None:
    inline, file = env.get(var, "").strip(), env.get(f"{var}_FILE", "").strip()
    if inline and file:
        raise KeyConfigError(f"set {var} or {var}_FILE, not both")
    if file:
        try:
            text = Path(file).read_text()
        except OSError as exc:
            raise KeyConfigError(f"{var}_FILE={file} cannot be read ({exc}); mount the secret or unset it") from exc
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        where = f"{var}_FILE={file}"
    elif inline:
        keys = [k.strip() for k in inline.split(",") if k.strip()]
        where = var
    else:
        return None
    if not keys:
        raise KeyConfigError(f"{where} holds no key; put one key a line, or unset it to leave the routes open")
    short = [i for i, k in enumerate(keys) if len(k) < 16]
    if short:
        raise KeyConfigError(
            f"{where}: key(s) {short} are shorter than 16 characters; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return tuple(k.encode() for k in keys)


def scope_of(path: str) -> str | None:
    """The key set that guards `path`, or None for an open route."""
    for prefix, name in _PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return name
    return None


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key of `Authorization: Bearer <key>` or `X-API-Key: <key>`, if either was sent."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.strip()
    return None


def refusal(status: int, scope_name: str, path: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of a 401 or 403 on `path`, in the shape that route answers errors."""
    var = ENV[scope_name]
    if status == 401:
        message = (
            f"{_WHAT[scope_name]} needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>` "
            f"(the service's keys are set by {var})"
        )
    else:
        message = f"this API key may not be used for {_WHAT[scope_name]}; ask for a key listed in {var}"
    if path.startswith("/invocations"):
        code = "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED"
        body: dict[str, Any] = {"error_code": code, "message": message}
    else:
        body = {"detail": message}
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="mlops-serving"'))
    return dumps(body), headers


class ApiKeyMiddleware:
    """Pure ASGI (no per-request task or body copy, unlike BaseHTTPMiddleware): the hot path pays a header scan."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            name = scope_of(path)
            if name is not None and self.keys.protects(name):
                status = self.keys.check(name, presented_key(scope["headers"]))
                if status != 200:
                    body, headers = refusal(status, name, path)
                    headers.append((b"content-length", str(len(body)).encode()))
                    await send({"type": "http.response.start", "status": status, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)


def document(openapi: dict[str, Any], keys: ApiKeys) -> None:
    """Add the security schemes and the 401/403 of every protected operation to an OpenAPI document."""
    if not keys.enabled:
        return
    components = openapi.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(
        bearerKey={"type": "http", "scheme": "bearer", "description": "An API key as a bearer token."},
        apiKey={"type": "apiKey", "in": "header", "name": "X-API-Key"},
    )
    for path, item in openapi.get("paths", {}).items():
        name = scope_of(path)
        if name is None or not keys.protects(name):
            continue
        schema = "MlflowError" if path.startswith("/invocations") else "Error"
        ref = {"$ref": f"#/components/schemas/{schema}"}
        for operation in item.values():
            operation["security"] = [{"bearerKey": []}, {"apiKey": []}]
            responses = operation.setdefault("responses", {})
            responses["401"] = {
                "description": f"No API key sent ({ENV[name]} lists the accepted ones)",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": ref}},
            }
            responses["403"] = {
                "description": f"The key sent is not one of {ENV[name]}",
                "content": {"application/json": {"schema": ref}},
            }
