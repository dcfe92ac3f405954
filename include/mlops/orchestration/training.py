"""Build the training DAG of one use case: ingest → validate → train (mapped) → evaluate → register → promote.

Tasks hand on paths, ids and hashes, never data frames: the snapshot's path goes to
training and to evaluation alike, and each stage reads the frames it needs from it.
Each task calls a stage module of the package; this file decides only order, retries
and triggers. Every task is keyed on the DAG run, so clearing and re-running one is safe.

`build_training_dag` wires the steps; each helper below it defines one task and applies
it to its inputs, in the order the DAG runs them. The optional approval step is
`orchestration.approval`, the training slot `orchestration.training_slot`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlops.config import UseCase
from mlops.naming import run_key, training_dag_id
from mlops.orchestration.assets import challenger_asset, champion_asset
from mlops.orchestration.connections import sql_uri
from mlops.orchestration.defaults import COMPUTE_BOUND, GATE, NETWORK_BOUND, REGISTRY, dag_kwargs
from mlops.orchestration.training_slot import QUEUE_XCOM_KEY, claim_training_slot

# What calling a TaskFlow task inside a DAG gives: an XComArg to wire on (Airflow leaves it untyped).
TaskOutput = Any


def build_training_dag(use_case: UseCase) -> DAG:
    @dag(
        schedule=use_case.schedule.training,
        **dag_kwargs(
            training_dag_id(use_case.name),
            tags=["training", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(hours=3),
            owner=use_case.owner,
            access=use_case.access,
            params=_params(),
        ),
    )
    def training() -> None:
        snapshot = _ingest_snapshot(use_case)
        if use_case.feature_store is not None:
            _check_feature_store(use_case) >> snapshot
        validation = _validate_snapshot(use_case, snapshot)
        parent = _start_tracking_run(use_case, snapshot, validation)
        results = _train_candidates(use_case, snapshot, parent)
        validation >> results
        evaluation = _evaluate_candidate(use_case, results, snapshot, parent)
        version = _register_candidate(use_case, evaluation)
        promotion = _promote_candidate(use_case, evaluation, version)
        _publish_champion(use_case, promotion)
        if use_case.deployment.strategy in ("shadow", "canary"):
            _publish_challenger(use_case, promotion)
        if use_case.approval.required:
            from mlops.orchestration.approval import wire_approval

            wire_approval(use_case, evaluation, version, promotion)

    return training()


def _doc(use_case: UseCase) -> str:
    return f"""
### Train `{use_case.name}`

{use_case.description}

Ingests a snapshot of `{use_case.source.kind}` data (versioned by DVC), validates it with the
Great Expectations suite `{use_case.suite_name}` (a failure stops the run before training),
trains {len(use_case.candidates)} candidate families as parallel mapped tasks tracked in MLflow,
compares the best with `@champion` on `{use_case.gate.primary_metric}`, and registers it as
`{use_case.model_name}`: promoted to `@champion` (old one kept as `@previous`) or kept as
`@challenger` with the reasons. A promotion updates the Asset `{champion_asset(use_case).name}`.
{_shadow_doc(use_case)}
**Params**: `as_of` (exclusive end of the training window, `YYYY-MM-DD`; default from config),
`reason` (why this run was triggered; recorded in MLflow).
"""


def _shadow_doc(use_case: UseCase) -> str:
    strategy = use_case.deployment.strategy
    if strategy == "direct":
        return ""
    how = (
        "scored beside the champion on every request, off the response path"
        if strategy == "shadow"
        else f"answering {', then '.join(f'{f:.0%}' for f in use_case.deployment.canary_steps)} of the requests"
    )
    return f"""
