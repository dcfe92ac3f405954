"""Build the training DAG of one use case: ingest → validate → train (mapped) → evaluate → register → promote.

Tasks hand on paths, ids and hashes, never data frames: the snapshot's path goes to
training and to evaluation alike, and each stage reads the frames it needs from it.
Each task calls a stage module of the package; this file decides only order, retries
and triggers. Every task is keyed on the DAG run, so clearing and re-running one is safe.

`build_training_dag` wires the steps; each `_step` helper below it defines one task and
applies it to its inputs, in the order the DAG runs them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, Variable, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlops.config import UseCase
from mlops.naming import run_key, training_dag_id, training_slot_variable
from mlops.orchestration.assets import champion_asset
from mlops.orchestration.defaults import COMPUTE_BOUND, GATE, MAX_ACTIVE_RUNS, NETWORK_BOUND, REGISTRY, dag_kwargs

# A run that starts within this long of being asked for did not wait for another one:
# a free slot is taken within a scheduler loop or two, even on a loaded machine.
QUEUE_NOTICE_SECONDS = 10.0
QUEUE_XCOM_KEY = "queue_wait"

# What calling a TaskFlow task inside a DAG gives: an XComArg to wire on (Airflow leaves it untyped).
TaskOutput = Any

log = logging.getLogger(__name__)


def sql_uri(conn_id: str) -> str:
    """Resolve a SQL source's Airflow connection to an SQLAlchemy URL, at run time only."""
    from airflow.sdk import Connection

    return sqlalchemy_url(Connection.get(conn_id))


def sqlalchemy_url(connection: Any) -> str:
    """The SQLAlchemy URL of an Airflow connection, as the connection type's provider hook builds it.

    Not `Connection.get_uri()`: that is Airflow's own URI format, whose `postgres://`
    SQLAlchemy 2 refuses and whose sqlite path is percent-escaped. The provider's
    `DbApiHook.sqlalchemy_url` is the documented way (for Postgres it picks the installed
    driver: `postgresql+psycopg://`). SQLite needs no provider (none is installed): Airflow
    keeps the database file in the connection's host, as the sqlite provider's hook reads it.
    """
    from airflow.sdk.exceptions import AirflowException
    from sqlalchemy.engine import URL

    if connection.conn_type == "sqlite":
        return URL.create("sqlite", database=connection.host).render_as_string(hide_password=False)
    try:
        # DbApiHook takes the connection itself, so it is not looked up a second time.
        url = connection.get_hook(hook_params={"connection": connection}).sqlalchemy_url
    except (AirflowException, ImportError, TypeError, NotImplementedError) as exc:
        # An unknown type (no provider), a hook that is no DbApiHook (TypeError on `connection`),
        # or one that builds no SQLAlchemy URL: a retry will not change any of them.
        raise AirflowFailException(
            f"connection {connection.conn_id!r} of type {connection.conn_type!r}: no installed Airflow provider "
            f"builds an SQLAlchemy URL for it ({type(exc).__name__}: {exc}). Install the type's provider package "
            "(postgres: `uv sync --extra production`), or use a postgres or sqlite connection"
        ) from exc
    return str(url.render_as_string(hide_password=False))


def queue_wait(
    dag_id: str, run_id: str, asked_at: datetime, started_at: datetime, cleared: bool, previous: dict[str, Any] | None
) -> dict[str, str]:
    """Why a run started later than it was asked for, if it did; empty when it did not wait.

    Airflow keeps both times but not the reason: with `max_active_runs=1` a run asked for
    while another runs (two triggers at once, or a trigger during a run) stays queued until
    that one ends. `previous` is the run that started before this one: the one it waited for
    in that case. Airflow's API does not give tasks the end of another run, so a delay for
    another reason (a full pool, a slow scheduler) would name it too; the wording says only
    what is known. A cleared run's start is measured from its original request, so it says nothing.
    """
    if cleared or previous is None or previous.get("run_id") == run_id:
        return {}
    waited = (started_at - asked_at).total_seconds()
    if waited < QUEUE_NOTICE_SECONDS:
        return {}
    return {
        "queued_seconds": f"{waited:.1f}",
        "queued_behind": str(previous["run_id"]),
        "queue_reason": (
            f"queued {waited:.0f} s: {dag_id} runs one run at a time (max_active_runs={MAX_ACTIVE_RUNS}); "
            f"the run started before it is {previous['run_id']} (started {previous.get('started')})"
        ),
    }


