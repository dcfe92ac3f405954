"""Requests per second and p50/p99 latency: our service, before and after probabilities, vs `mlflow models serve`.

Everything runs on this machine over loopback, in one run: a throwaway MLflow server
holding a breast_cancer pipeline and a flight_delays pipeline (the platform's own
preprocessing) as @champion; today's service (`python -m mlops.serving`, prediction
logging on; classifiers answer with class and probabilities); the same service at
`--baseline` (class only), from a temporary git worktree on this venv; and
`mlflow models serve --env-manager local` per model. wrk drives each use case with
single-row and 100-row bodies at a few connection counts. Results go to stdout and to
benchmarks/serving/results.md and results.json (README.md next to this file)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import feature_cells
import httpx
import peers
import rollout
import yaml

from mlops.naming import ROLE_SHADOW, TAG_CANARY_BREACH, TAG_CANARY_STEP
from mlops.predictionlog.predictions import read_predictions
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MODEL_NAMES = {"breast_cancer": "bench_breast_cancer", "flight_delays": "bench_flight_delays"}
BASELINE = "0c51799"
"""main before issue 17's probabilities: its service answers the class only."""


def log(msg: str) -> None:
    print(msg, flush=True)


def start_mlflow(state: Path) -> tuple[int, str]:
    port = free_port()
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
           "--artifacts-destination", str(state / "artifacts"), "--serve-artifacts", "--workers", "1"]  # fmt: skip
    process = start_process_group(cmd, state / "mlflow.log")
    uri = f"http://127.0.0.1:{port}"
    wait_for_http(f"{uri}/health", 600, process, state / "mlflow.log")
    return process.pid, uri


def _log_model(
    name: str, pipe: Any, inputs: Any, aliases: tuple[str, ...] = ("champion",), tags: dict[str, str] | None = None
) -> str:
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    mlflow.set_experiment("serving-benchmark")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipe, name="model", signature=infer_signature(inputs, pipe.predict(inputs)),
            input_example=inputs.head(2), registered_model_name=name,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipe)),
            pip_requirements=["scikit-learn", "pandas", "numpy", "skops"],
        )  # fmt: skip
    version = str(info.registered_model_version)
    client = MlflowClient()
    # Tags before aliases: the service reads a canary's step with its alias, and must not see it without one.
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    return version


def fit_breast_cancer(c: float = 1.0) -> tuple[Any, Any, list[dict[str, Any]]]:
    """breast_cancer: imputer + scaler + LogisticRegression(C=c) on 30 double features, as before.

    Returns the fitted pipeline, the frame to infer its signature from, and 100 records.
    The rollout cells' second version is the same with another `c`.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    x = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    prep = ColumnTransformer(
        [("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), list(x.columns))]
    )
    pipe = Pipeline([("prep", prep), ("model", LogisticRegression(C=c, max_iter=1000))]).fit(x, data.target)
    records = [{k: float(v) for k, v in row.items()} for row in x.head(100).to_dict(orient="records")]
    return pipe, x, records


def fit_flight_delays() -> tuple[Any, Any, list[dict[str, Any]], str]:
    """flight_delays: the platform's own pipeline (training.build_pipeline), the gate's pick.

    Every candidate of the config is fitted on the configured winter window and judged
    on a holdout by the primary metric, as the training DAG does (without its tracking).
    The payload is 100 production rows from April on, with their missing weather.
    The signature is inferred from training rows plus those production rows, so it marks
    the weather columns optional: the service before issue 17 then accepts the same nulls
    (with the platform's own signature it refused them with a 422) and all three servers
    answer the same bodies.
    """
    import pandas as pd

    from mlops.config import load_use_case
    from mlops.training.candidates import build_pipeline, expand_candidates, features_and_target, score_model

    uc = load_use_case(ROOT / "configs" / "flight_delays.yaml")
    df = pd.read_csv(ROOT / "data" / "raw" / "flight_delays.csv", parse_dates=[str(uc.time_column)])
    times = df[str(uc.time_column)]
    end = pd.Timestamp(str(uc.training.window.end))
    train = df[(times < end) & (times >= end - pd.Timedelta(days=uc.training.window.days or 59))]
    holdout = train.sample(frac=uc.training.holdout_fraction, random_state=uc.training.seed)
    train = train.drop(holdout.index)
    x, y = features_and_target(uc, train)
    best: tuple[float, str, Any] | None = None
    for spec in expand_candidates(uc):
        pipe = build_pipeline(uc, spec).fit(x, y)
        score = score_model(uc, pipe, holdout)[uc.gate.primary_metric]
        log(f"flight_delays candidate {spec.key}: {uc.gate.primary_metric} {score:.3f}")
        if best is None or score > best[0]:
            best = (score, spec.key, pipe)
    assert best is not None
    production = df[times >= pd.Timestamp("2023-04-01")]
    with_nulls = production[production["temperature"].isna()].head(10)
    sample = pd.concat([with_nulls, production[production["temperature"].notna()].head(90)]).sort_index()
    served = features_and_target(uc, sample)[0]
    records = [
        {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in served.to_dict(orient="records")
    ]
    return best[2], pd.concat([x.head(400), served]), records, best[1]


def payloads(
    use_case: str, records: list[dict[str, Any]], rows_list: list[int], folder: Path, peer_names: tuple[str, ...] = ()
) -> dict[Any, Path]:
    """The body files per (use case, server kind or peer, rows): the same records in each server's format."""
    columns = list(records[0])
    out: dict[Any, Path] = {}
    for rows in rows_list:
        chosen = [records[i % len(records)] for i in range(rows)]
        ours = folder / f"{use_case}-ours-{rows}.json"
        ours.write_text(json.dumps({"records": chosen}))
        theirs = folder / f"{use_case}-mlflow-{rows}.json"
        split = {"columns": columns, "data": [[r[c] for c in columns] for r in chosen]}
        theirs.write_text(json.dumps({"dataframe_split": split}))
        out[(use_case, "ours", rows)] = ours
        out[(use_case, "mlflow", rows)] = theirs
        for peer in peer_names:
            out[(use_case, peer, rows)] = folder / f"{use_case}-{peer}-{rows}.json"
            out[(use_case, peer, rows)].write_text(json.dumps(peers.body(peer, chosen)))
    return out


def _processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, CPU ticks used so far) of every process, from /proc."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command: state, ppid, pgrp, ...
        except OSError:
            continue
        out[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))
    return out


