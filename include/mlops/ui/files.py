"""The files the MLOps page serves and links: Evidently reports and Great Expectations Data Docs.

`resolve_confined` decides which files the plugin may serve at all, and
`data_docs_file_kind` which use case a Data Docs page belongs to (the plugin's access
check asks it). Both are pure, so they are tested without a server. The lookups find
the newest complete report folder of a use case and the newest validation page of a suite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote

from mlops.naming import WINDOW_DOCS_SITE, WINDOW_SUITE_SUFFIX, report_folder_name

# The Evidently report shown first when a run folder holds several.
REPORT_ORDER = ("drift.html", "data_quality.html", "performance.html")

DocsKind = Literal["shared", "index", "suite", "unknown"]


class PathRefused(ValueError):
    """A requested file lies outside the folder it must come from (or is not a file)."""


@dataclass(frozen=True)
class ReportView:
    folder: str
    """The run folder's name (the monitoring run key made safe)."""
    html: str | None
    """Main report, relative to the reports root (`<use_case>/<folder>/drift.html`)."""
    files: list[str]
    created: datetime


# --------------------------------------------------------------------------- confinement


def _fully_decoded(text: str, rounds: int = 5) -> str:
    for _ in range(rounds):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def resolve_confined(root: Path, requested: str) -> Path:
    """The file `requested` names inside `root`, or PathRefused.

    `requested` is the path as the web server decoded it once. It is refused when
    any further decoding (double encoding) reveals `..`, an absolute path, a
    backslash or a NUL, and when the resolved file (symlinks followed) is not a
    regular file inside `root`. The once-decoded text is what is looked up, so a
    file whose name really contains `%3A` is still found.
    """
    if not requested or len(requested) > 1024:
        raise PathRefused("empty or overlong path")
    for form in (requested, _fully_decoded(requested)):
        if "\x00" in form or "\\" in form or form.startswith(("/", "~")):
            raise PathRefused(f"path {requested!r} is not relative")
        if ".." in PurePosixPath(form).parts or (len(form) > 1 and form[1] == ":"):
            raise PathRefused(f"path {requested!r} leaves its folder")
    base = root.resolve()
    candidate = (base / requested).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        raise PathRefused(f"no file {requested!r} here")
    return candidate


def relative_to_root(root: Path, path: str | Path | None) -> str | None:
    """`path` relative to `root` when it lies inside it (symlinks followed), else None."""
    if not path:
        return None
    try:
        resolved = Path(path).resolve()
        return resolved.relative_to(root.resolve()).as_posix() if resolved.is_file() else None
    except (OSError, ValueError):
        return None


def data_docs_file_kind(relative: str) -> tuple[DocsKind, str | None]:
    """What a file under the Data Docs root is, and for a suite's page the suite it shows.

    `shared`: styles, fonts and images (`static/`); `index`: a site's `index.html`, which
    lists every suite; `suite`: a validation result or an expectation page of one suite
    (pages of the monitoring windows' site name the use case's suite plus `_features`);
    `unknown`: anything else.
    """
    parts = PurePosixPath(relative).parts
    window = bool(parts) and parts[0] == WINDOW_DOCS_SITE
    parts = parts[1:] if window else parts
    if not parts:
        return "unknown", None
    if parts[0] == "static":
        return "shared", None
    if parts == ("index.html",):
        return "index", None
    suite = _suite_of_page(parts)
    if suite is None:
        return "unknown", None
    if window:
        if not suite.endswith(WINDOW_SUITE_SUFFIX):
            return "unknown", None
        suite = suite.removesuffix(WINDOW_SUITE_SUFFIX)
    return "suite", suite


def _suite_of_page(parts: tuple[str, ...]) -> str | None:
    """The suite a validation-result or expectation page shows, from its path inside a site."""
    if parts[0] == "validations" and len(parts) >= 3:
        return parts[1]
    if parts[0] == "expectations" and len(parts) == 2 and parts[1].endswith(".html"):
        return parts[1].removesuffix(".html")
    return None


# --------------------------------------------------------------------------- lookups


def safe_folder_name(key: str) -> str:
    """The report folder of a monitoring run key, as `mlops.monitoring.reports.report_dir` names it."""
    return report_folder_name(key)