**{strategy.title()} rollout**: a candidate that passes the gate becomes `@{strategy}` instead (while a champion
exists), {how}, updating the Asset `{challenger_asset(use_case).name}`; `rollout_{use_case.name}` promotes or
rejects it on live labelled traffic. While a rollout is in progress a new passing candidate stays `@challenger`.
"""


def _params() -> dict[str, Param]:
    return {
        "as_of": Param(None, type=["null", "string"], description="Exclusive end of the window, YYYY-MM-DD"),
        "reason": Param("scheduled or manual run", type="string", description="Why training runs"),
        "report": Param(None, type=["null", "string"], description="Monitoring report that asked for it"),
    }


def _run_key(context: Any) -> str:
    return run_key(context["dag"].dag_id, context["run_id"])


# ----------------------------------------------------------------------------- the steps, in order


def _check_feature_store(use_case: UseCase) -> TaskOutput:
    """A store-backed use case: the store `materialize_features` loads is registered and holds its views.

    The features Asset is the task's inlet, so the Asset graph shows training reading what
    materialization writes; an unready store fails here, naming the DAG to trigger.
    """
    from mlops.orchestration.features import online_features_asset

    @task(**GATE, inlets=[online_features_asset()])
    def check_feature_store() -> dict[str, dict[str, str]]:
        from mlops.data.store_features import StoreFeaturesError, check_store_ready

        try:
            return check_store_ready(use_case)
        except StoreFeaturesError as exc:
            raise AirflowFailException(str(exc)) from exc  # a retry reads the same store

    return check_feature_store()


def _ingest_snapshot(use_case: UseCase) -> TaskOutput:
    """Claim the training slot, then write and version this run's snapshot; returns its record."""

    @task(**NETWORK_BOUND)
    def ingest_snapshot(**context: Any) -> dict[str, Any]:
        from mlops.data import ingestion

        context["ti"].xcom_push(key=QUEUE_XCOM_KEY, value=claim_training_slot(use_case, context))
        try:
            # "The future" is judged against when this run was due, not the worker's clock,
            # so a re-run of the same DAG run reaches the same verdict.
            snapshot = ingestion.ingest_snapshot(
                use_case,
                run_id=context["run_id"],
                as_of=context["params"].get("as_of"),
                sql_uri_resolver=sql_uri,
                today=context["dag_run"].run_after.date(),
            )
        except ingestion.IngestionError as exc:
            # Bad data (empty, truncated, undecodable, an empty window) will not change on
            # retry; only connection-type failures are worth the retry policy.
            raise AirflowFailException(str(exc)) from exc
        return snapshot.to_dict()

    return ingest_snapshot()


def _validate_snapshot(use_case: UseCase, snapshot: TaskOutput) -> TaskOutput:
    """The snapshot against the use case's suite; a failure stops the run before training."""

    @task(**GATE)
    def validate_snapshot(snapshot: dict[str, Any], **context: Any) -> dict[str, Any]:
        from mlops.data import ingestion, validation

        frame = ingestion.read_snapshot(snapshot["path"])
        outcome = validation.validate_snapshot(use_case, frame, context["run_id"], snapshot.get("window_end"))
        if not outcome.success:
            # The Data Docs button reads the return value, which a failed task never gets:
            # pushed first, the link is there exactly when someone needs to read why.
            context["ti"].xcom_push(key="return_value", value=outcome.to_dict())
        validation.ensure_valid(outcome)
        return outcome.to_dict()

    return validate_snapshot(snapshot)


def _start_tracking_run(use_case: UseCase, snapshot: TaskOutput, validation: TaskOutput) -> TaskOutput:
    """The MLflow parent run of this DAG run, carrying its lineage; returns its run id."""

    @task(**NETWORK_BOUND)
    def start_tracking_run(snapshot: dict[str, Any], validation: dict[str, Any], **context: Any) -> str:
        from mlops.training import runs as training_runs

        queue = context["ti"].xcom_pull(task_ids="ingest_snapshot", key=QUEUE_XCOM_KEY) or {}
        lineage = _parent_lineage(snapshot, validation, context["params"], queue)
        try:
            return training_runs.start_parent_run(use_case, context["dag"].dag_id, context["run_id"], lineage)
        except training_runs.SnapshotChangedError as exc:
            raise AirflowFailException(str(exc)) from exc  # the data will not change back on retry

    return start_tracking_run(snapshot, validation)


def _parent_lineage(
    snapshot: dict[str, Any], validation: dict[str, Any], params: dict[str, Any], queue: dict[str, str]
) -> dict[str, str]:
    statistics = validation.get("statistics") or {}
    passed, evaluated = statistics.get("successful_expectations"), statistics.get("evaluated_expectations")
    return {
        "snapshot_path": snapshot["path"],
        "dvc_md5": snapshot["md5"],
        "dvc_file": snapshot["dvc_file"],
        "snapshot_rows": str(snapshot.get("rows")),
        "window_start": str(snapshot.get("window_start")),
        "window_end": str(snapshot.get("window_end")),
        "data_docs_page": str(validation.get("data_docs_page")),
        "validation_success": str(bool(validation.get("success"))).lower(),
        "validation_statistics": f"{passed:g} of {evaluated:g} expectations met" if evaluated is not None else "None",
        "reason": str(params.get("reason")),
        "monitoring_report": str(params.get("report")),
        # Why this run started later than asked (queued behind another run), if it did.
        **queue,
        **_feature_lineage(snapshot.get("features")),
    }


def _feature_lineage(features: dict[str, Any] | None) -> dict[str, str]:
    """A store-backed snapshot's views and the versions (md5 of each offline table) it joined."""
    if not features:
        return {}
    views = features.get("views", {})
    return {
        "feature_views": ",".join(f"{view}@{version}" for view, version in sorted(views.items())),
        "feature_references": ",".join(features.get("references", [])),
        "rows_without_features": str(features.get("rows_without_features")),
    }