def server_pids(pgid: int) -> set[int]:
    """Every process of a server: its process group, and the descendants that left it.

    BentoML's process manager (circus) starts its workers in sessions of their own: they are
    neither in the group (so `stop_process_group` does not reach them) nor counted by it."""
    table = _processes()

    def belongs(pid: int) -> bool:
        seen = set()
        while pid in table and pid not in seen:
            seen.add(pid)
            if pid == pgid or table[pid][1] == pgid:
                return True
            pid = table[pid][0]
        return False

    return {pid for pid in table if belongs(pid)}


def group_cpu_seconds(pgid: int, exclude: int | None = None) -> float:
    """CPU time (user + system) used so far by every process of a server (`server_pids`, but `exclude`).

    On a machine shared with other work, wall-clock req/s says more about the
    neighbours than about the server; CPU per request does not.
    """
    table = _processes()
    total = sum(table[pid][2] for pid in server_pids(pgid) if pid != exclude and pid in table)
    return total / os.sysconf("SC_CLK_TCK")


def stop_server(pgid: int) -> None:
    """Stop a server's process group, then, by PID, any of its processes that live outside the group."""
    import signal

    table = _processes()
    strays = {pid for pid in server_pids(pgid) if table.get(pid, (0, pgid, 0))[1] != pgid}
    stop_process_group(pgid)
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    for pid in strays:
        while time.time() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def process_cpu_seconds(pid: int | None) -> float:
    """CPU time used so far by one process (0 when it is gone or None)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, over every core (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK"), idle / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (wrk runs as one)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(url: str, body: Path, connections: int, duration: int, rate: float | None = None) -> dict[str, Any]:
    """One wrk run: as fast as answers come (closed loop), or paced at about `rate` requests a second."""
    threads = max(1, min(2, connections))
    script, env = HERE / "post.lua", {**os.environ, "WRK_BODY": str(body)}
    if rate:
        script, env["WRK_DELAY_MS"] = HERE / "paced.lua", str(1000 * connections / rate)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
           "-s", str(script), url]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{out}")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


@dataclass
class Server:
    label: str
    kind: str  # "old" | "new" | "new-w<N>" (today's service on N workers) | "mlflow" | "rollout" | "peer"
    use_case: str | None  # mlflow models serve serves one model; ours serve every use case
    pid: int
    port: int
    log_uri: Path | None = None
    answered: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    mode: str | None = None  # rollout servers: off | shadow | canary25 (rollout.py)
    peer: str | None = None  # peer servers: mlserver | bentoml (peers.py)
    features_mode: str | None = None  # feature store servers: inline | sqlite | redis (feature_cells.py)

    def url(self, use_case: str) -> str:
        if self.peer:
            return peers.url(self.peer, self.port)
        path = "/invocations" if self.kind == "mlflow" else f"/predict/{use_case}"
        return f"http://127.0.0.1:{self.port}{path}"


def start_in_this_session(command: list[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Like `start_process_group` (a process group of its own, stopped by `stop_process_group`), but in this
    session: Linux's autogroup scheduler shares the CPU fairly between sessions, so a service in a session of
    its own with a second process (a shadow's worker) would get up to twice the CPU of a single-process one
    whenever other sessions load the machine, and the modes would not compare. Here every server and wrk
    share this session's autogroup."""
    with open(log_file, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                process_group=0)  # fmt: skip


def start_server(label: str, kind: str, cmd: list[str], ready: str, folder: Path, env: dict[str, str]) -> Server:
    port = free_port()
    logfile = folder / f"{re.sub(r'[^a-z0-9]+', '_', label.lower())}.log"
    process = start_in_this_session([*cmd, "--host", "127.0.0.1", "--port", str(port)], logfile, env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}{ready}", 600, process, logfile)
    except BaseException:
        stop_process_group(process.pid)
        raise
    return Server(label, kind, None, process.pid, port)


def start_peer(peer: str, cmd: list[str], port: int, folder: Path, env: dict[str, str]) -> Server:
    """A peer server (its command names its port: MLServer's in its settings.json), ready when its probe is."""
    logfile = folder / f"{peer}.log"
    process = start_in_this_session(cmd, logfile, env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}{peers.READY[peer]}", 600, process, logfile)
    except BaseException:
        stop_process_group(process.pid)
        raise
    server = Server(f"{peer} ({peers.USE_CASE})", "peer", peers.USE_CASE, process.pid, port)
    server.peer = peer
    return server


