"""Training benchmark: the training DAG under the real scheduler vs the same steps as one script.

Run with `./run bench training` (about 10 minutes). It starts its own local stack
on free ports under a temporary MLOPS_HOME, so it never touches yours, and prints
and writes `benchmarks/training/results.json`:

- wall time of `train_<use case>` under the real scheduler (trigger → run end);
- wall time of the same steps called in one Python process (same data, config, MLflow);
- their ratio (target ≤ 1.5);
- parse time per DAG file (DagBag's own per-file statistics; target < 0.3 s);
- peak RSS of the heaviest task process during the DAG run (sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def plain_script(use_case_name: str, as_of: str) -> float:
    """The training DAG's steps, in order, in this process; returns seconds."""
    from mlops import ingestion, registry, tracking, training, validation
    from mlops.config import find_use_case

    use_case = find_use_case(use_case_name)
    # Its own registered model, so the DAG run's gate is not compared with this one.
    use_case = use_case.model_copy(update={"model_name": f"{use_case.model_name}_plain_script"})
    run_id = f"plain_{int(time.time())}"
    start = time.perf_counter()
    snapshot = ingestion.ingest_snapshot(use_case, run_id=run_id, as_of=as_of)
    frame = ingestion.read_snapshot(snapshot.path)
    outcome = validation.validate(use_case, frame, run_id=run_id)
    validation.ensure_valid(outcome)
    lineage = {"snapshot_path": snapshot.path, "dvc_md5": snapshot.md5, "reason": "benchmark"}
    parent = tracking.start_parent_run(use_case, "plain_script", run_id, lineage)
    results = [
        tracking.train_and_log_candidate(use_case, spec.to_dict(), snapshot.path, parent, lineage)
        for spec in training.expand_candidates(use_case)
    ]
    best = tracking.select_best(use_case, results)
    _, holdout = ingestion.split_holdout(use_case, frame)
    decision = tracking.evaluate_against_champion(use_case, best, holdout, parent)
    version = registry.register_candidate(use_case, best, f"plain_script/{run_id}")
    registry.apply_decision(use_case, version, decision, f"plain_script/{run_id}")
    return time.perf_counter() - start


def parse_times(dags_folder: Path) -> dict[str, float]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder))
    return {Path(stat.file).name if hasattr(stat, "file") else str(stat): stat.duration.total_seconds()
            for stat in bag.dagbag_stats}  # fmt: skip


class PeakTaskMemory:
    """Samples the RSS of every descendant of the scheduler; keeps the largest task process."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.peak_bytes = 0
        self.peak_cmd = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakTaskMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        root = psutil.Process(self.root_pid)
        while not self._stop.is_set():
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                break
            for child in children:
                try:
                    rss = child.memory_info().rss
                    if rss > self.peak_bytes:
                        self.peak_bytes, self.peak_cmd = rss, " ".join(child.cmdline())[:200]
                except psutil.Error:
                    continue
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--use-case", default="bike_sharing")
    parser.add_argument("--as-of", default="2011-03-01")
    args = parser.parse_args(argv)

    from mlops.processes import free_port

    home = Path(tempfile.mkdtemp(prefix="mlops-bench-training-"))
    os.environ["MLOPS_HOME"] = str(home)
    for var in ("MLOPS_AIRFLOW_PORT", "MLOPS_MLFLOW_PORT", "MLOPS_SERVING_PORT"):
        os.environ[var] = str(free_port())
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from mlops import stack
    from mlops.airflow_api import AirflowAPI
    from mlops.settings import get_settings

    settings = get_settings()
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    print(f"starting a private stack under {home} ...", flush=True)
    urls = stack.up()
    try:
        env = stack.airflow_env(settings)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
        dag_id = f"train_{args.use_case}"
        api = AirflowAPI(urls["airflow"], stack.AIRFLOW_USER, stack.airflow_password(settings))
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)

        print("plain script ...", flush=True)
        plain = plain_script(args.use_case, args.as_of)
        print(f"  {plain:.1f} s", flush=True)

        print("training DAG under the real scheduler ...", flush=True)
        state = json.loads((settings.run_dir / "stack.json").read_text())
        scheduler_pid = int(state["airflow-scheduler"]["pid"])
        with PeakTaskMemory(scheduler_pid) as memory:
            start = time.perf_counter()
            run_id = api.trigger(dag_id, conf={"as_of": args.as_of, "reason": "benchmark"})
            final = api.wait_for_run(dag_id, run_id, timeout=1800, poll=0.5)
            wall = time.perf_counter() - start
        run = api.dag_run(dag_id, run_id)
        print(f"  {wall:.1f} s ({final})", flush=True)

        parse = parse_times(settings.project_root / "dags")
        results: dict[str, Any] = {
            "use_case": args.use_case,
            "as_of": args.as_of,
            "cores": os.cpu_count(),
            "plain_script_seconds": round(plain, 1),
            "airflow_dag_seconds": round(wall, 1),
            # The run's own clock: excludes the API round trips and the scheduler's pick-up delay.
            "airflow_run_start_to_end_seconds": round(
                (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds(), 1
            ),
            "ratio": round(wall / plain, 2),
            "dag_state": final,
            "parse_seconds_per_file": {k: round(v, 3) for k, v in parse.items()},
            "peak_task_rss_mb": round(memory.peak_bytes / 2**20, 1),
            "peak_task_cmd": memory.peak_cmd,
        }
        (HERE / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        return 0 if final == "success" else 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
