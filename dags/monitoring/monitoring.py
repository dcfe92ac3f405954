"""
### Monitoring DAGs, one per use case

Generated from `configs/*.yaml`: each file gives a `monitor_<use case>` DAG that runs
Evidently drift and performance reports on the prediction log and triggers
retraining when drift or decay is found.
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.config import load_all
from mlops.orchestration.monitoring import build_monitoring_dag

for _use_case in load_all():
    globals()[f"monitor_{_use_case.name}"] = build_monitoring_dag(_use_case)
