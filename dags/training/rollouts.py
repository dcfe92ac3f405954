"""
### Rollout DAGs, one per use case rolled out in shadow or canary

Generated from `configs/*.yaml`: each file with `deployment.strategy: shadow` or `canary`
gives a `rollout_<use case>` DAG that judges the `@shadow` or `@canary` candidate on live
labelled traffic beside `@champion`, hourly and when training sets a new one, and promotes
it, rejects (rolls back) it, moves a canary a step on or waits, with the evidence recorded
on the model version.
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.config import load_all
from mlops.naming import rollout_dag_id
from mlops.orchestration.rollout import build_rollout_dag

for _use_case in load_all():
    if _use_case.deployment.strategy in ("shadow", "canary"):
        globals()[rollout_dag_id(_use_case.name)] = build_rollout_dag(_use_case)
