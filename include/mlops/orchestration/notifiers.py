"""An Airflow notifier that delivers through mlops.alerts (log, SMTP, webhook).

Use it as a callback or call it from a task:

    default_args = {"on_failure_callback": MlopsNotifier.on_failure()}
    MlopsNotifier.for_monitoring(decision.to_dict(), report_dir)(context)
    MlopsNotifier.for_gate_rejection(use_case, model_name, version, reasons)(context)

Delivery failures are logged by mlops.alerts and never raised: a failing mail
server must not fail the task, nor turn one failure alert into two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from mlops import alerts


class MlopsNotifier(BaseNotifier):  # type: ignore[misc]
    """Send an alert; without a subject it describes the failed task from the callback context."""

    template_fields = ("subject", "body")

    def __init__(self, subject: str | None = None, body: str = "", severity: alerts.Severity = "warning") -> None:
        super().__init__()
        self.subject = subject
        self.body = body
        self.severity: alerts.Severity = severity
        self.deliveries: list[alerts.Delivery] = []

    @classmethod
    def on_failure(cls) -> MlopsNotifier:
        return cls(subject=None, severity="critical")

    @classmethod
    def for_monitoring(cls, decision: Mapping[str, Any], report_dir: str | None = None) -> MlopsNotifier:
        return cls(*alerts.monitoring_alert(decision, report_dir))

    @classmethod
    def for_gate_rejection(
        cls, use_case: str, model_name: str, version: str | None, reasons: Sequence[str]
    ) -> MlopsNotifier:
        return cls(*alerts.gate_rejection_alert(use_case, model_name, version, reasons))

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # Alert text is built from data (reasons, column names, exception text) and is
        # sent verbatim: braces in an error message must not be read as Jinja.
        return None

    def notify(self, context: Any) -> None:
        subject, body, severity = self.subject, self.body, self.severity
        if subject is None:
            subject, body, severity = _failure_from_context(context)
        self.deliveries = alerts.send_alert(subject, body, severity)


def _failure_from_context(context: Any) -> tuple[str, str, alerts.Severity]:
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    dag_id = getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "unknown DAG")
    return alerts.failure_alert(
        dag_id=str(dag_id),
        task_id=getattr(ti, "task_id", None),
        run_id=context.get("run_id") or getattr(dag_run, "run_id", None),
        error=context.get("exception") or context.get("reason") or "unknown error",
        log_url=getattr(ti, "log_url", None),
    )