def report_in(reports_dir: Path, folder: Path) -> ReportView | None:
    """The reports of one monitoring run folder, or None if it holds no HTML report."""
    if not folder.is_dir():
        return None
    html_files = sorted(p for p in folder.glob("*.html") if p.is_file())
    if not html_files:
        return None
    ordered = sorted(html_files, key=lambda p: REPORT_ORDER.index(p.name) if p.name in REPORT_ORDER else 99)
    root = reports_dir.resolve()
    files = [p.resolve().relative_to(root).as_posix() for p in ordered if p.resolve().is_relative_to(root)]
    if not files:
        return None
    created = datetime.fromtimestamp(max(p.stat().st_mtime for p in html_files), tz=UTC)
    return ReportView(folder=folder.name, html=files[0], files=files, created=created)


def latest_report(reports_dir: Path, use_case: str) -> ReportView | None:
    """Newest complete monitoring run folder (`summary.json` is written last) with an HTML report."""
    base = reports_dir / use_case
    if not base.is_dir():
        return None
    folders = [d for d in base.iterdir() if d.is_dir() and (d / "summary.json").is_file()]
    for folder in sorted(folders, key=lambda d: (d / "summary.json").stat().st_mtime, reverse=True):
        report = report_in(reports_dir, folder)
        if report is not None:
            return report
    return None


def run_report(reports_dir: Path, use_case: str, run_key: str) -> ReportView | None:
    """The reports the monitoring DAG run `run_key` wrote, found by its folder."""
    return report_in(reports_dir, reports_dir / use_case / safe_folder_name(run_key))


def latest_summary(reports_dir: Path, use_case: str) -> dict[str, object] | None:
    """The newest complete monitoring run's summary.json, or None (none yet, or unreadable)."""
    base = reports_dir / use_case
    if not base.is_dir():
        return None
    summaries = [p for p in (d / "summary.json" for d in base.iterdir() if d.is_dir()) if p.is_file()]
    if not summaries:
        return None
    try:
        loaded = json.loads(max(summaries, key=lambda p: p.stat().st_mtime).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def label_lag_line(summary: dict[str, object] | None) -> str | None:
    """'labels: 62 % of the last window, median 3.1 h late' from a summary's `label_lag`; None without one."""
    lag = summary.get("label_lag") if summary else None
    if not isinstance(lag, dict) or not isinstance(lag.get("labelled_share"), int | float):
        return None
    text = f"labels: {round(100 * float(lag['labelled_share']))} % of the last window"
    delay = lag.get("median_delay_hours")
    if isinstance(delay, int | float):
        return f"{text}, median {float(delay):.1f} h late"
    return f"{text}, delay unknown" if lag.get("labelled_share") else text


def skew_line(summary: dict[str, object] | None) -> tuple[str, bool] | None:
    """('training/serving skew: 400 served rows compared with the offline store, ...', alert?) from a summary's
    `skew` (a store-backed use case's check); None for a use case without a store or a run without one."""
    skew = summary.get("skew") if summary else None
    if not isinstance(skew, dict):
        return None
    if skew.get("note"):
        return f"training/serving skew: not checked ({skew['note']})", False
    findings = [str(f) for f in skew.get("findings") or []]
    features = skew.get("features")
    features = features if isinstance(features, dict) else {}
    shares = ", ".join(
        f"{name} {100 * float(f.get('share', 0)):.1f} %" for name, f in features.items() if isinstance(f, dict)
    )
    text = f"training/serving skew: {skew.get('rows', 0)} served rows compared with the offline store"
    text += f" (rows that differ: {shares})" if shares else ""
    if findings:
        return f"{text}; {len(findings)} finding(s): " + "; ".join(findings), True
    return f"{text}; no skew", False


def latest_data_docs_page(data_docs_dir: Path, suite: str) -> str | None:
    """Newest validation-result page of `suite`, relative to the Data Docs root."""
    folder = data_docs_dir / "validations" / suite
    if not folder.is_dir():
        return None
    pages = [p for p in folder.rglob("*.html") if p.is_file()]
    if not pages:
        return None
    newest = max(pages, key=lambda p: p.stat().st_mtime)
    return relative_to_root(data_docs_dir, newest)
