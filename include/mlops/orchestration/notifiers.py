"""An Airflow notifier that delivers through mlops.alerts (log, SMTP, webhook).

Use it as a callback or call it from a task:

    default_args = {"on_failure_callback": MlopsNotifier.on_failure()}
    @dag(..., on_failure_callback=MlopsNotifier.on_run_failure())
    MlopsNotifier.for_monitoring(decision.to_dict(), report_dir)(context)
    MlopsNotifier.for_gate_rejection(use_case, model_name, version, reasons)(context)

Delivery failures are logged by mlops.alerts and never raised: a failing mail
server must not fail the task, nor turn one failure alert into two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from mlops.platform import alerts


class MlopsNotifier(BaseNotifier):  # type: ignore[misc]
    """Send an alert; without a subject it describes the failed task from the callback context."""

    template_fields = ("subject", "body")

    def __init__(
        self,
        subject: str | None = None,
        body: str = "",
        severity: alerts.Severity = "warning",
        *,
        run_level: bool = False,
    ) -> None:
        super().__init__()
        self.subject = subject
        self.body = body
        self.severity: alerts.Severity = severity
        self.run_level = run_level
        self.deliveries: list[alerts.Delivery] = []

    @classmethod
    def on_failure(cls) -> MlopsNotifier:
        return cls(subject=None, severity="critical")

    @classmethod
    def on_run_failure(cls) -> MlopsNotifier:
        """DAG-level: a run that fails with no task failing (its dagrun_timeout skipped the rest)
        alerts too. A run failed by a task is left to the task-level callback: one alert, not two."""
        return cls(subject=None, severity="critical", run_level=True)

    @classmethod
    def for_monitoring(cls, decision: Mapping[str, Any], report_dir: str | None = None) -> MlopsNotifier:
        return cls(*alerts.monitoring_alert(decision, report_dir))

    @classmethod
    def for_data_quality(cls, decision: Mapping[str, Any], report_dir: str | None = None) -> MlopsNotifier:
        return cls(*alerts.data_quality_alert(decision, report_dir))

    @classmethod
    def for_skew(cls, decision: Mapping[str, Any], report_dir: str | None = None) -> MlopsNotifier:
        return cls(*alerts.skew_alert(decision, report_dir))

    @classmethod
    def for_gate_rejection(
        cls, use_case: str, model_name: str, version: str | None, reasons: Sequence[str]
    ) -> MlopsNotifier:
        return cls(*alerts.gate_rejection_alert(use_case, model_name, version, reasons))

    @classmethod
    def for_rollout_rejection(cls, use_case: str, model_name: str, result: Mapping[str, Any]) -> MlopsNotifier:
        return cls(*alerts.rollout_rejection_alert(use_case, model_name, result))

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # Alert text is built from data (reasons, column names, exception text) and is
        # sent verbatim: braces in an error message must not be read as Jinja.
        return None

    def notify(self, context: Any) -> None:
        if self.run_level and context.get("reason") == "task_failure":
            self.deliveries = []
            return
        subject, body, severity = self.subject, self.body, self.severity
        if subject is None:
            subject, body, severity = _failure_from_context(context, run_level=self.run_level)
        self.deliveries = alerts.send_alert(subject, body, severity)


def _failure_from_context(context: Any, run_level: bool = False) -> tuple[str, str, alerts.Severity]:
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    dag_id = getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "unknown DAG")
    error = context.get("exception") or context.get("reason") or "unknown error"
    if run_level:
        # The DAG callback's task is only the last one left unfinished: name the run, say where it was.
        timeout = getattr(dag, "dagrun_timeout", None)
        limit = f" ({timeout})" if context.get("reason") == "timed_out" and timeout else ""
        at = f"; it was at task {ti.task_id}" if getattr(ti, "task_id", None) else ""
        error = f"the run failed: {error}{limit}{at}. Unfinished tasks were skipped; re-run it once the cause is fixed"
        ti = None
    return alerts.failure_alert(
        dag_id=str(dag_id),
        task_id=getattr(ti, "task_id", None),
        run_id=context.get("run_id") or getattr(dag_run, "run_id", None),
        error=error,
        log_url=getattr(ti, "log_url", None),
    )