def _train_candidates(use_case: UseCase, snapshot: TaskOutput, parent: TaskOutput) -> TaskOutput:
    """One mapped `train_candidate` per point of the candidate grid that `list_candidates` expands."""

    @task
    def list_candidates() -> list[dict[str, Any]]:
        from mlops.training import candidates as training_candidates

        return [spec.to_dict() for spec in training_candidates.expand_candidates(use_case)]

    # Two cores: more concurrent fits only slow each other down.
    @task(**COMPUTE_BOUND, max_active_tis_per_dag=2)
    def train_candidate(
        spec: dict[str, Any], snapshot: dict[str, Any], parent_run_id: str, **context: Any
    ) -> dict[str, Any]:
        from mlops.training import runs as training_runs

        lineage = {
            "dvc_md5": snapshot["md5"],
            "snapshot_path": snapshot["path"],
            "dag_id": context["dag"].dag_id,
            "run_id": context["run_id"],
            "reason": str(context["params"].get("reason")),
        }
        try:
            result = training_runs.train_and_log_candidate(use_case, spec, snapshot["path"], parent_run_id, lineage)
        except training_runs.SnapshotChangedError as exc:
            raise AirflowFailException(str(exc)) from exc
        return result.to_dict()

    return train_candidate.partial(snapshot=snapshot, parent_run_id=parent).expand(spec=list_candidates())


def _evaluate_candidate(use_case: UseCase, results: TaskOutput, snapshot: TaskOutput, parent: TaskOutput) -> TaskOutput:
    """The best candidate judged against `@champion` on the snapshot's holdout; returns it with the decision."""

    @task(**GATE)
    def evaluate_candidate(
        results: list[dict[str, Any]], snapshot: dict[str, Any], parent_run_id: str
    ) -> dict[str, Any]:
        from mlops.evaluation import champion
        from mlops.training.results import CandidateResult

        best = champion.select_best(use_case, [CandidateResult.from_dict(r) for r in results])
        decision = champion.evaluate_against_champion(use_case, best, snapshot["path"], parent_run_id)
        return {"candidate": best.to_dict(), "decision": decision.to_dict()}

    return evaluate_candidate(results, snapshot, parent)


def _register_candidate(use_case: UseCase, evaluation: TaskOutput) -> TaskOutput:
    """The evaluated candidate as a model version (once per DAG run); returns the version."""

    @task(**REGISTRY)
    def register_candidate(evaluation: dict[str, Any], **context: Any) -> str:
        from mlops.promotion import decisions

        return decisions.register_candidate(use_case, evaluation["candidate"], _run_key(context))

    return register_candidate(evaluation)


def _promote_candidate(use_case: UseCase, evaluation: TaskOutput, version: TaskOutput) -> TaskOutput:
    """The gate's decision applied to the aliases; a rejection alerts."""

    # With approval, promotion follows either the branch or the approval: run on whichever came.
    @task(**REGISTRY, trigger_rule="none_failed_min_one_success")
    def promote_candidate(evaluation: dict[str, Any], version: str, **context: Any) -> dict[str, Any]:
        from mlops.evaluation.gate import GateDecision
        from mlops.orchestration.notifiers import MlopsNotifier
        from mlops.promotion import decisions

        decision = GateDecision.from_dict(evaluation["decision"])
        result = decisions.apply_decision(use_case, version, decision, _run_key(context))
        # A candidate that passed but waits behind a rollout in progress is no gate rejection.
        if result.action == "challenger" and not decision.passed:
            MlopsNotifier.for_gate_rejection(use_case.name, use_case.model_name, version, decision.reasons)(context)
        return result.to_dict()

    return promote_candidate(evaluation, version)


def _publish_champion(use_case: UseCase, promotion: TaskOutput) -> TaskOutput:
    """The champion Asset event, after a real promotion only."""

    @task(outlets=[champion_asset(use_case)], retries=0)
    def publish_champion(promotion: dict[str, Any]) -> dict[str, Any]:
        # A skipped task emits no Asset event: only a real promotion wakes consumers.
        if promotion["action"] != "promoted":
            raise AirflowSkipException(f"no new champion: {promotion['action']}")
        return promotion

    return publish_champion(promotion)


def _publish_challenger(use_case: UseCase, promotion: TaskOutput) -> TaskOutput:
    """The challenger Asset event, after the candidate became `@shadow` or `@canary` only; it starts the rollout DAG."""

    @task(outlets=[challenger_asset(use_case)], retries=0)
    def publish_challenger(promotion: dict[str, Any], **context: Any) -> dict[str, Any]:
        if promotion["action"] not in ("shadow", "canary"):
            raise AirflowSkipException(f"no new rollout: {promotion['action']}")
        extra = {"version": promotion["version"], "champion": promotion["champion"]}
        context["outlet_events"][challenger_asset(use_case)].extra = extra
        return promotion

    return publish_challenger(promotion)
