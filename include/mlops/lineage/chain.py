"""The lineage chain of one model version, assembled from the records the platform wrote.

Pure: `build_chain` takes the records as `mlops.lineage.gather` read them (the version and
its model's other versions, the training run and its parent, the monitoring run that asked
for the training, the DVC check, the logged prediction) and says what they mean. Nothing
here asks a server, so every rule is tested on hand-made records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlops.config import METRIC_DIRECTIONS, UseCase
from mlops.data.versioning import Availability
from mlops.lineage.history import AliasChange, alias_history, aliases_at, parse_time
from mlops.mlflow.browse import VersionRecord, run_name
from mlops.mlflow.runs import RunRecord
from mlops.naming import (
    APPROVAL_TAGS,
    METRIC_DRIFT_SHARE,
    TAG_APPROVAL_REASON,
    TAG_CANDIDATE_KEY,
    TAG_DAG_ID,
    TAG_DAG_RUN_ID,
    TAG_DATA_DOCS_PAGE,
    TAG_DVC_MD5,
    TAG_GATE_CHAMPION_VERSION,
    TAG_GATE_CHECKS,
    TAG_GATE_PASSED,
    TAG_GATE_REASONS,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_MONITORING_ACTION,
    TAG_MONITORING_CHAMPION_VERSION,
    TAG_MONITORING_REPORT,
    TAG_MONITORING_RUN_KEY,
    TAG_REASON,
    TAG_RUN_KEY,
    TAG_SNAPSHOT_PATH,
    TAG_SNAPSHOT_ROWS,
    TAG_UV_LOCK,
    TAG_VALIDATION_STATISTICS,
    TAG_VALIDATION_SUCCESS,
    TAG_WINDOW_END,
    TAG_WINDOW_START,
)

NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Records:
    """What lineage reads, as the stores answered."""

    version: VersionRecord
    versions: list[VersionRecord]
    """Every version of the model: their tags replay the aliases over time."""
    training_run: RunRecord | None
    parent_run: RunRecord | None
    monitoring_run: RunRecord | None = None
    availability: Availability | None = None
    """The DVC check of the snapshot; None when it was not checked (see `availability_error`)."""
    availability_error: str | None = None
    use_case: UseCase | None = None
    use_case_origin: str = ""
    """Where `use_case` came from: the config recorded with the run, or the config file now."""
    prediction: dict[str, Any] | None = None
    gate_decision: dict[str, Any] | None = None
    """The gate's `gate/decision.json` on the parent run (with the slice scores)."""


@dataclass(frozen=True)
class PredictionFacts:
    request_id: str
    use_case: str
    event_time: str | None
    logged_at: str | None
    source: str | None
    inputs: dict[str, Any]
    output: Any
    role: str
    """The alias the version held when the prediction was logged (or the role the log recorded)."""
    other_columns: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingFacts:
    run_id: str
    run_name: str
    status: str
    started: str | None
    candidate_key: str
    estimator: str
    params: dict[str, str]
    metrics: dict[str, float]
    parent_run_id: str | None
    parent_run_name: str | None


@dataclass(frozen=True)
class DataFacts:
    dvc_md5: str
    snapshot_path: str
    restorable: bool | None
    """Whether a copy hashing to the md5 is in the DVC cache or a remote now; None when not checked."""
    availability: str
    source: str
    window_start: str
    window_end: str
    rows: int | None


@dataclass(frozen=True)
class CodeFacts:
    git_commit: str
    git_dirty: str
    uv_lock_sha256: str


@dataclass(frozen=True)
class ValidationFacts:
    result: str
    statistics: str
    data_docs_page: str | None


@dataclass(frozen=True)
class TriggerFacts:
    reason: str
    monitoring_run_id: str | None
    monitoring_run_key: str | None
    action: str | None
    drift_share: float | None
    champion_version: str | None
    """The champion whose training data the monitoring run compared the window with."""
    report: str | None


@dataclass(frozen=True)
class GateFacts:
    passed: bool | None
    reasons: str
    checks: list[str]
    """Every check the gate made: the decision's own list, else the version's tag as one entry
    (its checks are joined with `; `, which some checks also contain)."""
    champion_version: str | None
    candidate_slices: dict[str, dict[str, float]]
    champion_slices: dict[str, dict[str, float]]
    slice_rows: dict[str, dict[str, int]]


