"""
### Rollback DAG

`rollback_model`: moves `@champion` of a registered model back to `@previous`
or to a given version, triggered by hand with a reason.
"""

from __future__ import annotations

# The words "airflow" and "dag" must appear here: Airflow's safe mode skips files without them,
# and this file imports no airflow module itself (the builder does).
from mlops.config import load_all
from mlops.orchestration.rollback import build_rollback_dag

rollback_dag = build_rollback_dag(load_all())

if __name__ == "__main__":
    rollback_dag.test()
