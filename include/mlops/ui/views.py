"""What the Airflow "MLOps" page shows, gathered from MLflow and the project's folders.

No Airflow import and no XCom: the facts come from the Model Registry (aliases,
version tags with the gate decision), the tracking server (run metrics, the
`<use_case>-monitoring` experiment), the Evidently report folders and the Great
Expectations Data Docs. MLflow is imported inside functions so importing this
module (the plugin does, in every Airflow process) stays cheap.

Promotions waiting for a person are the one fact MLflow cannot know: the plugin
asks Airflow's REST API for the open human-in-the-loop requests and hands them to
`pending_approvals`, which adds the gate's evidence from MLflow.

The file guard `resolve_confined` lives here too: it decides which files the
plugin may serve, and being pure it is tested without a server.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote

from mlops.config import METRIC_DIRECTIONS, UseCase
from mlops.naming import (
    ALIASES,
    APPROVAL_TAGS,
    DECISION_TAG_PREFIXES,
    TAG_DAG_ID,
    TAG_DAG_RUN_ID,
    TAG_DATA_DOCS_PAGE,
    TAG_GATE_PASSED,
    TAG_GATE_REASONS,
    TAG_MONITORING_RUN_KEY,
    TAG_PROMOTED_AT,
    TAG_REJECTION_REASON,
    TAG_RUN_KEY,
    TAG_RUN_TYPE,
    WINDOW_DOCS_SITE,
    WINDOW_SUITE_SUFFIX,
    monitoring_dag_id,
    monitoring_experiment,
    run_key,
    training_dag_id,
)
from mlops.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# The Evidently report shown first when a run folder holds several.
REPORT_ORDER = ("drift.html", "data_quality.html", "performance.html")


class PathRefused(ValueError):
    """A requested file lies outside the folder it must come from (or is not a file)."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class VersionView:
    version: str
    aliases: list[str]
    run_id: str | None
    created: datetime | None
    updated: datetime | None
    metrics: dict[str, float]
    passed: bool | None
    """The gate's verdict from the version's tags; None when the tags do not say."""
    reasons: list[str]
    decision_tags: dict[str, str]
    """Every tag about the gate, the promotion, an approval or a rollback, shown as recorded."""
    tags: dict[str, str]
    version_url: str
    run_url: str | None
    promoted_at: datetime | None = None
    """When `@champion` moved to this version, from its `mlops.promoted_at` tag."""

    @property
    def rejection(self) -> str | None:
        """Why the version was not promoted, when that is more than the gate's own reasons.

        A failed gate writes its reasons into `mlops.rejection_reason` too; a person's
        rejection or an approval time-out writes its own reason there.
        """
        reason = self.tags.get(TAG_REJECTION_REASON)
        return reason if reason and reason != "; ".join(self.reasons) else None

    @property
    def approval(self) -> str | None:
        """`approved by admin at 2026-...`: the answer to the version's promotion request, if one was asked."""
        decision, by, at = (self.tags.get(tag) for tag in APPROVAL_TAGS)
        if not decision:
            return None
        text = f"approval {decision}" if by in (None, "nobody") else f"{decision} by {by}"
        return text + (f" at {at}" if at else "")


@dataclass(frozen=True)
class PendingApproval:
    """A promotion waiting for a person: Airflow's request plus the gate's evidence from MLflow."""

    dag_id: str
    dag_run_id: str
    task_id: str
    subject: str
    requested_at: datetime | None
    review_path: str
    """Airflow's own page for the request (the task instance's Required Actions tab), from the UI root."""
    version: VersionView | None
    """The candidate version the run registered; None if MLflow does not show it (yet)."""
    champion_version: str | None
    passed: bool | None
    reasons: list[str]
    candidate_metrics: dict[str, float]
    """Candidate and champion scored on the same holdout by the gate."""
    champion_metrics: dict[str, float]


@dataclass(frozen=True)
class DriftPoint:
    when: datetime
    drift_share: float
    action: str | None
    run_url: str


@dataclass(frozen=True)
class ReportView:
    folder: str
    """The run folder's name (the monitoring run key made safe)."""
    html: str | None
    """Main report, relative to the reports root (`<use_case>/<folder>/drift.html`)."""
    files: list[str]
    created: datetime


