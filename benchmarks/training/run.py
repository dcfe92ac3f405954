"""Training benchmark: the training DAG under the real scheduler vs the same steps as one script.

Run with `./run bench training` (about 5 minutes). It starts its own local stack
on free ports under a temporary MLOPS_HOME, so it never touches yours, and prints
and writes `benchmarks/training/results.json`:

- wall time of `train_<use case>` under the real scheduler (trigger → run end);
- wall time of the same steps as one plain Python script, run as a fresh process (imports
  included, as a user running a script pays them), on the same data, config and MLflow;
- their ratio (target ≤ 1.5); script and DAG alternate `--repeat` times (default 3) so that
  both see the same machine load, and the median ratio is the result;
- with `--without-preload`, one more pair on a scheduler that does not preload the task
  libraries (plugins/mlops_preload.py), the alternative the preload replaces;
- parse time per DAG file (DagBag's own per-file statistics; target < 0.3 s);
- peak RSS of the heaviest task process during the DAG run (sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def plain_script(use_case_name: str, as_of: str) -> float:
    """The training DAG's steps, in order, in this process; returns seconds (imports excluded)."""
    from mlops.config import find_use_case
    from mlops.data import ingestion, validation
    from mlops.evaluation import champion
    from mlops.promotion import decisions
    from mlops.training import candidates, runs

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
    parent = runs.start_parent_run(use_case, "plain_script", run_id, lineage)
    results = [
        runs.train_and_log_candidate(use_case, spec.to_dict(), snapshot.path, parent, lineage)
        for spec in candidates.expand_candidates(use_case)
    ]
    best = champion.select_best(use_case, results)
    decision = champion.evaluate_against_champion(use_case, best, snapshot.path, parent)
    version = decisions.register_candidate(use_case, best, f"plain_script/{run_id}")
    decisions.apply_decision(use_case, version, decision, f"plain_script/{run_id}")
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


