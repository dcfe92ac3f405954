"""
### Batch-scoring DAGs, one per use case

Generated from `configs/*.yaml`: each file gives a `score_<use case>` DAG that scores
a landed partition with `@champion` and writes the prediction log.
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.config import load_all
from mlops.orchestration.scoring import build_scoring_dag

for _use_case in load_all():
    globals()[f"score_{_use_case.name}"] = build_scoring_dag(_use_case)
