"""Build the monitoring DAG of one use case: window → validation → Evidently reports → decision → retrain.

The decision itself is pure (`mlops.monitoring.decision.decide`); this file gathers the
facts only Airflow knows (is a training run active? when was the last trigger?)
and turns a "retrain" decision into a triggered training run with its reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, Variable, dag, task

from mlops.config import UseCase
from mlops.naming import last_trigger_variable, monitoring_dag_id, run_key, training_dag_id
from mlops.orchestration.assets import drift_report_asset
from mlops.orchestration.defaults import GATE, NETWORK_BOUND, dag_kwargs

if TYPE_CHECKING:
    from mlops.monitoring.decision import Guards

# A queued training run counts as active: it will retrain anyway, so another trigger adds nothing.
_ACTIVE_STATES = ["queued", "running"]


def _window_end(context: dict[str, Any]) -> datetime:
    """The run's own time (conf `as_of` or the data interval end), never the wall clock."""
    import pendulum

    as_of = context["params"].get("as_of")
    if as_of:
        return datetime.fromisoformat(str(as_of)).replace(tzinfo=None)
    end = context.get("data_interval_end") or context["logical_date"] or context["dag_run"].run_after
    moment: datetime = pendulum.instance(end).in_timezone("UTC").naive()
    return moment


def _run_key(context: dict[str, Any]) -> str:
    return run_key(context["dag"].dag_id, context["run_id"])


def _guards(use_case: UseCase, validation: dict[str, Any], context: dict[str, Any]) -> Guards:
    """What the decision needs from Airflow: the run's time, active training runs, the last trigger."""
    from mlops.monitoring.decision import Guards

    last = Variable.get(last_trigger_variable(use_case.name), default=None)
    active = context["ti"].get_dr_count(dag_id=training_dag_id(use_case.name), states=_ACTIVE_STATES)
    return Guards(
        now=_window_end(context),
        training_active=active > 0,
        last_triggered_at=datetime.fromisoformat(last) if last else None,
        validation_passed=validation["passed"],
        validation_details=validation["details"],
    )


def _doc(use_case: UseCase) -> str:
    cfg = use_case.monitoring
    return f"""
### Monitor `{use_case.name}`

Reads the last {cfg.window_days} days of the prediction log (with the labels that have arrived),
validates the window with Great Expectations (a failure is a *data bug*: alert, no retraining),
compares it with the champion's training data (found through the champion's lineage) in
Evidently drift, data-quality and performance reports, stores the reports (folder + MLflow
experiment `{use_case.name}-monitoring`), and triggers `{training_dag_id(use_case.name)}` when the
drift share reaches {cfg.drift_share_threshold} or performance degrades by more than
{cfg.performance_degradation:.0%} (the current champion version judged on its own predictions).
A feature's null share rising more than {cfg.max_null_share_increase:.0%} above the reference is a
data-quality alert of its own, not a retrain. Guards: fewer than {cfg.min_rows} rows, a training run
already active, or a trigger in the last {cfg.cooldown_hours} h stop the trigger, with the reason.

**Params**: `as_of` (window end, `YYYY-MM-DD`; default: the data interval end).
"""


def _trigger_retraining(use_case: UseCase) -> TriggerDagRunOperator:
    """Start the training DAG with the assessment's reason, report and window end as its conf."""
    return TriggerDagRunOperator(
        task_id="trigger_retraining",
        trigger_dag_id=training_dag_id(use_case.name),
        conf={
            "reason": "{{ ti.xcom_pull(task_ids='assess_window')['trigger_reason'] }}",
            "report": "{{ ti.xcom_pull(task_ids='assess_window')['report_html'] }}",
            "as_of": "{{ ti.xcom_pull(task_ids='assess_window')['window_end'] }}",
        },
        wait_for_completion=False,
        **NETWORK_BOUND,
    )


def build_monitoring_dag(use_case: UseCase) -> DAG:
    window_days = use_case.monitoring.window_days

    @dag(
        schedule=use_case.schedule.monitoring,
        **dag_kwargs(
            monitoring_dag_id(use_case.name),
            tags=["monitoring", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(hours=2),
            owner=use_case.owner,
            access=use_case.access,
            params={"as_of": Param(None, type=["null", "string"], description="Window end, YYYY-MM-DD")},
        ),
    )
    def monitoring() -> None:
        @task(**NETWORK_BOUND)
        def collect_window(**context: Any) -> dict[str, Any]:
            from mlops.monitoring import window as monitoring_window

            end = _window_end(context)
            start = end - timedelta(days=window_days)
            return monitoring_window.collect_window(use_case, start, end, _run_key(context)).to_dict()

        @task(**GATE)
        def validate_window(window: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.monitoring import window as monitoring_window

            # A failed validation is recorded, not raised: the decision turns it into a data-bug alert.
            return monitoring_window.validate_window(use_case, window["path"], context["run_id"]).to_dict()

        @task(**GATE, outlets=[drift_report_asset(use_case)])
        def assess_window(window: dict[str, Any], validation: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.monitoring import assessment
            from mlops.orchestration.notifiers import MlopsNotifier

            guards = _guards(use_case, validation, context)
            live = None
            if use_case.deployment.strategy != "direct":
                from mlops.rollout.apply import live_comparison

                live = live_comparison(use_case, guards.now)
            result = assessment.assess_window(
                use_case, window["path"], guards, _run_key(context), live, window_files=window.get("files")
            )
            if result.decision.alert:
                MlopsNotifier.for_monitoring(result.decision.to_dict(), result.report_dir)(context)
            if result.decision.data_quality_alert:  # its own alert: a null-share rise never retrains
                MlopsNotifier.for_data_quality(result.decision.to_dict(), result.report_dir)(context)
            if result.decision.skew_alert:  # its own alert too: skew is a pipeline bug, not drift
                MlopsNotifier.for_skew(result.decision.to_dict(), result.report_dir)(context)
            return result.to_dict()

        @task.short_circuit(**GATE)
        def should_retrain(assessment: dict[str, Any]) -> bool:
            return bool(assessment["decision"]["action"] == "retrain")

        @task(**NETWORK_BOUND)
        def record_trigger(**context: Any) -> str:
            when = _window_end(context).isoformat()
            Variable.set(last_trigger_variable(use_case.name), when)
            return when

        window = collect_window()
        validation = validate_window(window)
        assessment = assess_window(window, validation)
        should_retrain(assessment) >> _trigger_retraining(use_case) >> record_trigger()

    return monitoring()
