"""A local HTTP sink for alert webhooks, for tests that check an alert was delivered.

Importable from every test folder (pytest puts tests/ on sys.path for tests/conftest.py).
Point MLOPS_ALERT_WEBHOOK_URL at `sink.url`; every POSTed JSON body lands in `sink.posts`.
Loopback only; the server thread stops with the context manager.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class AlertSink:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._posts: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    @property
    def posts(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._posts)

    def add(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self._posts.append(payload)

    def clear(self) -> None:
        with self._lock:
            self._posts.clear()

    def wait_for(self, subject: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The alerts whose subject is `subject`, waiting up to `timeout` s for the first one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [p for p in self.posts if p.get("subject") == subject]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.sink.add(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def alert_sink() -> Iterator[AlertSink]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    sink = AlertSink(server)
    server.sink = sink  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="alert-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
