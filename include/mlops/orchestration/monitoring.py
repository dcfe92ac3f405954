"""Build the monitoring DAG of one use case: window → validation → Evidently reports → decision → retrain.

The decision itself is pure (`mlops.monitoring.decide`); this file gathers the
facts only Airflow knows (is a training run active? when was the last trigger?)
and turns a "retrain" decision into a triggered training run with its reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, Variable, dag, task

from mlops.config import UseCase
from mlops.naming import last_trigger_variable, monitoring_dag_id, run_key, training_dag_id
from mlops.orchestration.assets import drift_report_asset
from mlops.orchestration.defaults import GATE, NETWORK_BOUND, dag_kwargs


def _window_end(context: dict[str, Any]) -> datetime:
    """The run's own time (conf `as_of` or the data interval end), never the wall clock."""
    import pendulum

    as_of = context["params"].get("as_of")
    if as_of:
        return datetime.fromisoformat(str(as_of)).replace(tzinfo=None)
    end = context.get("data_interval_end") or context["logical_date"] or context["dag_run"].run_after
    moment: datetime = pendulum.instance(end).in_timezone("UTC").naive()
    return moment


def build_monitoring_dag(use_case: UseCase) -> DAG:
    cfg = use_case.monitoring
    doc = f"""
### Monitor `{use_case.name}`

Reads the last {cfg.window_days} days of the prediction log (with the labels that have arrived),
validates the window with Great Expectations (a failure is a *data bug*: alert, no retraining),
compares it with the champion's training data (found through the champion's lineage) in
Evidently drift, data-quality and performance reports, stores the reports (folder + MLflow
experiment `{use_case.name}-monitoring`), and triggers `{training_dag_id(use_case.name)}` when the
drift share reaches {cfg.drift_share_threshold} or performance degrades by more than
{cfg.performance_degradation:.0%}. Guards: fewer than {cfg.min_rows} rows, a training run
already active, or a trigger in the last {cfg.cooldown_hours} h stop the trigger, with the reason.

**Params**: `as_of` (window end, `YYYY-MM-DD`; default: the data interval end).
"""

    @dag(
        schedule=use_case.schedule.monitoring,
        **dag_kwargs(
            monitoring_dag_id(use_case.name),
            tags=["monitoring", use_case.name, *use_case.tags],
            doc_md=doc,
            dagrun_timeout=timedelta(hours=2),
            owner=use_case.owner,
            params={"as_of": Param(None, type=["null", "string"], description="Window end, YYYY-MM-DD")},
        ),
    )
    def monitoring() -> None:
        @task(**NETWORK_BOUND)
        def collect_window(**context: Any) -> dict[str, Any]:
            from mlops.monitoring import steps

            end = _window_end(context)
            window = steps.collect_window(
                use_case, end - timedelta(days=cfg.window_days), end, run_key(context["dag"].dag_id, context["run_id"])
            )
            return window.to_dict()

        @task(**GATE)
        def validate_window(window: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.monitoring import steps

            # A failed validation is recorded, not raised: the decision turns it into a data-bug alert.
            return steps.validate_window(use_case, window["path"], context["run_id"]).to_dict()

        @task(**GATE, outlets=[drift_report_asset(use_case)])
        def assess_window(window: dict[str, Any], validation: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.monitoring import steps
            from mlops.orchestration.notifiers import MlopsNotifier

            ti = context["ti"]
            last = Variable.get(last_trigger_variable(use_case.name), default=None)
            guards = steps.Guards(
                now=_window_end(context),
                training_active=ti.get_dr_count(dag_id=training_dag_id(use_case.name), states=["queued", "running"])
                > 0,
                last_triggered_at=datetime.fromisoformat(last) if last else None,
                validation_passed=validation["passed"],
                validation_details=validation["details"],
            )
            assessment = steps.assess_window(
                use_case, window["path"], guards, run_key(context["dag"].dag_id, context["run_id"])
            )
            if assessment.decision.alert:
                MlopsNotifier.for_monitoring(assessment.decision.to_dict(), assessment.report_dir)(context)
            return assessment.to_dict()

        @task.short_circuit(**GATE)
        def should_retrain(assessment: dict[str, Any]) -> bool:
            return bool(assessment["decision"]["action"] == "retrain")

        trigger_retraining = TriggerDagRunOperator(
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

        @task(**NETWORK_BOUND)
        def record_trigger(**context: Any) -> str:
            when = _window_end(context).isoformat()
            Variable.set(last_trigger_variable(use_case.name), when)
            return when

        window = collect_window()
        validation = validate_window(window)
        assessment = assess_window(window, validation)
        should_retrain(assessment) >> trigger_retraining >> record_trigger()

    return monitoring()
