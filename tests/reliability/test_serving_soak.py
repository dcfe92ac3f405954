"""Fault 1: promotion, restart and rollback of the prediction service under steady load.

A real service process (two, across the restart) on loopback, a real MLflow
registry, the real Parquet prediction log. The restart is a blue/green switch
(see soak.py): nothing is retried by the client, so a failed request is a real one.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from soak import run_soak
from test_serving import bc_record, breast_cancer_frame, classifier, register, start_service, write_configs

pytestmark = pytest.mark.integration

SOAK_SECONDS = 60.0


def test_promotion_restart_and_rollback_under_load_fail_no_request_and_lose_no_prediction(
    mlflow_server: str, tmp_path: Path
) -> None:
    names = write_configs(tmp_path / "configs", f"soak{uuid.uuid4().hex[:6]}")
    model_name = names["breast_cancer"]
    features, _ = breast_cancer_frame()
    v1 = register(model_name, classifier(1.0), features)
    v2 = register(model_name, classifier(0.01), features, alias=None)
    log_dir = tmp_path / "log"

    def service() -> object:
        return start_service(tmp_path, tmp_path / "configs", log_dir, "--use-case", "breast_cancer",
                             "--log-flush-seconds", "0.5")  # fmt: skip

    result = run_soak(service, model_name, v1, v2, [bc_record(features, i) for i in range(20)], log_dir,
                      duration=SOAK_SECONDS)  # fmt: skip
    (tmp_path / "soak.json").write_text(json.dumps(result.to_dict(), indent=2))
    print(json.dumps(result.to_dict(), indent=2))  # the numbers docs/reliability.md quotes

    assert result.failures == [], result.failures[:5]
    assert result.ok == result.requests and result.requests > 200
    # Both versions answered: the promotion and the rollback took effect under load.
    assert set(result.versions) == {v1, v2}
    # Every answered request is in the log once, after both processes shut down cleanly.
    assert result.missing_from_log == 0 and result.duplicate_log_rows == 0
    assert result.logged_rows == result.ok

    from mlops.mlflow import registry

    # The registry records who moved the alias and why, both times.
    assert registry.alias_version(model_name, "champion") == v1
    assert registry.alias_version(model_name, "previous") == v2
    tags = registry.version_info(model_name, v1).tags
    assert tags["mlops.rollback.reason"] == "soak: roll back to @previous"