def task_timings(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task: seconds from scheduled to running (the scheduler's and executor's share)
    and from running to done (the task process: fork, imports, work, API calls)."""

    def seconds(a: str | None, b: str | None) -> float:
        if not a or not b:
            return 0.0
        return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 2)

    rows = []
    for ti in sorted(instances, key=lambda t: t.get("start_date") or ""):
        name = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
        rows.append(
            {
                "task": name,
                "waited_s": seconds(ti.get("scheduled_when") or ti.get("queued_when"), ti.get("start_date")),
                "ran_s": seconds(ti.get("start_date"), ti.get("end_date")),
            }
        )
    return rows


def run_without_preload(dag_id: str, as_of: str, scheduler_pid: int) -> dict[str, Any]:
    """The same DAG, once, on a scheduler restarted with MLOPS_SCHEDULER_PRELOAD empty,
    next to one more script run so that both see the same load."""
    from mlops.platform import stack
    from mlops.platform.airflow_api import AirflowAPI
    from mlops.settings import get_settings

    print("without preload: restarting the stack with MLOPS_SCHEDULER_PRELOAD='' ...", flush=True)
    stack.down()
    os.environ["MLOPS_SCHEDULER_PRELOAD"] = ""
    try:
        settings = get_settings()
        urls = stack.up()
        api = AirflowAPI(urls["airflow"], stack.AIRFLOW_USER, stack.airflow_password(settings))
        api.wait_for_dag(dag_id)
        scheduler_pid = int(json.loads((settings.run_dir / "stack.json").read_text())["airflow-scheduler"]["pid"])
        plain = plain_script_process(dag_id.removeprefix("train_"), as_of)
        dag_run = airflow_run(api, dag_id, as_of, scheduler_pid)
        print(f"  plain script {plain:.1f} s; DAG without preload {dag_run['seconds']:.1f} s", flush=True)
        return {"plain_script_seconds": round(plain, 1), "dag": dag_run, "ratio": round(dag_run["seconds"] / plain, 2)}
    finally:
        os.environ.pop("MLOPS_SCHEDULER_PRELOAD", None)


def plain_script_process(use_case_name: str, as_of: str) -> float:
    """The plain script as a user would run it: a fresh interpreter, imports included."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--plain-only", "--use-case", use_case_name, "--as-of", as_of],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def airflow_run(api: Any, dag_id: str, as_of: str, scheduler_pid: int) -> dict[str, Any]:
    with PeakTaskMemory(scheduler_pid) as memory:
        start = time.perf_counter()
        run_id = api.trigger(dag_id, conf={"as_of": as_of, "reason": "benchmark"})
        final = api.wait_for_run(dag_id, run_id, timeout=1800, poll=0.5)
        wall = time.perf_counter() - start
    run = api.dag_run(dag_id, run_id)
    return {
        "seconds": round(wall, 1),
        # The run's own clock: excludes the API round trips and the scheduler's pick-up delay.
        "run_start_to_end_seconds": round(
            (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds(), 1
        ),
        "state": final,
        "peak_task_rss_mb": round(memory.peak_bytes / 2**20, 1),
        "tasks": task_timings(api.task_instances(dag_id, run_id)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--use-case", default="bike_sharing")
    parser.add_argument("--as-of", default="2011-03-01")
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="script/DAG pairs, alternated so that both see the same machine load; the median ratio is reported",
    )  # fmt: skip
    parser.add_argument(
        "--without-preload", action="store_true",
        help="also run the DAG on a scheduler that does not preload the task libraries (the alternative)",
    )  # fmt: skip
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_only:  # the child process of plain_script_process
        plain_script(args.use_case, args.as_of)
        return 0

    from mlops.processes import free_port

    home = Path(tempfile.mkdtemp(prefix="mlops-bench-training-"))
    os.environ["MLOPS_HOME"] = str(home)
    for var in ("MLOPS_AIRFLOW_PORT", "MLOPS_MLFLOW_PORT", "MLOPS_SERVING_PORT"):
        os.environ[var] = str(free_port())
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from mlops.platform import stack
    from mlops.platform.airflow_api import AirflowAPI
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
        state = json.loads((settings.run_dir / "stack.json").read_text())
        scheduler_pid = int(state["airflow-scheduler"]["pid"])

        pairs = []
        for attempt in range(1, args.repeat + 1):
            plain = plain_script_process(args.use_case, args.as_of)
            print(f"[{attempt}/{args.repeat}] plain script (fresh process): {plain:.1f} s", flush=True)
            dag_run = airflow_run(api, dag_id, args.as_of, scheduler_pid)
            print(f"[{attempt}/{args.repeat}] training DAG, real scheduler: {dag_run['seconds']:.1f} s "
                  f"({dag_run['state']}), load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
            for row in dag_run["tasks"]:
                print(f"    {row['task']:28} waited {row['waited_s']:5.1f} s  ran {row['ran_s']:5.1f} s", flush=True)
            pairs.append({"plain_script_seconds": round(plain, 1), "dag": dag_run,
                          "ratio": round(dag_run["seconds"] / plain, 2)})  # fmt: skip

        parse = parse_times(settings.project_root / "dags")
        ratios = sorted(p["ratio"] for p in pairs)
        results: dict[str, Any] = {
            "use_case": args.use_case,
            "as_of": args.as_of,
            "cores": os.cpu_count(),
            "measured_at": datetime.now().isoformat(timespec="minutes"),
            "median_ratio": ratios[len(ratios) // 2],
            "pairs": pairs,
            "parse_seconds_per_file": {k: round(v, 3) for k, v in parse.items()},
            "peak_task_rss_mb": max(p["dag"]["peak_task_rss_mb"] for p in pairs),
        }
        if args.without_preload:
            results["without_preload"] = run_without_preload(dag_id, args.as_of, scheduler_pid)
        (HERE / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps({k: v for k, v in results.items() if k != "pairs"}, indent=2))
        print(f"ratios: {ratios} (median {results['median_ratio']}; target <= 1.5)")
        return 0 if all(p["dag"]["state"] == "success" for p in pairs) else 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
