"""
### Feature store materialization (airflow DAG file)

`materialize_features`, hourly: registers `features/` in the Feast registry, runs the
repository's feature pipelines into the offline store and loads the online store up to
the run's time, incrementally (docs/features.md).
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.orchestration.features import build_materialize_dag

materialize_features = build_materialize_dag()
