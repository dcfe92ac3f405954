"""Alerts: format a message and deliver it to the log, an SMTP server and/or a webhook.

Delivery never raises into the pipeline: an alert about a failure must not cause
another one. Every attempt is logged and returned as a `Delivery`, so callers and
tests can see what happened. Standard library only.
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal

from mlops.settings import Settings, get_settings

Severity = Literal["info", "warning", "critical"]
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
log = logging.getLogger("mlops.alerts")


@dataclass(frozen=True)
class Delivery:
    channel: Literal["log", "smtp", "webhook"]
    ok: bool
    detail: str


def _send_smtp(subject: str, body: str, severity: Severity, settings: Settings, timeout: float) -> Delivery:
    target = f"{settings.alert_smtp_host}:{settings.alert_smtp_port}"
    if not settings.alert_email_to:
        return Delivery(
            "smtp", False, f"MLOPS_ALERT_SMTP_HOST is set but MLOPS_ALERT_EMAIL_TO is not; set it to send to {target}"
        )
    message = EmailMessage()
    message["Subject"] = f"[mlops {severity}] {subject}"
    message["From"] = settings.alert_email_from
    message["To"] = settings.alert_email_to
    message.set_content(body)
    try:
        with smtplib.SMTP(settings.alert_smtp_host or "", settings.alert_smtp_port, timeout=timeout) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        return Delivery("smtp", False, f"could not send mail via {target}: {exc}")
    return Delivery("smtp", True, f"mailed {settings.alert_email_to} via {target}")


def _send_webhook(subject: str, body: str, severity: Severity, url: str, timeout: float) -> Delivery:
    payload = {"source": "mlops", "severity": severity, "subject": subject, "body": body, "text": f"{subject}\n{body}"}
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Delivery("webhook", False, f"could not POST to {url}: {exc}")
    return Delivery("webhook", True, f"POST {url} -> HTTP {status}")


def send_alert(
    subject: str, body: str, severity: Severity = "warning", settings: Settings | None = None, timeout: float = 10.0
) -> list[Delivery]:
    """Log the alert, then mail and/or POST it when configured. Never raises."""
    try:
        settings = settings or get_settings()
    except Exception as exc:  # a bad setting must not turn an alert into a crash
        log.error("alert %r not delivered beyond the log: settings unreadable (%s)", subject, exc)
        return [Delivery("log", True, "logged"), Delivery("log", False, f"settings unreadable: {exc}")]
    log.log(_LEVELS.get(severity, logging.WARNING), "ALERT [%s] %s\n%s", severity, subject, body)
    deliveries = [Delivery("log", True, "logged")]
    if settings.alert_smtp_host:
        deliveries.append(_send_smtp(subject, body, severity, settings, timeout))
    if settings.alert_webhook_url:
        deliveries.append(_send_webhook(subject, body, severity, settings.alert_webhook_url, timeout))
    for delivery in deliveries[1:]:
        if not delivery.ok:
            log.error("alert %r: %s", subject, delivery.detail)
    return deliveries


# --------------------------------------------------------------------------- message formats


def _lines(reasons: Sequence[str]) -> str:
    return "\n".join(f"- {r}" for r in reasons) or "- (no reason given)"


def monitoring_alert(decision: Mapping[str, Any], report_dir: str | None = None) -> tuple[str, str, Severity]:
    """Subject, body and severity for a monitoring decision (`MonitoringDecision.to_dict()`)."""
    action, use_case = decision.get("action", "?"), decision.get("use_case", "?")
    severity: Severity = "critical" if action == "data_bug" else "warning"
    titles = {
        "retrain": "drift detected, retraining triggered",
        "cooldown": "drift detected, retraining held back (cooldown)",
        "data_bug": "window failed validation (data bug, no retraining)",
        "insufficient_data": "too little data to judge",
        "none": "no action",
    }
    subject = f"{use_case}: {titles.get(str(action), str(action))}"
    body = [f"Use case: {use_case}", f"Action: {action}", f"Drift share: {float(decision.get('drift_share', 0)):.2f}"]
    if decision.get("drifted_columns"):
        body.append(f"Drifted columns: {', '.join(decision['drifted_columns'])}")
    if decision.get("degradation") is not None:
        body.append(f"{decision.get('primary_metric')} loss vs champion: {float(decision['degradation']):+.1%}")
    body += ["Reasons:", _lines(decision.get("reasons", []))]
    if report_dir:
        body.append(f"Reports: {report_dir}")
    return subject, "\n".join(body), severity


def data_quality_alert(decision: Mapping[str, Any], report_dir: str | None = None) -> tuple[str, str, Severity]:
    """Subject, body and severity for a window's data-quality findings (a feature's null share rising).

    Its own alert, sent whatever the action: under `serving.missing: impute` these rows
    were answered, so the feed's owner must hear of it, but the model need not retrain.
    """
    findings = list(decision.get("data_quality", []))
    noun = "finding" if len(findings) == 1 else "findings"
    what = f"{len(findings)} data-quality {noun} (null share rising)"
    return _findings_alert(decision, findings, what, "data quality never retrains", report_dir)


def skew_alert(decision: Mapping[str, Any], report_dir: str | None = None) -> tuple[str, str, Severity]:
    """Subject, body and severity for training/serving skew: served store features unlike the offline store's."""
    findings = list(decision.get("skew", []))
    what = f"training/serving skew in {len(findings)} {'feature' if len(findings) == 1 else 'features'}"
    return _findings_alert(decision, findings, what, "skew never retrains: fix the pipeline", report_dir)