@dataclass
class UseCaseView:
    name: str
    description: str
    model_name: str
    primary_metric: str
    drift_threshold: float
    model_url: str
    by_alias: dict[str, VersionView] = field(default_factory=dict)
    recent: list[VersionView] = field(default_factory=list)
    drift: list[DriftPoint] = field(default_factory=list)
    monitoring_url: str | None = None
    report: ReportView | None = None
    data_docs: str | None = None
    """Newest Data Docs validation page, relative to the Data Docs root."""
    approval_required: bool = False
    pending: list[PendingApproval] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """What could not be read (MLflow down, ...): shown on the page instead of failing it."""


@dataclass
class RunView:
    """What one DAG run produced, found by its run key in MLflow and the report folders."""

    use_case: UseCaseView
    dag_id: str
    run_id: str
    run_key: str
    versions: list[VersionView] = field(default_factory=list)
    mlflow_runs: list[tuple[str, str]] = field(default_factory=list)
    """(run name, URL) of MLflow runs tagged with this DAG run."""
    report: ReportView | None = None
    data_docs: str | None = None
    errors: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- URLs


def run_url(base: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/#/runs/{quote(run_id, safe='')}"


def model_url(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/#/models/{quote(name, safe='')}"


def model_version_url(base: str, name: str, version: str) -> str:
    return f"{model_url(base, name)}/versions/{quote(str(version), safe='')}"


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{quote(experiment_id, safe='')}"


def required_action_path(dag_id: str, dag_run_id: str, task_id: str, map_index: int = -1) -> str:
    """Airflow UI route of a task instance's Required Actions tab (its approve/reject form)."""
    mapped = f"/mapped/{map_index}" if map_index >= 0 else ""
    parts = [quote(p, safe="") for p in (dag_id, dag_run_id, task_id)]
    return f"/dags/{parts[0]}/runs/{parts[1]}/tasks/{parts[2]}{mapped}/required_actions"


def use_case_dag_ids(use_case: str) -> tuple[str, str]:
    """The DAGs whose runs wrote what the page shows of a use case.

    Training registers the versions and asks for approvals; monitoring writes the
    drift history and the reports. Reading the use case on the page takes reading both.
    """
    return training_dag_id(use_case), monitoring_dag_id(use_case)


DocsKind = Literal["shared", "index", "suite", "unknown"]


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
    if parts[0] == "validations" and len(parts) >= 3:
        suite = parts[1]
    elif parts[0] == "expectations" and len(parts) == 2 and parts[1].endswith(".html"):
        suite = parts[1].removesuffix(".html")
    else:
        return "unknown", None
    if window:
        if not suite.endswith(WINDOW_SUITE_SUFFIX):
            return "unknown", None
        suite = suite.removesuffix(WINDOW_SUITE_SUFFIX)
    return "suite", suite


# --------------------------------------------------------------------------- file guard


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


# --------------------------------------------------------------------------- tags


def gate_facts(tags: dict[str, str]) -> tuple[bool | None, list[str], dict[str, str]]:
    """(passed, reasons, decision tags) read from the tags `mlops.registry` writes on a model version.

    `passed` is None when the gate has not judged the version (yet): its run is
    still evaluating, or the version was registered by hand.
    """
    decision = {k: v for k, v in sorted(tags.items()) if k.startswith(DECISION_TAG_PREFIXES)}
    verdict = tags.get(TAG_GATE_PASSED)
    passed = {"true": True, "false": False}.get(verdict) if verdict is not None else None
    return passed, reason_list(tags.get(TAG_GATE_REASONS, "")), decision


def reason_list(joined: str) -> list[str]:
    """The gate's reasons tag as one entry, as recorded.

    Not split at `; `: a regression check reads "rmse 130 is 30.0% worse than
    champion v2 (100); allowed 5.0%", and a split would tear it in two.
    """
    text = joined.strip()
    return [text] if text else []


def _when(millis: int | None) -> datetime | None:
    return datetime.fromtimestamp(millis / 1000, tz=UTC) if millis else None


# --------------------------------------------------------------------------- MLflow


def _client(settings: Settings) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


def _version_view(client: MlflowClient, mv: Any, base: str, run_metrics: dict[str, dict[str, float]]) -> VersionView:
    run_id = mv.run_id or None
    if run_id and run_id not in run_metrics:
        try:
            run_metrics[run_id] = dict(client.get_run(run_id).data.metrics)
        except Exception:  # a deleted run must not hide the version
            run_metrics[run_id] = {}
    passed, reasons, decision = gate_facts(dict(mv.tags or {}))
    return VersionView(
        version=str(mv.version),
        aliases=sorted(getattr(mv, "aliases", []) or []),
        run_id=run_id,
        created=_when(mv.creation_timestamp),
        updated=_when(mv.last_updated_timestamp),
        metrics=run_metrics.get(run_id, {}) if run_id else {},
        passed=passed,
        reasons=reasons,
        decision_tags=decision,
        tags=dict(mv.tags or {}),
        version_url=model_version_url(base, mv.name, str(mv.version)),
        run_url=run_url(base, run_id) if run_id else None,
        promoted_at=_parse_time((mv.tags or {}).get(TAG_PROMOTED_AT)),
    )


def model_versions(
    client: MlflowClient, model_name: str, base: str, recent: int = 8
) -> tuple[dict[str, VersionView], list[VersionView]]:
    """(alias -> version, newest `recent` versions) of a registered model; empty if unregistered."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}, []
        raise
    found = client.search_model_versions(
        f"name = '{model_name}'", max_results=max(recent, 1), order_by=["version_number DESC"]
    )
    metrics: dict[str, dict[str, float]] = {}
    newest = [_version_view(client, client.get_model_version(model_name, mv.version), base, metrics) for mv in found]
    by_alias: dict[str, VersionView] = {}
    for alias in ALIASES:
        view = next((v for v in newest if alias in v.aliases), None)
        if view is None:
            try:
                view = _version_view(client, client.get_model_version_by_alias(model_name, alias), base, metrics)
            except MlflowException:
                continue
        by_alias[alias] = view
    return by_alias, newest[:recent]


def drift_history(
    client: MlflowClient, use_case: str, base: str, limit: int = 60
) -> tuple[list[DriftPoint], str | None]:
    """Drift share of the newest `limit` monitoring runs, oldest first, and the experiment URL.

    The x value is the metric's own timestamp (the monitored window's end), so a
    replay of past windows plots in data time, not in wall-clock time.
    """
    experiment = client.get_experiment_by_name(monitoring_experiment(use_case))
    if experiment is None:
        return [], None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="metrics.drift_share >= 0",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    points = []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "drift_share")
        if not history:
            continue
        last = history[-1]
        points.append(
            DriftPoint(
                when=_when(last.timestamp) or datetime.fromtimestamp(0, tz=UTC),
                drift_share=float(last.value),
                action=run.data.tags.get("monitoring.action"),
                run_url=run_url(base, run.info.run_id),
            )
        )
    points.sort(key=lambda p: p.when)
    return points, experiment_url(base, experiment.experiment_id)


# --------------------------------------------------------------------------- folders


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


def safe_folder_name(key: str) -> str:
    """Same folder naming as `mlops.monitoring.report_dir` (kept in step by a unit test)."""
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in key) or "run"


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


# --------------------------------------------------------------------------- gathering


def gather_use_case(use_case: UseCase, settings: Settings | None = None, recent: int = 8) -> UseCaseView:
    """Everything the overview shows for one use case; MLflow failures land in `errors`."""
    settings = settings or get_settings()
    base = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    view = UseCaseView(
        name=use_case.name,
        description=use_case.description,
        model_name=use_case.model_name,
        primary_metric=use_case.gate.primary_metric,
        drift_threshold=use_case.monitoring.drift_share_threshold,
        model_url=model_url(base, use_case.model_name),
        approval_required=use_case.approval.required,
    )
    view.report = latest_report(settings.reports_dir, use_case.name)
    view.data_docs = latest_data_docs_page(settings.data_docs_dir, use_case.suite_name)
    try:
        client = _client(settings)
        view.by_alias, view.recent = model_versions(client, use_case.model_name, base, recent)
        view.drift, view.monitoring_url = drift_history(client, use_case.name, base)
    except Exception as exc:  # the page must render even when MLflow is down
        view.errors.append(f"MLflow at {settings.mlflow_tracking_uri} could not be read: {type(exc).__name__}: {exc}")
    return view


def gather_run(use_case: UseCase, dag_id: str, dag_run_id: str, settings: Settings | None = None) -> RunView:
    """What the DAG run `dag_id/dag_run_id` registered, logged and reported.

    Model versions by their `mlops.run_key` tag (mlops.registry), the training run's
    parent and candidate runs by the DAG-run tags mlops.tracking writes, a monitoring
    run by its `run_key` tag (mlops.monitoring), the report by its folder.
    """
    settings = settings or get_settings()
    base = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    key = run_key(dag_id, dag_run_id)
    view = RunView(use_case=gather_use_case(use_case, settings), dag_id=dag_id, run_id=dag_run_id, run_key=key)
    view.report = report_in(settings.reports_dir, settings.reports_dir / use_case.name / safe_folder_name(key))
    if "'" in key:  # Airflow's run ids hold no quote; MLflow's filter strings could not express one
        return view
    try:
        client = _client(settings)
        found = client.search_model_versions(f"name = '{use_case.model_name}' and tags.`{TAG_RUN_KEY}` = '{key}'")
        metrics: dict[str, dict[str, float]] = {}
        for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True):
            view.versions.append(
                _version_view(client, client.get_model_version(use_case.model_name, mv.version), base, metrics)
            )
        searches = [
            (use_case.name, f"tags.{TAG_DAG_ID} = '{dag_id}' and tags.{TAG_DAG_RUN_ID} = '{dag_run_id}'"),
            (monitoring_experiment(use_case.name), f"tags.{TAG_MONITORING_RUN_KEY} = '{key}'"),
        ]
        for experiment_name, filter_string in searches:
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                continue
            runs = client.search_runs(
                [experiment.experiment_id], filter_string=filter_string, order_by=["attributes.start_time ASC"]
            )
            for run in runs:
                view.mlflow_runs.append((run.info.run_name or run.info.run_id, run_url(base, run.info.run_id)))
                page = run.data.tags.get(TAG_DATA_DOCS_PAGE)
                view.data_docs = view.data_docs or relative_to_root(settings.data_docs_dir, page)
    except Exception as exc:
        view.errors.append(f"MLflow at {settings.mlflow_tracking_uri} could not be read: {type(exc).__name__}: {exc}")
    return view


def _parse_time(value: Any) -> datetime | None:
    """An ISO time (Airflow's, or one of our `mlops.*.at` tags) in UTC, as the page shows times."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _gate_run(client: MlflowClient, use_case: UseCase, dag_id: str, dag_run_id: str) -> Any:
    """The training run's parent MLflow run, where the gate logged its evidence; None if absent."""
    experiment = client.get_experiment_by_name(use_case.name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{TAG_RUN_TYPE}` = 'parent' and tags.{TAG_DAG_ID} = '{dag_id}' "
            f"and tags.{TAG_DAG_RUN_ID} = '{dag_run_id}'"
        ),
        max_results=1,
    )
    return runs[0] if runs else None


def _candidate_version(client: MlflowClient, use_case: UseCase, key: str, base: str) -> VersionView | None:
    found = client.search_model_versions(f"name = '{use_case.model_name}' and tags.`{TAG_RUN_KEY}` = '{key}'")
    if not found:
        return None
    first = min(found, key=lambda mv: int(mv.version))  # what registry.find_version_by_run_key returns
    return _version_view(client, client.get_model_version(use_case.model_name, first.version), base, {})


def _gate_metrics(metrics: dict[str, float], prefix: str, primary: str) -> dict[str, float]:
    """The gate's metrics with `prefix` (the platform's own metrics only), primary metric first."""
    found = {k.removeprefix(prefix): float(v) for k, v in metrics.items() if k.startswith(prefix)}
    known = sorted((k for k in found if k in METRIC_DIRECTIONS), key=lambda k: (k != primary, k))
    return {k: found[k] for k in known}


def pending_approvals(
    use_case: UseCase, requests: list[dict[str, Any]], settings: Settings | None = None
) -> list[PendingApproval]:
    """Open approval requests (Airflow's HITL details) of `use_case`'s training DAG, with the gate's evidence.

    `requests` is what Airflow's REST API returned (`hitl_details`). The candidate
    version is found by the run key the registry tags it with, the evidence on the
    DAG run's parent MLflow run: the gate's metrics for candidate and champion on
    the same holdout and its reasons. A request MLflow cannot explain still shows.
    """
    settings = settings or get_settings()
    base = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    client = _client(settings)
    found = []
    for request in requests:
        ti = request.get("task_instance") or {}
        dag_id, dag_run_id, task_id = str(ti.get("dag_id")), str(ti.get("dag_run_id")), str(ti.get("task_id"))
        # Airflow's run ids cannot hold a quote, which MLflow filters could not express.
        known = "'" not in dag_id + dag_run_id
        version = _candidate_version(client, use_case, run_key(dag_id, dag_run_id), base) if known else None
        gate = _gate_run(client, use_case, dag_id, dag_run_id) if known else None
        metrics = dict(gate.data.metrics) if gate else {}
        tags = dict(gate.data.tags) if gate else {}
        champion = tags.get("mlops.gate.champion_version")
        found.append(
            PendingApproval(
                dag_id=dag_id,
                dag_run_id=dag_run_id,
                task_id=task_id,
                subject=str(request.get("subject") or ""),
                requested_at=_parse_time(request.get("created_at")),
                review_path=required_action_path(dag_id, dag_run_id, task_id, int(ti.get("map_index", -1))),
                version=version,
                champion_version=None if champion in (None, "none") else champion,
                passed=gate_facts(tags)[0],
                reasons=reason_list(tags.get(TAG_GATE_REASONS, "")),
                candidate_metrics=_gate_metrics(metrics, "gate_candidate_", use_case.gate.primary_metric),
                champion_metrics=_gate_metrics(metrics, "gate_champion_", use_case.gate.primary_metric),
            )
        )
    return found


# --------------------------------------------------------------------------- chart


def drift_chart_svg(points: list[DriftPoint], threshold: float, width: int = 640, height: int = 180) -> str:
    """Drift share over time as inline SVG (no script, no network): a line, dots and the threshold."""
    if not points:
        return ""
    pad_left, pad_right, pad_top, pad_bottom = 40, 12, 10, 28
    plot_w, plot_h = width - pad_left - pad_right, height - pad_top - pad_bottom
    times = [p.when.timestamp() for p in points]
    t0, t1 = min(times), max(times)
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return pad_left + (plot_w / 2 if t1 == t0 else (t - t0) / span * plot_w)

    def y(v: float) -> float:
        v = min(max(v, 0.0), 1.0) if math.isfinite(v) else 0.0
        return pad_top + (1 - v) * plot_h

    coords = [(x(t), y(p.drift_share)) for t, p in zip(times, points, strict=True)]
    line = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="drift-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>Drift share over time</title>',
        f'<rect x="{pad_left}" y="{pad_top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{pad_left - 6}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick:.1f}</text>'
        )
    ty = y(threshold)
    parts.append(
        f'<line class="threshold" x1="{pad_left}" x2="{pad_left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
        f'stroke="#c0392b" stroke-dasharray="4 3"><title>retraining threshold {threshold:g}</title></line>'
    )
    parts.append(f'<polyline points="{line}" fill="none" stroke="#2c7fb8" stroke-width="2"/>')
    for (cx, cy), point in zip(coords, points, strict=True):
        label = html.escape(f"{point.when:%Y-%m-%d}: drift share {point.drift_share:.2f} ({point.action or '-'})")
        colour = "#c0392b" if point.drift_share >= threshold else "#2c7fb8"
        parts.append(
            f'<a href="{html.escape(point.run_url)}" target="_blank" rel="noopener">'
            f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}">'
            f"<title>{label}</title></circle></a>"
        )
    parts.append(
        f'<text x="{pad_left}" y="{height - 8}" font-size="10">{points[0].when:%Y-%m-%d}</text>'
        f'<text x="{pad_left + plot_w}" y="{height - 8}" font-size="10" text-anchor="end">'
        f"{points[-1].when:%Y-%m-%d}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)
