"""Monitoring results land in a real MLflow server: reports as artifacts, headline numbers as metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops.monitoring.assessment import record_monitoring_run
from mlops.monitoring.decision import MonitoringDecision
from mlops.monitoring.drift import ColumnDrift, DriftResult
from mlops.monitoring.reports import write_atomic
from mlops.monitoring.run import MonitoringSummary

pytestmark = pytest.mark.integration


def test_record_monitoring_run(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    report_dir = tmp_path / "bike_sharing" / "w1"
    write_atomic(report_dir / "drift.html", "<html>drift</html>")
    write_atomic(report_dir / "summary.json", "{}")
    drift = DriftResult([ColumnDrift("temp", "numeric", "wasserstein", 0.4, 0.1, True),
                         ColumnDrift("hum", "numeric", "wasserstein", 0.0, 0.1, False)])  # fmt: skip
    summary = MonitoringSummary("bike_sharing", "w1", 500, 400, drift, "evidently", performance={"rmse": 55.0},
                                report_dir=report_dir)  # fmt: skip
    decision = MonitoringDecision("bike_sharing", "retrain", ["drift share 0.50 >= 0.5"], 0.5, ["temp"],
                                  {"rmse": 55.0}, "rmse", 0.3)  # fmt: skip
    window_end = datetime(2011, 5, 15, tzinfo=UTC)
    run_id = record_monitoring_run(summary, decision, window_end, tags={"champion_version": "2"})

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "bike_sharing-monitoring"
    assert run.data.metrics["drift_share"] == 0.5 and run.data.metrics["perf_rmse"] == 55.0
    assert run.data.tags["monitoring.action"] == "retrain" and run.data.tags["champion_version"] == "2"
    [point] = client.get_metric_history(run_id, "drift_share")
    assert point.timestamp == int(window_end.timestamp() * 1000) and point.step == 15109
    artifacts = {a.path for a in client.list_artifacts(run_id, "reports")}
    assert artifacts == {"reports/drift.html", "reports/summary.json"}
    assert {a.path for a in client.list_artifacts(run_id)} >= {"decision.json", "reports"}
    assert run.info.status == "FINISHED"