def profile_server(
    py_spy: Path, server: Server, use_case: str, body: Path, c: int, seconds: int, out: Path
) -> dict[str, Any]:
    """One more wrk run at `c` connections with py-spy sampling the server's process: where its time goes.

    `--nonblocking` reads the stacks without pausing the process, so the service runs at nearly its
    unprofiled speed (a sample may be torn; there are thousands). The raw stacks go to `out`."""
    spy = subprocess.Popen(
        [str(py_spy), "record", "--pid", str(server.pid), "--duration", str(seconds + 1), "--rate", "200",
         "--nonblocking", "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, process_group=0,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        run = wrk(server.url(use_case), body, c, seconds)
        _, err = spy.communicate(timeout=60)
    finally:
        if spy.poll() is None:
            stop_process_group(spy.pid)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")
    return {"server": server.label, "use_case": use_case, **run, "profile": peers.summarize_stacks(out.read_text())}


def baseline_tree(commit: str, folder: Path) -> Path:
    """`commit` checked out in a temporary git worktree (removed by remove_baseline_tree)."""
    tree = folder / f"baseline-{commit}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), commit], check=True)
    return tree


def remove_baseline_tree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each measured run")
    parser.add_argument("--connections", default="1,8")
    parser.add_argument("--rows", default="1,100", help="records per request")
    parser.add_argument("--use-cases", default="breast_cancer,flight_delays", help="'none': only the mode cells")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of our services (old and new)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="measured runs per cell of old and new, alternating which goes first"
    )
    parser.add_argument("--baseline", default=BASELINE, help="commit of the class-only service; 'none' to skip it")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--serve-args", default="", help="extra arguments for our services: '--log-flush-seconds 5'")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure only our services (for quick comparisons)")
    parser.add_argument(
        "--rollout", default=",".join(rollout.MODES),
        help="issue 18's modes side by side on breast_cancer (off, shadow, canary25, canary25-unguarded: "
        "rollout.py); 'none' skips them",
    )  # fmt: skip
    parser.add_argument("--rollout-rows", default="1", help="records per request of the rollout cells")
    parser.add_argument("--rollout-connections", default="8", help="connections of the rollout cells")
    parser.add_argument(
        "--rollout-rates", default="0,300",
        help="load of the rollout cells: 0 = closed loop (as fast as answers come), else a paced rate in req/s "
        "(paced.lua), meant to be below saturation",
    )  # fmt: skip
    parser.add_argument(
        "--peers", default=",".join(peers.PEERS),
        help=f"issue 21's peers on {peers.USE_CASE}, each once per cell ({', '.join(peers.PEERS)}: peers.py); "
        "'none' skips them",
    )  # fmt: skip
    parser.add_argument(
        "--peers-venv", default=str(peers.DEFAULT_VENV), help="the peers' throwaway venv (made if missing)"
    )
    parser.add_argument(
        "--profile", default="",
        help="rows:connections cells (e.g. 1:8,100:8) to run once more with py-spy recording our service; "
        f"the summary goes into the report, the raw stacks next to it (needs the {peers.USE_CASE} use case)",
    )  # fmt: skip
    parser.add_argument(
        "--also-workers", default="", help="worker counts of further instances of today's service, e.g. 2"
    )
    parser.add_argument("--output", default="results", help="name of the report files: <output>.md and .json")
    parser.add_argument(
        "--features", default=",".join(feature_cells.MODES),
        help="issue 20's cells on bike_sharing: the weather sent inline, read from the SQLite or the Redis online "
        "store (feature_cells.py); 'none' skips them",
    )  # fmt: skip
    parser.add_argument("--features-connections", default="8", help="connections of the feature store cells")
    parser.add_argument("--features-rates", default="0,300", help="load of the feature store cells (as rollout's)")
    parser.add_argument(
        "--features-profile", type=int, default=0,
        help="after the feature store cells, py-spy each mode's service for this many seconds of wrk (0: no)",
    )  # fmt: skip
    parser.add_argument(
        "--features-redis-url", default="redis://127.0.0.1:6379/10",
        help="the Redis of the `redis` cells (a database of the run's own; its keys are deleted at the end)",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed: run benchmarks/serving/run.sh (it installs it) or apt-get install -y wrk"
        )
    connections = [int(c) for c in args.connections.split(",")]
    rows_list = [int(r) for r in args.rows.split(",")]
    use_cases = [] if args.use_cases == "none" else args.use_cases.split(",")
    feature_modes = feature_cells.parse_modes(args.features)
    features_connections = [int(c) for c in args.features_connections.split(",")]
    features_rates = [float(r) for r in args.features_rates.split(",")]
    modes = rollout.parse_modes(args.rollout) if rollout.USE_CASE in use_cases else []
    rollout_rows = [int(r) for r in args.rollout_rows.split(",")] if modes else []
    rollout_connections = [int(c) for c in args.rollout_connections.split(",")]
    rollout_rates = [float(r) for r in args.rollout_rates.split(",")]
    peer_names = tuple(p for p in args.peers.split(",") if p != "none") if peers.USE_CASE in use_cases else ()
    unknown_peers = sorted(set(peer_names) - set(peers.PEERS))
    if unknown_peers:
        raise SystemExit(f"unknown peers {unknown_peers}: choose from {list(peers.PEERS)} or none")
    profile_cells = [tuple(int(x) for x in cell.split(":")) for cell in args.profile.split(",") if cell]
    unknown = sorted(set(use_cases) - set(MODEL_NAMES))
    if unknown:
        raise SystemExit(f"unknown use cases {unknown}: choose from {sorted(MODEL_NAMES)}")
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    servers: list[Server] = []
    tree: Path | None = None
    trees: list[Path] = []
    """Baseline trees of rollout modes `<mode>@<commit>` (removed at the end)."""
    results: list[dict[str, Any]] = []
    facts: dict[str, Any] = {"load_average_start": os.getloadavg()[0], "baseline": args.baseline}
    store_facts: dict[str, Any] = {}
    """What the feature store cells left outside the temp folder (Redis keys), for feature_cells.cleanup."""
    try:
        os.environ["MLOPS_HOME"] = str(tmp / "home")
        log("starting a throwaway MLflow server ...")
        pid, uri = start_mlflow(tmp)
        servers.append(Server("mlflow tracking", "tracking", None, pid, 0))
        os.environ["MLFLOW_TRACKING_URI"] = uri
        import mlflow

        mlflow.set_tracking_uri(uri)
        bodies: dict[Any, Path] = {}
        peer_python = peers.ensure_venv(Path(args.peers_venv)) if peer_names else None
        configs = tmp / "configs"
        configs.mkdir()
        for use_case in use_cases:
            if use_case == "breast_cancer":
                pipe, inputs, records = fit_breast_cancer()
            else:
                pipe, inputs, records, facts["flight_delays_candidate"] = fit_flight_delays()
            version = _log_model(MODEL_NAMES[use_case], pipe, inputs)
            log(f"registered {MODEL_NAMES[use_case]} v{version} as @champion")
            served_by_peers = peer_names if use_case == peers.USE_CASE else ()
            bodies.update(payloads(use_case, records, sorted({*rows_list, *rollout_rows}), tmp, served_by_peers))
            if use_case == peers.USE_CASE:
                check_records = records
            raw = yaml.safe_load((ROOT / "configs" / f"{use_case}.yaml").read_text())
            raw["model_name"] = MODEL_NAMES[use_case]
            if raw.get("source", {}).get("kind") == "files":
                raw["source"]["path"] = str(ROOT / raw["source"]["path"])
            (configs / f"{use_case}.yaml").write_text(yaml.safe_dump(raw))
            if use_case == rollout.USE_CASE and modes:
                # A registered model per mode: the guard records a breach on the canary's version, and the
                # unguarded canary must not inherit the guarded one's. Each: the champion (the same pipeline
                # as above) and, but for `off`, the second version as @shadow or @canary.
                candidate, _, _ = fit_breast_cancer(rollout.CANDIDATE_C)
                for mode in modes:
                    name = rollout.model_name(MODEL_NAMES[use_case], mode)
                    _log_model(name, pipe, inputs)
                    block = rollout.deployment(mode)
                    if block:
                        alias = block["strategy"]
                        tags = {TAG_CANARY_STEP: "0"} if alias == "canary" else None
                        v2 = _log_model(name, candidate, inputs, (alias,), tags)
                        log(f"registered {name} v{v2} (C={rollout.CANDIDATE_C:g}) as @{alias}")
                    (tmp / f"configs-{mode}").mkdir()
                    mode_raw = {**raw, "model_name": name, **({"deployment": block} if block else {})}
                    (tmp / f"configs-{mode}" / f"{use_case}.yaml").write_text(yaml.safe_dump(mode_raw))

        feature_setups: dict[str, dict[str, Any]] = {}
        if feature_modes:
            log(f"feature store cells: fitting bike_sharing, loading the stores of {', '.join(feature_modes)} ...")
            feature_setups, store_facts = feature_cells.prepare(
                feature_modes, ROOT, tmp, args.features_redis_url, lambda n, p, x: _log_model(n, p, x)
            )
            for mode, setup in feature_setups.items():
                bodies[(feature_cells.USE_CASE, f"features-{mode}", 1)] = setup["body"]

        ours = [sys.executable, "-m", "mlops.serving", "--configs-dir", str(configs), "--workers", str(args.workers)]
        plain_env = dict(os.environ)
        if args.baseline != "none":
            tree = baseline_tree(args.baseline, tmp)
            # The same venv, the old package first on the path: only the service code differs.
            old_env = {**os.environ, "PYTHONPATH": str(tree / "include")}
            check = [sys.executable, "-c", "import mlops; print(mlops.__file__)"]
            where = subprocess.run(check, env=old_env, capture_output=True, text=True, check=True).stdout.strip()
            if not where.startswith(str(tree)):
                raise SystemExit(f"PYTHONPATH did not select the baseline tree: mlops comes from {where}")
            cmd = [*ours, "--log-uri", str(tmp / "log-old"), *args.serve_args.split()]
            servers.append(start_server(f"old ({args.baseline}, class)", "old", cmd, "/ready", tmp, old_env))
            servers[-1].log_uri = tmp / "log-old"
        if use_cases:
            cmd = [*ours, "--log-uri", str(tmp / "log-new"), *args.serve_args.split()]
            servers.append(start_server("new (class + probabilities)", "new", cmd, "/ready", tmp, plain_env))
            servers[-1].log_uri = tmp / "log-new"
            for workers in [int(w) for w in args.also_workers.split(",") if w]:
                # Today's service once more on more workers (processes): the peers spread over both cores.
                cmd = [*ours, "--log-uri", str(tmp / f"log-new-w{workers}"), *args.serve_args.split()]
                cmd[cmd.index("--workers") + 1] = str(workers)
                label = f"new, {workers} workers"
                servers.append(start_server(label, f"new-w{workers}", cmd, "/ready", tmp, plain_env))
                servers[-1].log_uri = tmp / f"log-new-w{workers}"
        for mode, setup in feature_setups.items():
            # One service per mode: its own configs folder (bike_sharing alone) and MLOPS_HOME (its store).
            cmd = [*ours, "--log-uri", str(tmp / f"log-features-{mode}"), *args.serve_args.split()]
            cmd[cmd.index("--configs-dir") + 1] = str(setup["configs"])
            env = {**os.environ, **setup["env"]}
            if "@" in mode:
                commit = mode.split("@", 1)[1]
                # One worktree per commit: sqlite@c and redis@c share it.
                tree_of = {t.name.removeprefix("baseline-"): t for t in trees}
                if commit not in tree_of:
                    trees.append(baseline_tree(commit, tmp))
                env["PYTHONPATH"] = str(tree_of.get(commit, trees[-1]) / "include")
            servers.append(start_server(f"features {mode}", "features", cmd, "/ready", tmp, env))
            servers[-1].log_uri, servers[-1].features_mode = tmp / f"log-features-{mode}", mode
            logfile = tmp / f"features_{re.sub(r'[^a-z0-9]+', '_', mode.lower())}.log"
            problem = feature_cells.check_answer(mode, servers[-1].port, setup["body"], setup["expected"], logfile)
            if problem:
                # Not measured: a mode that answers wrongly would measure an error page.
                log(f"features {mode}: LEFT OUT, its service does not answer as meant: {problem}")
                results.append({"server": servers[-1].label, "features_check": problem})
                stop_process_group(servers.pop().pid)
                continue
            servers[-1].answered[feature_cells.USE_CASE] = 1  # the check's row is logged too
        for mode in modes:
            # One service per mode, the same command but for its configs folder (breast_cancer alone);
            # a mode `<mode>@<commit>` runs the service code of that commit (its package first on the path).
            cmd = [*ours, "--log-uri", str(tmp / f"log-{mode}"), *args.serve_args.split(), *rollout.serve_args(mode)]
            cmd[cmd.index("--configs-dir") + 1] = str(tmp / f"configs-{mode}")
            env = plain_env
            if "@" in mode:
                trees.append(baseline_tree(mode.split("@", 1)[1], tmp))
                env = {**os.environ, "PYTHONPATH": str(trees[-1] / "include")}
            servers.append(start_server(f"rollout {mode}", "rollout", cmd, "/ready", tmp, env))
            servers[-1].log_uri, servers[-1].mode = tmp / f"log-{mode}", mode
        if not args.skip_mlflow:
            # `mlflow models serve` refuses to deserialize any model unless told the registry is trusted.
            # It also runs `uvicorn` through bash, so the venv's bin must be on PATH.
            search_path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
            mlflow_env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "PATH": search_path}
            for use_case in use_cases:
                theirs = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAMES[use_case]}@champion"]
                label = f"mlflow models serve ({use_case})"
                servers.append(
                    start_server(label, "mlflow", [*theirs, "--env-manager", "local"], "/ping", tmp, mlflow_env)
                )
                servers[-1].use_case = use_case
        if peer_python is not None:
            # The registered @champion itself, as our service and MLflow load it, handed to the peers.
            model_file = peers.export_model(
                mlflow.sklearn.load_model(f"models:/{MODEL_NAMES[peers.USE_CASE]}@champion"), tmp / "peer-model"
            )
            peer_env = peers.peer_env(peer_python, tmp)
            for peer in peer_names:
                port = free_port()
                if peer == "mlserver":
                    ports = (port, free_port(), free_port())
                    settings = peers.prepare_mlserver(tmp / "mlserver", model_file, ports)
                    cmd = [str(peer_python.parent / "mlserver"), *settings]
                else:
                    cmd = [str(peer_python.parent / "bentoml"),
                           *peers.prepare_bentoml(peer_python, tmp / "bentoml", model_file, peer_env),
                           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
                servers.append(start_peer(peer, cmd, port, tmp, peer_env))
            facts["peers"] = {p: peers.PACKAGES for p in peer_names}
        for server in servers:
            if server.kind in ("old", "rollout") or server.kind.startswith("new"):
                models = httpx.get(f"http://127.0.0.1:{server.port}/models", timeout=30).json()["models"]
                for served in models:
                    path = served.get("predict_path")
                    results.append({"server": server.label, "use_case": served["use_case"], "predict_path": path})
                    log(f"{server.label}: {served['use_case']} predicts through {path}")
                    # The bodies the cells post: the new service must answer them with probabilities.
                    body = bodies[(served["use_case"], "ours", rows_list[-1])].read_bytes()
                    answer = httpx.post(
                        server.url(served["use_case"]),
                        content=body,
                        headers={"Content-Type": "application/json"},
                        timeout=30,
                    )
                    answer.raise_for_status()
                    # These rows are logged too: count them with the ones wrk gets answered.
                    server.answered[served["use_case"]] = server.answered.get(served["use_case"], 0) + rows_list[-1]
                    keys = sorted(answer.json())
                    results.append({"server": server.label, "use_case": served["use_case"], "response_keys": keys})
                    if server.kind != "old" and "probabilities" not in keys:
                        raise SystemExit(f"{server.label} answered {served['use_case']} without probabilities: {keys}")
        if peer_names or any(s.kind == "mlflow" and s.use_case == peers.USE_CASE for s in servers):
            # Before any timing: every server of the peers' use case answers a few rows as ours does.
            new = next(s for s in servers if s.kind == "new")
            compared = [s for s in servers if s.kind.startswith("new-w")] + [
                s for s in servers if s.use_case == peers.USE_CASE and s.kind in ("mlflow", "peer")
            ]
            checked = peers.check_answers(new, compared, check_records, mlflow.sklearn.load_model(
                f"models:/{MODEL_NAMES[peers.USE_CASE]}@champion"))  # fmt: skip
            for line in checked["lines"]:
                log(line)
            results.append({"answers_checked": checked["lines"]})
            for server in servers:
                rows_checked = checked["answered_rows"].get(server.label, 0)
                if server.kind.startswith("new") and rows_checked:
                    server.answered[peers.USE_CASE] = server.answered.get(peers.USE_CASE, 0) + rows_checked
        facts["setup_seconds"] = time.time() - started

        def measure(server: Server, use_case: str, rows: int, c: int, repeat: int, rate: float = 0) -> None:
            kind = server.peer or ("mlflow" if server.kind == "mlflow" else "ours")
            body = bodies[(use_case, f"features-{server.features_mode}" if server.features_mode else kind, rows)]
            warm = wrk(server.url(use_case), body, c, args.warmup, rate)
            roles_before = rollout.role_counts(server.port, use_case) if server.mode else {}
            # Where the cores go: the service process, the rest of its group (a shadow's worker), wrk, idle.
            cpu_before, service_before = group_cpu_seconds(server.pid), process_cpu_seconds(server.pid)
            wrk_before, (busy_before, idle_before) = children_cpu_seconds(), machine_cpu_seconds()
            run = wrk(server.url(use_case), body, c, args.duration, rate)
            cpu = group_cpu_seconds(server.pid) - cpu_before
            service = process_cpu_seconds(server.pid) - service_before
            busy, idle = (a - b for a, b in zip(machine_cpu_seconds(), (busy_before, idle_before), strict=True))
            seconds = busy + idle  # of all cores
            cores = os.cpu_count() or 1
            run["cores"] = {
                "service": cores * service / seconds,
                "shadow_worker": cores * (cpu - service) / seconds,
                "wrk": cores * (children_cpu_seconds() - wrk_before) / seconds,
                "idle": cores * idle / seconds,
                "other": cores * busy / seconds,
            }
            run["cores"]["other"] -= run["cores"]["service"] + run["cores"]["shadow_worker"] + run["cores"]["wrk"]
            run["load"] = f"paced {rate:g}/s" if rate else "closed"
            if server.features_mode:
                run["features_mode"] = server.features_mode
            if server.mode:
                roles = rollout.role_counts(server.port, use_case)
                by_role = {k: roles.get(k, 0.0) - roles_before.get(k, 0.0) for k in ("champion", "canary")}
                run["mode"] = server.mode
                if server.mode.startswith("canary"):
                    run["canary_share"] = by_role["canary"] / max(1.0, by_role["champion"] + by_role["canary"])
                    guard = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=30).json()
                    run["champion_p99_ms"] = guard["canaries"][use_case]["guard"]["champion_p99_ms"]
                    run["canary_p99_ms"] = guard["canaries"][use_case]["guard"]["canary_p99_ms"]
            for r in (warm, run):
                answered = (int(r["requests"]) - int(r["non_2xx"])) * rows
                server.answered[use_case] = server.answered.get(use_case, 0) + answered
                server.in_flight[use_case] = server.in_flight.get(use_case, 0) + c * rows
            run["cpu_ms_per_request"] = 1000 * cpu / max(1, int(run["requests"]))
            result = {"server": server.label, "kind": server.kind, "use_case": use_case, "rows": rows,
                      "connections": c, "repeat": repeat, **run}  # fmt: skip
            if server.peer:
                result["peer"] = server.peer
            results.append(result)
            share = f"  canary share {run['canary_share']:.1%}" if "canary_share" in run else ""
            where = " ".join(f"{k} {v:.2f}" for k, v in run["cores"].items())
            log(
                f"{server.label:34} {use_case:13} rows={rows:<3} c={c:<2} {run['load']:12} {run['rps']:8.0f} req/s  "
                f"p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms  "
                f"cpu {run['cpu_ms_per_request']:.2f} ms/req  non-2xx {run['non_2xx']}  "
                f"socket errors {run['socket_errors']}{share}  cores: {where}"
            )

        ab = [s for s in servers if s.kind == "old" or s.kind.startswith("new")]
        for use_case in use_cases:
            for rows in rows_list:
                for c in connections:
                    # Old and new alternate (ABBA...), so a neighbour's burst of load does not
                    # land on one side only; MLflow once per cell, in the middle.
                    for repeat in range(args.repeats):
                        for server in ab if repeat % 2 == 0 else ab[::-1]:
                            measure(server, use_case, rows, c, repeat)
                        if repeat == 0:
                            for server in servers:
                                if server.kind in ("mlflow", "peer") and server.use_case == use_case:
                                    measure(server, use_case, rows, c, 0)
        if profile_cells:
            new = next(s for s in servers if s.kind == "new")
            py_spy = (peer_python or peers.ensure_venv(Path(args.peers_venv))).parent / "py-spy"
            for rows, c in profile_cells:
                out = HERE / f"{args.output}-profile-{rows}rows-{c}c.txt"
                body = bodies[(peers.USE_CASE, "ours", rows)]
                profiled = profile_server(py_spy, new, peers.USE_CASE, body, c, args.duration, out)
                results.append({"rows": rows, "connections": c, **profiled})
                # The profiled run's rows are logged too: the log check counts them.
                new.answered[peers.USE_CASE] += (profiled["requests"] - profiled["non_2xx"]) * rows
                new.in_flight[peers.USE_CASE] += c * rows
                log(f"profiled {new.label} at {rows} rows, {c} connections: {profiled['rps']:.0f} req/s under "
                    f"py-spy, {profiled['profile']['samples']} samples in {out.name}")  # fmt: skip
        rolled = [s for s in servers if s.kind == "rollout"]
        if rolled:
            facts["load_average_rollout_start"] = os.getloadavg()[0]
        for server in rolled:
            rollout.wait_ready(str(server.mode), server.port)
        for rows in rollout_rows:
            for c in rollout_connections:
                for rate in rollout_rates:
                    # Every mode once per repeat, the order rotated each time (off, shadow, canary25; then
                    # shadow, canary25, off; ...), so no mode always runs first or after the same neighbour.
                    for repeat in range(args.repeats):
                        shift = repeat % len(rolled)
                        for server in rolled[shift:] + rolled[:shift]:
                            measure(server, rollout.USE_CASE, rows, c, repeat, rate)
        if rolled:
            facts["load_average_rollout_end"] = os.getloadavg()[0]
        stored = [s for s in servers if s.kind == "features"]
        if stored:
            facts["load_average_features_start"] = os.getloadavg()[0]
        for c in features_connections:
            for rate in features_rates:
                # Every mode once per repeat, the order rotated each time (as the rollout cells).
                for repeat in range(args.repeats):
                    shift = repeat % max(1, len(stored))
                    for server in stored[shift:] + stored[:shift]:
                        measure(server, feature_cells.USE_CASE, 1, c, repeat, rate)
        if stored:
            facts["load_average_features_end"] = os.getloadavg()[0]
        for server in stored if args.features_profile else []:
            body = bodies[(feature_cells.USE_CASE, f"features-{server.features_mode}", 1)]
            url, c = server.url(feature_cells.USE_CASE), features_connections[-1]
            profiled: dict[str, Any] = {}

            def load(url: str = url, body: Path = body, c: int = c, out: dict[str, Any] = profiled) -> None:
                out.update(wrk(url, body, c, args.features_profile + 1))

            out = HERE / f"profile-features-{server.features_mode}.txt"
            summary = feature_cells.profile(str(server.features_mode), server.pid, args.features_profile, out, load)
            answered = int(profiled.get("requests", 0)) - int(profiled.get("non_2xx", 0))
            server.answered[feature_cells.USE_CASE] = server.answered.get(feature_cells.USE_CASE, 0) + answered
            server.in_flight[feature_cells.USE_CASE] = server.in_flight.get(feature_cells.USE_CASE, 0) + c
            results.append({"server": server.label, "features_profile": True, "wrk": profiled, **summary})
            log(f"{server.label}: profiled ({profiled.get('rps', 0):.0f} req/s under py-spy): {summary}")
        for server in rolled:
            checked = rollout.health_check(str(server.mode), server.port)
            if checked["health"].get("breached"):
                # What the guard saw when it fired: the service records it on the version (serving/canary.py).
                from mlflow import MlflowClient

                name = rollout.model_name(MODEL_NAMES[rollout.USE_CASE], str(server.mode))
                tags = MlflowClient().get_model_version(name, checked["health"]["version"]).tags
                checked["breach"] = tags.get(TAG_CANARY_BREACH)
                checked["verdict"] += f"; breach on record: {checked['breach']}"
            log(f"{server.label}: /health after the cells: {checked['verdict']}")
            results.append({"server": server.label, **checked})
        for server in [*ab, *rolled, *stored]:
            stop_server(server.pid)
            servers.remove(server)
            time.sleep(0.5)
            served = {"rollout": [rollout.USE_CASE], "features": [feature_cells.USE_CASE]}.get(server.kind, use_cases)
            for use_case in served:
                results.append(check_log(server, use_case))
    finally:
        for server in servers:
            stop_server(server.pid)
        feature_cells.cleanup(store_facts)
        for old in [tree, *trees]:
            if old is not None:
                remove_baseline_tree(old)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    facts["load_average_end"] = os.getloadavg()[0]
    facts["seconds"] = time.time() - started
    write_report(results, facts, args)
    return 0


