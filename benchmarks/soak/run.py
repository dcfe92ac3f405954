"""The longer soak of the prediction service: promotion, blue/green restart and rollback under load.

The same scenario as tests/reliability/test_serving_soak.py (tests/reliability/soak.py),
for longer and with more client threads. Everything runs on loopback in a fresh
temporary MLOPS_HOME: its own MLflow server, two registered versions of the
breast-cancer classifier, the service processes. Results go to results.json
beside this file (or --out).

    .venv/bin/python benchmarks/soak/run.py --seconds 300 --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "tests" / "reliability"), str(ROOT / "tests" / "integration")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="mlops-soak-"))
    os.environ["MLOPS_HOME"] = str(home)

    from soak import run_soak
    from test_serving import bc_record, breast_cancer_frame, classifier, register, start_service, write_configs

    from mlops.platform.stack import services
    from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http
    from mlops.settings import get_settings

    os.environ["MLOPS_MLFLOW_PORT"] = str(free_port())
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = get_settings()
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow = next(s for s in services(settings) if s.name == "mlflow")
    log = home / "mlflow.log"
    server = start_process_group(mlflow.command, log, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        assert mlflow.health_url is not None
        wait_for_http(mlflow.health_url, 300, server, log)
        os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
        names = write_configs(home / "configs", f"soak{uuid.uuid4().hex[:6]}")
        features, _ = breast_cancer_frame()
        v1 = register(names["breast_cancer"], classifier(1.0), features)
        v2 = register(names["breast_cancer"], classifier(0.01), features, alias=None)
        log_dir = home / "log"

        def service() -> object:
            return start_service(home, home / "configs", log_dir, "--use-case", "breast_cancer",
                                 "--log-flush-seconds", "0.5")  # fmt: skip

        records = [bc_record(features, i) for i in range(50)]
        result = run_soak(service, names["breast_cancer"], v1, v2, records, log_dir, args.seconds, args.workers)
    finally:
        stop_process_group(server.pid)
    body = {
        "command": f"benchmarks/soak/run.py --seconds {args.seconds:g} --workers {args.workers}",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        **result.to_dict(),
    }
    args.out.write_text(json.dumps(body, indent=2) + "\n")
    print(json.dumps(body, indent=2))
    return 0 if not result.failures and result.missing_from_log == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
