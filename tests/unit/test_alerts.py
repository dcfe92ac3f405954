"""Alerts reach a real local SMTP sink and a real local HTTP sink; failures never raise."""

from __future__ import annotations

import email
import json
import socketserver
import threading
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from mlops.platform import alerts
from mlops.processes import free_port
from mlops.settings import get_settings


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: greeting, EHLO, MAIL, RCPT, DATA, QUIT."""

    def handle(self) -> None:
        self.wfile.write(b"220 sink ready\r\n")
        while line := self.rfile.readline():
            command = line.decode().strip().upper()
            if command.startswith(("EHLO", "HELO")):
                self.wfile.write(b"250 sink\r\n")
            elif command.startswith(("MAIL", "RCPT", "RSET", "NOOP")):
                self.wfile.write(b"250 ok\r\n")
            elif command == "DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                self.server.messages.append(email.message_from_bytes(data))  # type: ignore[attr-defined]
                self.wfile.write(b"250 queued\r\n")
            elif command == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 not implemented\r\n")


class _HookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[Any]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def http_sink() -> Iterator[Any]:
    server = HTTPServer(("127.0.0.1", 0), _HookHandler)
    server.posts = []  # type: ignore[attr-defined]
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, smtp_sink: Any, http_sink: Any) -> None:
    monkeypatch.setenv("MLOPS_ALERT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MLOPS_ALERT_SMTP_PORT", str(smtp_sink.server_address[1]))
    monkeypatch.setenv("MLOPS_ALERT_EMAIL_TO", "oncall@example.org")
    monkeypatch.setenv("MLOPS_ALERT_EMAIL_FROM", "mlops@example.org")
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{http_sink.server_address[1]}/hook")
    smtp_sink.messages.clear()
    http_sink.posts.clear()
    http_sink.status = 200


def test_log_only_by_default(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("MLOPS_ALERT_SMTP_HOST", "MLOPS_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level("WARNING", logger="mlops.platform.alerts"):
        deliveries = alerts.send_alert("drift on bike", "body text", "warning")
    assert [(d.channel, d.ok) for d in deliveries] == [("log", True)]
    assert "drift on bike" in caplog.text and "body text" in caplog.text


def test_mail_and_webhook_receive_the_alert(configured: None, smtp_sink: Any, http_sink: Any) -> None:
    deliveries = alerts.send_alert("drift on bike", "share 0.6", "critical")
    assert [(d.channel, d.ok) for d in deliveries] == [("log", True), ("smtp", True), ("webhook", True)]
    [mail] = smtp_sink.messages
    assert isinstance(mail, Message)
    assert mail["Subject"] == "[mlops critical] drift on bike"
    assert mail["To"] == "oncall@example.org" and mail["From"] == "mlops@example.org"
    assert "share 0.6" in mail.get_payload()
    [post] = http_sink.posts
    assert post["subject"] == "drift on bike" and post["severity"] == "critical" and post["body"] == "share 0.6"


def test_delivery_failures_are_reported_not_raised(
    configured: None, monkeypatch: pytest.MonkeyPatch, http_sink: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLOPS_ALERT_SMTP_PORT", str(free_port()))  # nobody listens there
    http_sink.status = 500
    with caplog.at_level("ERROR", logger="mlops.platform.alerts"):
        deliveries = alerts.send_alert("s", "b", settings=get_settings(), timeout=5)
    by_channel = {d.channel: d for d in deliveries}
    assert not by_channel["smtp"].ok and "could not send mail via 127.0.0.1" in by_channel["smtp"].detail
    assert not by_channel["webhook"].ok and "500" in by_channel["webhook"].detail
    assert "could not POST" in caplog.text


def test_missing_recipient_is_explained(configured: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_ALERT_EMAIL_TO")
    monkeypatch.delenv("MLOPS_ALERT_WEBHOOK_URL")
    smtp = alerts.send_alert("s", "b")[1]
    assert not smtp.ok and "MLOPS_ALERT_EMAIL_TO" in smtp.detail


def test_message_formats() -> None:
    decision = {"use_case": "bike_sharing", "action": "retrain", "drift_share": 0.6, "drifted_columns": ["temp"],
                "degradation": 0.4, "primary_metric": "rmse", "reasons": ["drift share 0.60 >= 0.5"]}  # fmt: skip
    subject, body, severity = alerts.monitoring_alert(decision, "/reports/x")
    assert subject == "bike_sharing: drift detected, retraining triggered" and severity == "warning"
    assert "temp" in body and "+40.0%" in body and "/reports/x" in body
    assert alerts.monitoring_alert({**decision, "action": "data_bug"})[2] == "critical"
    subject, body, _ = alerts.gate_rejection_alert("bike_sharing", "bike_sharing_cnt", "3", ["rmse 130 > 120"])
    assert "v3 rejected" in subject and "- rmse 130 > 120" in body


def test_airflow_notifier_sends_failure_and_task_alerts(configured: None, smtp_sink: Any, http_sink: Any) -> None:
    from mlops.orchestration.notifiers import MlopsNotifier

    ti = SimpleNamespace(task_id="train_candidates", dag_id="train_bike", log_url="http://airflow/log")
    context = {"ti": ti, "run_id": "manual__1", "exception": ValueError("boom {{ not jinja }}")}
    notifier = MlopsNotifier.on_failure()
    notifier(context)
    assert all(d.ok for d in notifier.deliveries)
    post = http_sink.posts[-1]
    assert post["subject"] == "train_bike.train_candidates failed" and post["severity"] == "critical"
    assert "boom {{ not jinja }}" in post["body"] and "http://airflow/log" in post["body"]
    assert smtp_sink.messages[-1]["Subject"] == "[mlops critical] train_bike.train_candidates failed"

    MlopsNotifier.for_gate_rejection("bike_sharing", "bike_sharing_cnt", "4", ["r2 0.3 < 0.5"])({"ti": ti})
    assert http_sink.posts[-1]["subject"] == "bike_sharing: candidate bike_sharing_cnt v4 rejected by the quality gate"
    decision = {"use_case": "bike_sharing", "action": "cooldown", "drift_share": 0.7, "reasons": ["cooldown"]}
    MlopsNotifier.for_monitoring(decision)({"ti": ti})
    assert http_sink.posts[-1]["subject"] == "bike_sharing: drift detected, retraining held back (cooldown)"
