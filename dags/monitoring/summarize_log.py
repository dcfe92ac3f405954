"""
### Log-summary DAGs, one per use case

Generated from `configs/*.yaml`: each file gives a `summarize_log_<use case>` DAG that
summarises the prediction log's newly landed files for monitoring at volume.
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.config import load_all
from mlops.naming import log_summary_dag_id
from mlops.orchestration.log_summaries import build_log_summary_dag

for _use_case in load_all():
    globals()[log_summary_dag_id(_use_case.name)] = build_log_summary_dag(_use_case)
