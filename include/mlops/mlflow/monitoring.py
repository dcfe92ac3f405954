"""Monitoring runs in MLflow: one run per monitoring run, in the experiment `<use_case>-monitoring`.

Metrics carry the window end as their timestamp and its day number as their step, so
the experiment's charts (and each metric's history) show the trend across windows in
data time, whenever the runs were logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops.mlflow.client import client
from mlops.naming import monitoring_experiment

SECONDS_PER_DAY = 86400


def log_monitoring_run(
    use_case: str,
    run_name: str,
    *,
    window_end: datetime,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    decision: Mapping[str, Any],
    report_dir: Path | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log one monitoring run; returns its run id.

    `metrics` that are not finite are left out (MLflow cannot chart them); `decision` is
    stored as decision.json and `report_dir`, when it exists, as the `reports/` artifacts.
    The run is marked FAILED if any of it cannot be logged, FINISHED otherwise.
    """
    from mlflow.entities import Metric

    mlflow_client = client(tracking_uri)
    name = monitoring_experiment(use_case)
    experiment = mlflow_client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else mlflow_client.create_experiment(name)
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    run_id: str = run.info.run_id
    timestamp = int(window_end.timestamp() * 1000)
    step = int(window_end.timestamp() // SECONDS_PER_DAY)
    try:
        mlflow_client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), timestamp, step) for k, v in metrics.items() if math.isfinite(v)],
        )
        mlflow_client.log_dict(run_id, dict(decision), "decision.json")
        if report_dir is not None and report_dir.is_dir():
            mlflow_client.log_artifacts(run_id, str(report_dir), artifact_path="reports")
    except Exception:
        mlflow_client.set_terminated(run_id, status="FAILED")
        raise
    mlflow_client.set_terminated(run_id, status="FINISHED")
    return run_id