def check_log(server: Server, use_case: str) -> dict[str, Any]:
    """Every row answered with a 2xx (warm-ups included) must be in the service's prediction log.

    wrk does not count requests still in flight when it stops, which the server may
    answer and log too: at most `connections` requests per wrk run.
    """
    answered, in_flight = server.answered.get(use_case, 0), server.in_flight.get(use_case, 0)
    try:
        frame = read_predictions(use_case, None, None, uri=str(server.log_uri))
    except Exception as exc:  # the old service's log predates the typed log; report, don't fail
        log(f"{server.label}: cannot read its {use_case} log with today's reader: {exc}")
        return {"server": server.label, "use_case": use_case, "logged_rows": None, "answered_rows": answered}
    # A shadow's rows were answered to nobody: counted apart (the champion's and a canary's were).
    shadow = frame["role"] == ROLE_SHADOW if "role" in frame else None
    logged = len(frame) - (int(shadow.sum()) if shadow is not None else 0)
    shadow_rows = int(shadow.sum()) if shadow is not None else 0
    complete = answered <= logged <= answered + in_flight
    log(
        f"{server.label}: {use_case}: {logged} predictions in the log after shutdown, {answered} answered rows "
        f"counted by wrk (+ up to {in_flight} in flight): {'all logged' if complete else 'MISMATCH'}"
        + (f"; {shadow_rows} shadow rows" if shadow_rows else "")
    )
    return {"server": server.label, "use_case": use_case, "logged_rows": logged, "answered_rows": answered,
            "all_logged": complete, "shadow_rows": shadow_rows}  # fmt: skip


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per use case, rows and connections: old vs new (means over repeats) and MLflow."""
    cells: dict[tuple[str, int, int], dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        if (
            "rps" in r and "kind" in r and not r.get("mode") and not r.get("features_mode")
        ):  # mode cells, profiles: not here
            kind = r.get("peer") or r["kind"]
            cells.setdefault((r["use_case"], r["rows"], r["connections"]), {}).setdefault(kind, []).append(r)
    out = []
    for (use_case, rows, c), kinds in cells.items():
        row: dict[str, Any] = {"use_case": use_case, "rows": rows, "connections": c}
        for kind, runs in kinds.items():
            row[f"{kind}_rps"] = _mean([x["rps"] for x in runs])
            row[f"{kind}_p99_ms"] = _mean([x["p99_ms"] for x in runs])
            row[f"{kind}_cpu_ms"] = _mean([x["cpu_ms_per_request"] for x in runs])
            row[f"{kind}_rps_runs"] = [x["rps"] for x in runs]
            row[f"{kind}_invalid"] = any(x["non_2xx"] or x["socket_errors"] for x in runs)
        if "old_rps" in row and "new_rps" in row:
            row["throughput_change_pct"] = 100 * (row["new_rps"] / row["old_rps"] - 1)
            row["cpu_change_pct"] = 100 * (row["new_cpu_ms"] / row["old_cpu_ms"] - 1)
        out.append(row)
    return out


def _f(row: dict[str, Any], key: str, fmt: str = ".0f") -> str:
    value = row.get(key)
    if value is None:
        return "–"
    text = format(value, fmt)
    kind = key.split("_")[0]
    return f"{text} (INVALID)" if row.get(f"{kind}_invalid") and key.endswith("rps") else text


def write_report(results: list[dict[str, Any]], facts: dict[str, Any], args: argparse.Namespace) -> None:
    import platform

    summary = summarize(results)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs ({platform.machine()}), "
        f"{args.workers} worker(s) per service, wrk {args.warmup} s warm-up + {args.duration} s per run, "
        f"{args.repeats} runs per cell for old and new (alternating), 1 for MLflow; whole run "
        f"{facts['seconds'] / 60:.1f} min. Load average (1 min) {facts['load_average_start']:.1f} at the start, "
        f"{facts['load_average_end']:.1f} at the end: other work shared the 2 cores, so compare rows of this run only.",
        "",
        f"old = the service at `{facts['baseline']}` (class only), new = this tree (class + `probabilities`, "
        "one `predict_proba` per micro-batch), same venv, same models, same bodies. "
        f"flight_delays model: `{facts.get('flight_delays_candidate', '-')}` (the best roc_auc of the config's "
        "candidates, `training.build_pipeline`).",
        "",
        "| use case | rows/req | conn. | old req/s | new req/s | Δ req/s | old p99 ms | new p99 ms "
        "| Δ CPU/req | mlflow req/s | mlflow p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        lines.append(
            f"| {row['use_case']} | {row['rows']} | {row['connections']} | {_f(row, 'old_rps')} | "
            f"{_f(row, 'new_rps')} | {_f(row, 'throughput_change_pct', '+.1f')} % | {_f(row, 'old_p99_ms', '.2f')} | "
            f"{_f(row, 'new_p99_ms', '.2f')} | {_f(row, 'cpu_change_pct', '+.1f')} % | {_f(row, 'mlflow_rps')} | "
            f"{_f(row, 'mlflow_p99_ms', '.2f')} |"
        )
    if "load_average_rollout_start" in facts:
        lines += [
            "",
            f"Load average (1 min) {facts['load_average_rollout_start']:.1f} before the rollout cells, "
            f"{facts['load_average_rollout_end']:.1f} after them.",
        ]
    lines += peers.report_lines(results)
    lines += peers.profile_lines(results)
    lines += rollout.report_lines(results)
    if "load_average_features_start" in facts:
        lines += [
            "",
            f"Load average (1 min) {facts['load_average_features_start']:.1f} before the feature store cells, "
            f"{facts['load_average_features_end']:.1f} after them.",
        ]
    lines += feature_cells.report_lines(results)
    lines += feature_cells.profile_lines(results)
    lines += [
        "",
        "Every run (req/s, p50/p99, CPU of the server's process group per request, error answers):",
        "",
        "| server | use case | rows/req | conn. | load | run | req/s | p50 ms | p99 ms | CPU ms/req | non-2xx "
        "| sock. err. |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for r in results:
        if "predict_path" in r:
            notes.append(f"- {r['server']}: {r['use_case']} predicts through `{r['predict_path']}` (GET /models)")
        elif "response_keys" in r:
            notes.append(f"- {r['server']}: {r['use_case']} answers with keys {', '.join(r['response_keys'])}")
        elif "logged_rows" in r:
            if r["logged_rows"] is None:
                verdict = "log not readable by today's reader (written before the typed log)"
            else:
                # More than answered + in flight is as wrong as fewer: rows logged that nobody asked for.
                verdict = "every answered row logged" if r.get("all_logged") else "**MISMATCH with wrk's count**"
            notes.append(
                f"- {r['server']}: {r['use_case']}: {r['logged_rows']} predictions in the log after shutdown, "
                f"{r['answered_rows']} rows answered with a 2xx as counted by wrk: {verdict}"
                + (f"; {r['shadow_rows']} rows scored by the shadow" if r.get("shadow_rows") else "")
            )
        elif "features_check" in r:
            notes.append(f"- {r['server']}: LEFT OUT, it did not answer as meant: {r['features_check'][:300]}")
        elif r.get("features_profile"):
            continue  # listed under the feature store table (feature_cells.profile_lines)
        elif "verdict" in r or "answers_checked" in r or "profile" in r:
            continue  # a rollout server's /health: listed under its table (rollout.report_lines)
        else:
            # A cell with error answers measures an error page, not the model.
            flag = " (INVALID: error answers)" if r["non_2xx"] or r["socket_errors"] else ""
            lines.append(
                f"| {r['server']}{flag} | {r['use_case']} | {r['rows']} | {r['connections']} | "
                f"{r.get('load', 'closed')} | {r['repeat'] + 1} | "
                f"{r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_ms_per_request']:.2f} | "
                f"{r['non_2xx']} | {r['socket_errors']} |"
            )
    text = "\n".join([*lines, "", *notes, ""])
    (HERE / f"{args.output}.md").write_text(text)
    (HERE / f"{args.output}.json").write_text(
        json.dumps(
            {
                "facts": facts,
                "summary": summary,
                "rollout_summary": rollout.summarize(results),
                "features_summary": feature_cells.summarize(results),
                "runs": results,
            },  # fmt: skip
            indent=1,
        )
    )
    print("\n" + text)


if __name__ == "__main__":
    raise SystemExit(main())