@dataclass(frozen=True)
class ApprovalFacts:
    required: bool | None
    decision: str | None
    by: str | None
    at: str | None
    reason: str | None

    def describe(self) -> str:
        if self.decision:
            who = f" by {self.by}" if self.by and self.by != "nobody" else ""
            return f"{self.decision}{who}" + (f" at {self.at}" if self.at else "")
        if self.required is False:
            return "not required (approval.required is false): nobody was asked"
        if self.required:
            return "required; no answer recorded yet"
        return NOT_RECORDED


@dataclass(frozen=True)
class Chain:
    """Where one model version came from, and what became of it."""

    model_name: str
    version: str
    use_case: str | None
    use_case_origin: str
    aliases: list[str]
    registered_at: str | None
    run_key: str | None
    alias_history: list[AliasChange]
    training: TrainingFacts | None
    data: DataFacts
    code: CodeFacts
    validation: ValidationFacts
    trigger: TriggerFacts | None
    airflow_dag_id: str | None
    airflow_run_id: str | None
    gate: GateFacts
    approval: ApprovalFacts
    prediction: PredictionFacts | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _absent(value: str | None) -> bool:
    # Lineage tags are written with str(), so a missing value can read "None".
    return value is None or value in ("", "None", "none")


def _tag(tags: dict[str, str], key: str) -> str | None:
    value = tags.get(key)
    return None if _absent(value) else value


def build_chain(records: Records) -> Chain:
    """The chain of `records.version`, each fact from the record that holds it."""
    version = records.version
    run_tags = records.training_run.tags if records.training_run else {}
    parent_tags = records.parent_run.tags if records.parent_run else {}
    tags = {**parent_tags, **run_tags}
    history = alias_history((v.version, v.tags) for v in records.versions)
    return Chain(
        model_name=version.name,
        version=version.version,
        use_case=records.use_case.name if records.use_case else None,
        use_case_origin=records.use_case_origin,
        aliases=list(version.aliases),
        registered_at=version.created.isoformat(timespec="seconds") if version.created else None,
        run_key=_tag(version.tags, TAG_RUN_KEY),
        alias_history=[c for c in history if c.version == version.version],
        training=_training(records.training_run, records.parent_run),
        data=_data(records, tags),
        code=CodeFacts(
            git_commit=_tag(tags, TAG_GIT_COMMIT) or NOT_RECORDED,
            git_dirty=_tag(tags, TAG_GIT_DIRTY) or NOT_RECORDED,
            uv_lock_sha256=_tag(tags, TAG_UV_LOCK) or NOT_RECORDED,
        ),
        validation=_validation(tags),
        trigger=_trigger(tags, records.monitoring_run),
        airflow_dag_id=_tag(tags, TAG_DAG_ID),
        airflow_run_id=_tag(tags, TAG_DAG_RUN_ID),
        gate=_gate(version.tags, parent_tags, records.gate_decision),
        approval=_approval(version.tags, records.use_case),
        prediction=_prediction(records, history),
    )


def _training(run: RunRecord | None, parent: RunRecord | None) -> TrainingFacts | None:
    if run is None:
        return None
    return TrainingFacts(
        run_id=run.run_id,
        run_name=run_name(run),
        status=run.status,
        started=run.start_time.isoformat(timespec="seconds") if run.start_time else None,
        candidate_key=run.tags.get(TAG_CANDIDATE_KEY, NOT_RECORDED),
        estimator=run.tags.get("mlops.estimator") or run.params.get("estimator", NOT_RECORDED),
        params=dict(sorted(run.params.items())),
        metrics={k: v for k, v in sorted(run.metrics.items()) if k in METRIC_DIRECTIONS},
        parent_run_id=parent.run_id if parent else run.tags.get("mlflow.parentRunId"),
        parent_run_name=run_name(parent) if parent else None,
    )


def _rows(tags: dict[str, str], run: RunRecord | None) -> int | None:
    recorded = _tag(tags, TAG_SNAPSHOT_ROWS)
    if recorded is not None and recorded.isdigit():
        return int(recorded)
    if run is not None and run.params.get("n_train", "").isdigit() and run.params.get("n_holdout", "").isdigit():
        return int(run.params["n_train"]) + int(run.params["n_holdout"])
    return None


def _data(records: Records, tags: dict[str, str]) -> DataFacts:
    from mlops.data.ingestion import describe_source

    availability = records.availability
    if availability is not None:
        restorable: bool | None = availability.restorable
        described = availability.describe()
    else:
        restorable = None
        described = records.availability_error or "not checked"
    return DataFacts(
        dvc_md5=_tag(tags, TAG_DVC_MD5) or NOT_RECORDED,
        snapshot_path=_tag(tags, TAG_SNAPSHOT_PATH) or NOT_RECORDED,
        restorable=restorable,
        availability=described,
        source=describe_source(records.use_case) if records.use_case else NOT_RECORDED,
        window_start=_tag(tags, TAG_WINDOW_START) or "unbounded",
        window_end=_tag(tags, TAG_WINDOW_END) or "unbounded",
        rows=_rows(tags, records.training_run),
    )


