"""How the MLOps page answers: rendered pages under a strict CSP, served files in a sandbox.

Files (Evidently reports, Data Docs) are served only from their own folders via
`mlops.ui.files.resolve_confined`, and sandboxed with a CSP so a report's scripts run in
an opaque origin, away from the Airflow session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mlops.ui.files import PathRefused, resolve_confined

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)
# Reports are generated HTML with inline scripts and data from production traffic:
# run them in an opaque origin so they cannot reach the Airflow session or API.
FILE_CSP = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-downloads; frame-ancestors 'self'"
STATIC_FILES = {"mlops.css": "text/css", "mlops.js": "text/javascript"}

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True
)
_templates.filters["pct"] = lambda v: f"{v:.0%}" if isinstance(v, (int, float)) else "–"
_templates.filters["signed_pct"] = lambda v: f"{v:+.2%}" if isinstance(v, (int, float)) else "–"
_templates.filters["num"] = lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else "–"
_templates.filters["when"] = lambda v: f"{v:%Y-%m-%d %H:%M} UTC" if v else "–"
_templates.filters["urlpath"] = lambda v: quote(str(v))


def airflow_root(request: Request) -> str:
    """The Airflow UI root as seen by the browser: this app's mount point minus its own prefix."""
    return str(request.scope.get("root_path", "")).rstrip("/").removesuffix("/mlops")


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """`template` rendered with the app's own prefix and the Airflow root, not cached, under the page CSP."""
    prefix = request.scope.get("root_path", "").rstrip("/")
    body = _templates.get_template(template).render(prefix=prefix, airflow_root=airflow_root(request), **context)
    response = HTMLResponse(body, status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def static_file(name: str) -> FileResponse:
    """One of the page's own assets, from a fixed list (a StaticFiles mount would bypass the login check)."""
    if name not in STATIC_FILES:
        raise HTTPException(404, "Not found")
    return FileResponse(HERE / "static" / name, media_type=STATIC_FILES[name])


def confined_file(root: Path, path: str, allowed: Callable[[str], bool]) -> FileResponse:
    """The file `path` names under `root`, if `allowed(its path relative to root)`; else 404.

    `allowed` judges the resolved file, not the request, so no spelling of the path
    (symlinks included) reaches a file of a use case the caller may not read.
    A refusal is a 404, like a missing file: it does not confirm the file exists.
    """
    try:
        file = resolve_confined(root, path)
    except PathRefused as exc:
        log.info("refused file request %r under %s: %s", path, root, exc)
        raise HTTPException(404, "Not found") from None
    if not allowed(file.relative_to(root.resolve()).as_posix()):
        log.info("refused file request %r under %s: the caller may not read its use case", path, root)
        raise HTTPException(404, "Not found")
    response = FileResponse(file)
    response.headers["Content-Security-Policy"] = FILE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
