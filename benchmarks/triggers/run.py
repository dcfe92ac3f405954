"""Simultaneous triggers against the embedded stack (Airflow on SQLite): one POST vs our client.

Airflow's API server on SQLite answers some simultaneous writes with a 500 "Database
error" after its 5 s lock wait (apache/airflow#66726). Each round sends two triggers of
the (paused) training DAG at the same instant from two threads, alternating a plain
single POST with `AirflowAPI.trigger`, which repeats a failed POST under the same run id.
It counts the server errors, the triggers that were lost, and the runs Airflow holds
per run id (a retry must never make two). Results go to results.json beside this file.

    .venv/bin/python benchmarks/triggers/run.py --rounds 15
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlops.platform import stack
from mlops.platform.airflow_api import AirflowAPI, AirflowAPIError

HERE = Path(__file__).resolve().parent
DAG_ID = "train_bike_sharing"


def one_post(api: AirflowAPI, run_id: str, conf: dict[str, Any]) -> None:
    api.request("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf, "dag_run_id": run_id})


def client_trigger(api: AirflowAPI, run_id: str, conf: dict[str, Any]) -> None:
    api.trigger(DAG_ID, conf=conf, run_id=run_id)


def rounds(api: AirflowAPI, how: str, count: int) -> dict[str, Any]:
    send = {"single POST": one_post, "AirflowAPI.trigger": client_trigger}[how]
    tag = "post" if how == "single POST" else "client"
    lost, runs_sent = 0, []
    for i in range(count):
        barrier = threading.Barrier(2)

        def post(n: int, i: int = i, barrier: threading.Barrier = barrier) -> str | None:
            run_id = f"{tag}_{i}_{n}"
            barrier.wait()
            try:
                send(api, run_id, {"reason": f"benchmark {tag} {i}/{n}"})
            except AirflowAPIError as exc:
                return f"{exc.status_code}"
            return None

        with ThreadPoolExecutor(2) as pool:
            errors = [e for e in pool.map(post, (0, 1)) if e]
        lost += len(errors)
        runs_sent += [f"{tag}_{i}_{n}" for n in (0, 1)]
    listed = api.request("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 1000, "run_id_pattern": f"{tag}_%"})
    held = {run["dag_run_id"] for run in listed["dag_runs"]}
    return {
        "triggers": len(runs_sent),
        "failed_answers": lost,
        "runs_created": len(held),
        "triggers_without_a_run": len(set(runs_sent) - held),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-triggers-") as tmp, stack.private_stack(Path(tmp)) as settings:
        api = stack.airflow_api(settings)
        api.wait_for_dag(DAG_ID, timeout=600)  # paused: the runs are only created, never executed
        api.dag_runs(DAG_ID)  # log in once, so both requests of a round leave together
        log = settings.run_dir / "logs" / "airflow-api-server.log"
        results: dict[str, Any] = {"measured_at": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds}
        for how in ("single POST", "AirflowAPI.trigger"):
            before = log.read_text(errors="replace").count("Error with id")
            results[how] = rounds(api, how, args.rounds)
            results[how]["server_errors_logged"] = log.read_text(errors="replace").count("Error with id") - before
            print(how, results[how], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