def _validation(tags: dict[str, str]) -> ValidationFacts:
    success = _tag(tags, TAG_VALIDATION_SUCCESS)
    page = _tag(tags, TAG_DATA_DOCS_PAGE)
    if success is not None:
        result = "passed" if success == "true" else "failed"
    elif page is not None:
        # The training DAG stops at a failed validation, so a trained model's snapshot passed.
        result = "passed (the training run continued past the validation gate)"
    else:
        result = NOT_RECORDED
    return ValidationFacts(result, _tag(tags, TAG_VALIDATION_STATISTICS) or NOT_RECORDED, page)


def _trigger(tags: dict[str, str], monitoring: RunRecord | None) -> TriggerFacts | None:
    reason = _tag(tags, TAG_REASON)
    report = _tag(tags, TAG_MONITORING_REPORT)
    if reason is None and report is None and monitoring is None:
        return None
    monitoring_tags = monitoring.tags if monitoring else {}
    return TriggerFacts(
        reason=reason or NOT_RECORDED,
        monitoring_run_id=monitoring.run_id if monitoring else None,
        monitoring_run_key=monitoring_tags.get(TAG_MONITORING_RUN_KEY),
        action=monitoring_tags.get(TAG_MONITORING_ACTION),
        drift_share=monitoring.metrics.get(METRIC_DRIFT_SHARE) if monitoring else None,
        champion_version=monitoring_tags.get(TAG_MONITORING_CHAMPION_VERSION),
        report=report,
    )


def _gate(version_tags: dict[str, str], parent_tags: dict[str, str], decision: dict[str, Any] | None) -> GateFacts:
    # The version carries the gate's tags once promotion applied them; before, the parent run does.
    tags = version_tags if TAG_GATE_PASSED in version_tags else parent_tags
    verdict = tags.get(TAG_GATE_PASSED)
    document = decision or {}
    recorded = tags.get(TAG_GATE_CHECKS)
    checks = list(document.get("checks") or ([recorded] if recorded else []))
    return GateFacts(
        passed={"true": True, "false": False}.get(verdict) if verdict else None,
        reasons=tags.get(TAG_GATE_REASONS, ""),
        checks=checks,
        champion_version=_tag(tags, TAG_GATE_CHAMPION_VERSION),
        candidate_slices=dict(document.get("candidate_slices") or {}),
        champion_slices=dict(document.get("champion_slices") or {}),
        slice_rows=dict(document.get("slice_rows") or {}),
    )


def _approval(tags: dict[str, str], use_case: UseCase | None) -> ApprovalFacts:
    decision, by, at = (tags.get(tag) for tag in APPROVAL_TAGS)
    return ApprovalFacts(
        required=use_case.approval.required if use_case else None,
        decision=decision,
        by=by,
        at=at,
        reason=tags.get(TAG_APPROVAL_REASON),
    )


def _prediction(records: Records, history: list[AliasChange]) -> PredictionFacts | None:
    row = records.prediction
    if row is None:
        return None
    columns = dict(row.get("columns") or {})
    features = records.use_case.features.all if records.use_case else list(columns)
    inputs = {name: columns.pop(name) for name in features if name in columns}
    return PredictionFacts(
        request_id=str(row.get("request_id")),
        use_case=str(row.get("use_case")),
        event_time=row.get("event_time"),
        logged_at=row.get("logged_at"),
        source=row.get("source"),
        inputs=inputs,
        output=row.get("prediction"),
        role=_role(columns, str(row.get("model_version")), row.get("logged_at"), history),
        other_columns=columns,
    )


def _role(columns: dict[str, Any], version: str, logged_at: str | None, history: list[AliasChange]) -> str:
    """The role the log recorded, else the aliases the version held when the prediction was logged."""
    if not _absent(columns.get("role")):
        return f"{columns['role']} (as logged)"
    when = parse_time(logged_at)
    if when is None:
        return NOT_RECORDED
    held = aliases_at(history, version, when)
    if not held:
        return f"v{version} held no alias when this was logged (by the alias history)"
    return " ".join(f"@{alias}" for alias in held) + " (by the alias history at the time it was logged)"