def claim_training_slot(use_case: UseCase, context: Any) -> dict[str, str]:
    """Record this run as the last one started, and whether (and behind which run) it was queued.

    Idempotent per run: a retry or a re-run of the first task keeps what the first attempt found.
    """
    dag_run = context["dag_run"]
    name = training_slot_variable(use_case.name)
    held = Variable.get(name, default=None, deserialize_json=True)
    if held and held.get("run_id") == dag_run.run_id:
        return dict(held.get("queue") or {})
    started = dag_run.start_date or pendulum.now("UTC")
    wait = queue_wait(
        training_dag_id(use_case.name), dag_run.run_id, dag_run.run_after, started, bool(dag_run.clear_number), held
    )
    record = {"run_id": dag_run.run_id, "started": started.isoformat(), "queue": wait}
    Variable.set(name, record, serialize_json=True)
    if wait:
        log.info("%s", wait["queue_reason"])
    return wait


def build_training_dag(use_case: UseCase) -> DAG:
    @dag(
        schedule=use_case.schedule.training,
        **dag_kwargs(
            training_dag_id(use_case.name),
            tags=["training", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(hours=3),
            owner=use_case.owner,
            params=_params(),
        ),
    )
    def training() -> None:
        snapshot = _ingest_snapshot(use_case)
        validation = _validate_snapshot(use_case, snapshot)
        parent = _start_tracking_run(use_case, snapshot, validation)
        results = _train_candidates(use_case, snapshot, parent)
        validation >> results
        evaluation = _evaluate_candidate(use_case, results, snapshot, parent)
        version = _register_candidate(use_case, evaluation)
        promotion = _promote_candidate(use_case, evaluation, version)
        _publish_champion(use_case, promotion)
        if use_case.approval.required:
            _wire_approval(use_case, evaluation, version, promotion)

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

**Params**: `as_of` (exclusive end of the training window, `YYYY-MM-DD`; default from config),
`reason` (why this run was triggered; recorded in MLflow).
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
    return {
        "snapshot_path": snapshot["path"],
        "dvc_md5": snapshot["md5"],
        "dvc_file": snapshot["dvc_file"],
        "window_start": str(snapshot.get("window_start")),
        "window_end": str(snapshot.get("window_end")),
        "data_docs_page": str(validation.get("data_docs_page")),
        "reason": str(params.get("reason")),
        "monitoring_report": str(params.get("report")),
        # Why this run started later than asked (queued behind another run), if it did.
        **queue,
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
        if result.action == "challenger":
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


# ----------------------------------------------------------------------------- approval (optional)

APPROVAL_BODY = """
**{{ params_model }}** candidate `{{ ti.xcom_pull(task_ids='evaluate_candidate')['candidate']['key'] }}`
passed the automatic gate against champion
v{{ ti.xcom_pull(task_ids='evaluate_candidate')['decision']['champion_version'] or '(none yet)' }}.

Checks:
{% for check in ti.xcom_pull(task_ids='evaluate_candidate')['decision']['checks'] %}
- {{ check }}
{% endfor %}

Candidate metrics: `{{ ti.xcom_pull(task_ids='evaluate_candidate')['decision']['candidate_metrics'] }}`

Champion metrics: `{{ ti.xcom_pull(task_ids='evaluate_candidate')['decision']['champion_metrics'] }}`

MLflow run: `{{ ti.xcom_pull(task_ids='evaluate_candidate')['candidate']['run_id'] }}`
"""


def _wire_approval(use_case: UseCase, evaluation: TaskOutput, version: TaskOutput, promotion: TaskOutput) -> None:
    """Insert a person between a passed gate and the alias move.

    A failed gate needs nobody: the branch sends it straight to `promote_candidate`
    (which marks it `@challenger`). On a rejection or a time-out the approval operator
    skips `promote_candidate`; `record_approval_outcome` then keeps the champion and
    records the answer on the model version.
    """
    from airflow.providers.standard.operators.empty import EmptyOperator

    # The branch may only skip this, never `promote_candidate` itself, which both paths reach.
    no_approval_needed = EmptyOperator(task_id="no_approval_needed")
    approve_promotion = _approve_promotion(use_case)
    route = _route_for_approval(evaluation)
    version >> route >> [approve_promotion, no_approval_needed] >> promotion
    [evaluation, version, promotion] >> _record_approval_outcome(use_case)


def _route_for_approval(evaluation: TaskOutput) -> TaskOutput:
    @task.branch(**GATE)
    def route_for_approval(evaluation: dict[str, Any]) -> str:
        return "approve_promotion" if evaluation["decision"]["passed"] else "no_approval_needed"

    return route_for_approval(evaluation)


def _approve_promotion(use_case: UseCase) -> Any:
    from mlops.orchestration.approval import PromotionApprovalOperator

    return PromotionApprovalOperator(
        task_id="approve_promotion",
        subject=f"Promote {use_case.model_name} to @champion?",
        body=APPROVAL_BODY.replace("{{ params_model }}", use_case.model_name),
        # Silence is not consent: on time-out the default "Reject" is taken.
        defaults="Reject",
        response_timeout=timedelta(hours=use_case.approval.timeout_hours),
        retries=0,
    )


def _record_approval_outcome(use_case: UseCase) -> TaskOutput:
    """The person's answer (or the time-out) on the model version; a rejection keeps the champion."""

    # all_done: a rejection skips promote_candidate, and the answer must still be recorded.
    # The inputs are pulled here rather than passed in, so that after a failure upstream
    # this task skips instead of failing a second time on the missing XCom.
    @task(**REGISTRY, trigger_rule="all_done")
    def record_approval_outcome(**context: Any) -> dict[str, Any]:
        return _record_answer(use_case, context["ti"], _run_key(context))

    return record_approval_outcome()


def _record_answer(use_case: UseCase, ti: Any, key: str) -> dict[str, Any]:
    from mlops.orchestration.approval import ANSWER_KEY
    from mlops.promotion import approval

    evaluation = ti.xcom_pull(task_ids="evaluate_candidate")
    version = ti.xcom_pull(task_ids="register_candidate")
    if evaluation is None or version is None:
        raise AirflowSkipException(
            "nothing to record: evaluate_candidate or register_candidate did not finish; "
            "the failed task upstream says why"
        )
    if not evaluation["decision"]["passed"]:
        return {"action": "none", "approval": "not asked: the gate rejected the candidate"}
    outcome = approval.approval_outcome(ti.xcom_pull(task_ids="approve_promotion", key=ANSWER_KEY),
                                        use_case.approval.timeout_hours)  # fmt: skip
    if outcome.decision == "not answered":
        raise AirflowSkipException(
            "approve_promotion ended without an answer (see its log): nothing recorded and "
            "@champion unchanged; clear approve_promotion to ask again"
        )
    result = approval.apply_approval(use_case, version, evaluation["decision"], outcome, key)
    note = outcome.reason
    if outcome.approved and ti.xcom_pull(task_ids="promote_candidate") is None:
        note += "; promote_candidate did not finish, so @champion did not move: clear it to promote"
    return {**result.to_dict(), "approval": note}
