"""
### Training DAGs, one per use case

Generated from `configs/*.yaml`: each file gives a `train_<use case>` DAG.
A broken config stops this parse with a message naming the file and the key.
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.config import load_all
from mlops.orchestration.training import build_training_dag

for _use_case in load_all():
    globals()[f"train_{_use_case.name}"] = build_training_dag(_use_case)
