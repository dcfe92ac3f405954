"""What the Airflow "MLOps" page shows: its view models, and how a use case's or a run's view is gathered.

The facts come from MLflow (mlops.ui.queries: the Model Registry's aliases and the
version tags with the gate decision, run metrics, the `<use_case>-monitoring`
experiment) and from the project's folders (mlops.ui.files: the Evidently reports and
the Great Expectations Data Docs); nothing from XCom and nothing from Airflow. Importing
this module stays cheap (the plugin does, in every Airflow process): the queries, and
MLflow behind them, are imported when a view is first gathered.

Promotions waiting for a person are the one fact MLflow cannot know: the plugin asks
Airflow's REST API for the open human-in-the-loop requests and hands them to
`pending_approvals`, which adds the gate's evidence from MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops.config import METRIC_DIRECTIONS, UseCase
from mlops.naming import (
    APPROVAL_TAGS,
    DECISION_TAG_PREFIXES,
    GATE_CANDIDATE_METRIC_PREFIX,
    GATE_CHAMPION_METRIC_PREFIX,
    TAG_DATA_DOCS_PAGE,
    TAG_GATE_CHAMPION_VERSION,
    TAG_GATE_PASSED,
    TAG_GATE_REASONS,
    TAG_MONITORING_ACTION,
    TAG_PROMOTED_AT,
    TAG_REJECTION_REASON,
    monitoring_dag_id,
    run_key,
    training_dag_id,
)
from mlops.settings import Settings, get_settings
from mlops.ui import files, urls
from mlops.ui.files import ReportView

if TYPE_CHECKING:
    from mlops.mlflow.browse import MetricPoint, VersionRecord
    from mlops.ui.lineage import LineageView
    from mlops.ui.queries import PageQueries
    from mlops.ui.rollout import RolloutView

EPOCH = datetime.fromtimestamp(0, tz=UTC)


# --------------------------------------------------------------------------- view models


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
    labels: str | None = None
    """The label lag of the newest monitoring run ('labels: 62 % of the last window, median 3.1 h late')."""
    skew: tuple[str, bool] | None = None
    """The newest monitoring run's training/serving skew check, in words, and whether it found skew."""
    data_docs: str | None = None
    """Newest Data Docs validation page, relative to the Data Docs root."""
    approval_required: bool = False
    pending: list[PendingApproval] = field(default_factory=list)
    lineage: list[LineageView] = field(default_factory=list)
    """Each alias's version traced back (mlops.ui.lineage), in alias order."""
    rollout: RolloutView | None = None
    """The shadow or canary in progress (mlops.ui.rollout); None when no version holds @shadow or @canary."""
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


def use_case_dag_ids(use_case: str) -> tuple[str, str]:
    """The DAGs whose runs wrote what the page shows of a use case.

    Training registers the versions and asks for approvals; monitoring writes the
    drift history and the reports. Reading the use case on the page takes reading both.
    """
    return training_dag_id(use_case), monitoring_dag_id(use_case)


# --------------------------------------------------------------------------- reading tags


