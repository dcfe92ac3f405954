"""
### Model-card DAGs, one per use case

Generated from `configs/*.yaml`: each file gives a `model_card_<use case>` DAG, scheduled on
the use case's champion Asset, that rewrites the current champion's model card whenever
`@champion` moves.
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.config import load_all
from mlops.orchestration.cards import build_card_dag

for _use_case in load_all():
    globals()[f"model_card_{_use_case.name}"] = build_card_dag(_use_case)