def _findings_alert(
    decision: Mapping[str, Any], findings: list[str], what: str, why_not_retrain: str, report_dir: str | None
) -> tuple[str, str, Severity]:
    """A monitoring finding with its own alert, whatever the action: what, the findings, the reports."""
    use_case = decision.get("use_case", "?")
    body = [f"Use case: {use_case}", f"Action: {decision.get('action', '?')} ({why_not_retrain})"]
    body += ["Findings:", _lines(findings)]
    if report_dir:
        body.append(f"Reports: {report_dir}")
    return f"{use_case}: {what}", "\n".join(body), "warning"


def gate_rejection_alert(
    use_case: str, model_name: str, version: str | None, reasons: Sequence[str]
) -> tuple[str, str, Severity]:
    name = f"{model_name} v{version}" if version else model_name
    body = f"Use case: {use_case}\nCandidate: {name}\nThe quality gate rejected it:\n{_lines(reasons)}"
    return f"{use_case}: candidate {name} rejected by the quality gate", body, "warning"


def rollout_rejection_alert(use_case: str, model_name: str, result: Mapping[str, Any]) -> tuple[str, str, Severity]:
    """A rollout that ended in a rejection: for a canary that is a rollback, already done, told here."""
    strategy, version = result.get("strategy", "shadow"), result.get("version", "?")
    what = "rolled back" if strategy == "canary" else "rejected"
    body = (
        f"Use case: {use_case}\nCandidate: {model_name} v{version} (@{strategy})\n"
        f"Champion: v{result.get('champion') or 'none'} (unchanged; nobody has to act)\n"
        f"The rollout {what} it:\n{_lines(result.get('reasons', []))}"
    )
    return f"{use_case}: {strategy} {model_name} v{version} {what} on live evidence", body, "warning"


def failure_alert(
    dag_id: str, task_id: str | None, run_id: str | None, error: object, log_url: str | None = None
) -> tuple[str, str, Severity]:
    where = f"{dag_id}.{task_id}" if task_id else dag_id
    body = [f"DAG: {dag_id}", f"Task: {task_id or '-'}", f"Run: {run_id or '-'}", f"Error: {error}"]
    if log_url:
        body.append(f"Log: {log_url}")
    return f"{where} failed", "\n".join(body), "critical"