def gate_facts(tags: dict[str, str]) -> tuple[bool | None, list[str], dict[str, str]]:
    """(passed, reasons, decision tags) read from the tags `mlops.mlflow.registry` writes on a model version.

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


def _parse_time(value: Any) -> datetime | None:
    """An ISO time (Airflow's, or one of our `mlops.*.at` tags) in UTC, as the page shows times."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _gate_metrics(metrics: dict[str, float], prefix: str, primary: str) -> dict[str, float]:
    """The gate's metrics with `prefix` (the platform's own metrics only), primary metric first."""
    found = {k.removeprefix(prefix): float(v) for k, v in metrics.items() if k.startswith(prefix)}
    known = sorted((k for k in found if k in METRIC_DIRECTIONS), key=lambda k: (k != primary, k))
    return {k: found[k] for k in known}


# --------------------------------------------------------------------------- records to views


def version_view(queries: PageQueries, record: VersionRecord, base: str) -> VersionView:
    """A model version as the page shows it: its run's metrics, the gate's verdict, links into MLflow."""
    passed, reasons, decision = gate_facts(record.tags)
    return VersionView(
        version=record.version,
        aliases=record.aliases,
        run_id=record.run_id,
        created=record.created,
        updated=record.updated,
        metrics=queries.run_metrics(record.run_id) if record.run_id else {},
        passed=passed,
        reasons=reasons,
        decision_tags=decision,
        tags=record.tags,
        version_url=urls.model_version_url(base, record.name, record.version),
        run_url=urls.run_url(base, record.run_id) if record.run_id else None,
        promoted_at=_parse_time(record.tags.get(TAG_PROMOTED_AT)),
    )


def drift_points(points: list[MetricPoint], base: str) -> list[DriftPoint]:
    """Monitoring runs' drift shares as chart points, oldest window first."""
    found = [
        DriftPoint(
            when=point.when or EPOCH,
            drift_share=point.value,
            action=point.run.tags.get(TAG_MONITORING_ACTION),
            run_url=urls.run_url(base, point.run.run_id),
        )
        for point in points
    ]
    return sorted(found, key=lambda p: p.when)


def _expressible(*ids: str) -> bool:
    """Whether MLflow search filters can name these ids: they cannot hold a quote (Airflow's ids never do)."""
    return not any("'" in i for i in ids)


def _queries(settings: Settings) -> PageQueries:
    """The MLflow queries of one request, imported on first use (see the module docstring)."""
    from mlops.ui.queries import PageQueries

    return PageQueries(settings.mlflow_tracking_uri)


def _unreadable(settings: Settings, exc: Exception) -> str:
    return f"MLflow at {settings.mlflow_tracking_uri} could not be read: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- gathering


def gather_use_case(use_case: UseCase, settings: Settings | None = None, recent: int = 8) -> UseCaseView:
    """Everything the overview shows for one use case; MLflow failures land in `errors`."""
    settings = settings or get_settings()
    base = urls.mlflow_ui_base(settings)
    view = UseCaseView(
        name=use_case.name,
        description=use_case.description,
        model_name=use_case.model_name,
        primary_metric=use_case.gate.primary_metric,
        drift_threshold=use_case.monitoring.drift_share_threshold,
        model_url=urls.model_url(base, use_case.model_name),
        approval_required=use_case.approval.required,
    )
    view.report = files.latest_report(settings.reports_dir, use_case.name)
    latest = files.latest_summary(settings.reports_dir, use_case.name)
    view.labels = files.label_lag_line(latest)
    view.skew = files.skew_line(latest)
    view.data_docs = files.latest_data_docs_page(settings.data_docs_dir, use_case.suite_name)
    try:
        queries = _queries(settings)
        by_alias = _add_registry_and_drift(view, queries, recent, base)
        _add_rollout(view, use_case, by_alias, base)
        _add_lineage(view, queries, use_case, by_alias, settings)
    except Exception as exc:  # the page must render even when MLflow is down
        view.errors.append(_unreadable(settings, exc))
    return view


def _add_rollout(view: UseCaseView, use_case: UseCase, by_alias: dict[str, VersionRecord], base: str) -> None:
    from mlops.ui.rollout import rollout_alias, rollout_view

    aliases = {alias: record.version for alias, record in by_alias.items()}
    alias = rollout_alias(aliases)
    if alias is not None:
        view.rollout = rollout_view(use_case, aliases, by_alias[alias].tags, base)


def _add_lineage(
    view: UseCaseView, queries: PageQueries, use_case: UseCase, by_alias: dict[str, VersionRecord], settings: Settings
) -> None:
    from mlops.ui.lineage import lineage_view

    view.lineage = [lineage_view(queries, use_case, alias, record, settings) for alias, record in by_alias.items()]


def _add_registry_and_drift(
    view: UseCaseView, queries: PageQueries, recent: int, base: str
) -> dict[str, VersionRecord]:
    """The aliases' versions and the newest versions as views, the drift history; returns the alias records.

    `by_alias` holds the rollout aliases too (queries.PAGE_ALIASES): the alias table shows
    its own aliases only, and the rollout panel and the lineage read the rest.
    """
    by_alias, newest = queries.model_versions(view.model_name, recent)
    view.by_alias = {alias: version_view(queries, record, base) for alias, record in by_alias.items()}
    view.recent = [version_view(queries, record, base) for record in newest]
    points, experiment_id = queries.drift_history(view.name, limit=60)
    view.drift = drift_points(points, base)
    view.monitoring_url = urls.experiment_url(base, experiment_id) if experiment_id is not None else None
    return by_alias


def gather_run(use_case: UseCase, dag_id: str, dag_run_id: str, settings: Settings | None = None) -> RunView:
    """What the DAG run `dag_id/dag_run_id` registered, logged and reported, above its use case's view.

    Model versions by the registry's `mlops.run_key` tag, a training run's parent and
    candidate runs by their DAG-run tags, a monitoring run by its `run_key` tag, the
    report by its folder, the Data Docs page by the runs' `data_docs_page` tag.
    """
    settings = settings or get_settings()
    key = run_key(dag_id, dag_run_id)
    view = RunView(use_case=gather_use_case(use_case, settings), dag_id=dag_id, run_id=dag_run_id, run_key=key)
    view.report = files.run_report(settings.reports_dir, use_case.name, key)
    if not _expressible(key):
        return view
    try:
        _add_what_the_run_logged(view, use_case, _queries(settings), settings)
    except Exception as exc:
        view.errors.append(_unreadable(settings, exc))
    return view


def _add_what_the_run_logged(view: RunView, use_case: UseCase, queries: PageQueries, settings: Settings) -> None:
    from mlops.mlflow.browse import run_name

    base = urls.mlflow_ui_base(settings)
    found = queries.dag_run_versions(use_case.model_name, view.dag_id, view.run_id)
    view.versions = [version_view(queries, record, base) for record in found]
    for run in queries.dag_run_mlflow_runs(use_case.name, view.dag_id, view.run_id):
        view.mlflow_runs.append((run_name(run), urls.run_url(base, run.run_id)))
        page = files.relative_to_root(settings.data_docs_dir, run.tags.get(TAG_DATA_DOCS_PAGE))
        view.data_docs = view.data_docs or page


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
    queries = _queries(settings)
    return [_pending_approval(queries, use_case, request, urls.mlflow_ui_base(settings)) for request in requests]


def _pending_approval(queries: PageQueries, use_case: UseCase, request: dict[str, Any], base: str) -> PendingApproval:
    ti = request.get("task_instance") or {}
    dag_id, dag_run_id, task_id = str(ti.get("dag_id")), str(ti.get("dag_run_id")), str(ti.get("task_id"))
    known = _expressible(dag_id, dag_run_id)
    candidate = queries.candidate_version(use_case.model_name, dag_id, dag_run_id) if known else None
    gate = queries.gate_run(use_case.name, dag_id, dag_run_id) if known else None
    metrics = gate.metrics if gate else {}
    tags = gate.tags if gate else {}
    champion = tags.get(TAG_GATE_CHAMPION_VERSION)
    primary = use_case.gate.primary_metric
    return PendingApproval(
        dag_id=dag_id,
        dag_run_id=dag_run_id,
        task_id=task_id,
        subject=str(request.get("subject") or ""),
        requested_at=_parse_time(request.get("created_at")),
        review_path=urls.required_action_path(dag_id, dag_run_id, task_id, int(ti.get("map_index", -1))),
        version=version_view(queries, candidate, base) if candidate else None,
        champion_version=None if champion in (None, "none") else champion,
        passed=gate_facts(tags)[0],
        reasons=reason_list(tags.get(TAG_GATE_REASONS, "")),
        candidate_metrics=_gate_metrics(metrics, GATE_CANDIDATE_METRIC_PREFIX, primary),
        champion_metrics=_gate_metrics(metrics, GATE_CHAMPION_METRIC_PREFIX, primary),
    )
