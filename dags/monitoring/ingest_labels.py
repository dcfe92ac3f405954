"""
### Label-ingestion DAGs, one per use case

Generated from `configs/*.yaml`: each file gives an `ingest_labels_<use case>` DAG that
writes the labels landed as files (and returned by `labels.sql`, when set) to the labels
store on `labels.schedule`, so monitoring can join them to the predictions.
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.config import load_all
from mlops.naming import labels_dag_id
from mlops.orchestration.labels import build_label_ingestion_dag

for _use_case in load_all():
    globals()[labels_dag_id(_use_case.name)] = build_label_ingestion_dag(_use_case)
