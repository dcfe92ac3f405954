"""Requests per second and p50/p99 latency: our service vs `mlflow models serve`, one run.

Everything runs on this machine over loopback: a throwaway MLflow server holding
one breast_cancer pipeline (imputer + scaler + LogisticRegression, 30 features)
registered as @champion, our service (`python -m mlops.serving`, prediction
logging on) with 1 and 2 workers, and `mlflow models serve --env-manager local`
for the same version. wrk drives single-row and 100-row payloads at several
connection counts. Results go to stdout and to benchmarks/serving/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from mlops.predictionlog.predictions import read_predictions
from mlops.processes import free_port, start_process_group, stop_process_group, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MODEL_NAME = "bench_breast_cancer"


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


def register_model(uri: str) -> tuple[str, list[dict[str, float]]]:
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_tracking_uri(uri)
    data = load_breast_cancer(as_frame=True)
    x = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    prep = ColumnTransformer(
        [("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), list(x.columns))]
    )
    pipe = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=1000))]).fit(x, data.target)
    mlflow.set_experiment("serving-benchmark")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipe, name="model", signature=infer_signature(x.head(50), pipe.predict(x.head(50))),
            input_example=x.head(2), registered_model_name=MODEL_NAME,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipe)),
            pip_requirements=["scikit-learn", "pandas", "numpy", "skops"],
        )  # fmt: skip
    MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))
    records = [{k: float(v) for k, v in row.items()} for row in x.head(100).to_dict(orient="records")]
    return str(info.registered_model_version), records


def payloads(records: list[dict[str, float]], folder: Path) -> dict[tuple[str, int], Path]:
    columns = list(records[0])
    out = {}
    for rows in (1, 100):
        ours = folder / f"ours-{rows}.json"
        ours.write_text(json.dumps({"records": records[:rows]}))
        theirs = folder / f"mlflow-{rows}.json"
        theirs.write_text(
            json.dumps(
                {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records[:rows]]}}
            )
        )
        out[("ours", rows)] = ours
        out[("mlflow", rows)] = theirs
    return out


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by every process of a process group.

    On a machine shared with other work, wall-clock req/s says more about the
    neighbours than about the server; CPU per request does not.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def wrk(url: str, body: Path, connections: int, duration: int) -> dict[str, float]:
    threads = max(1, min(2, connections))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s",
           "-s", str(HERE / "post.lua"), url]  # fmt: skip
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "WRK_BODY": str(body)}
    ).stdout

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--workers", default="1,2", help="worker counts to try for our service")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--serve-args", default="", help="extra arguments for our service: '--log-flush-seconds 5'")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure only our service (for quick comparisons)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed: run benchmarks/serving/run.sh (it installs it) or apt-get install -y wrk"
        )
    connections = [int(c) for c in args.connections.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    pids: list[int] = []
    results: list[dict[str, object]] = []
    try:
        os.environ["MLOPS_HOME"] = str(tmp / "home")
        log("starting a throwaway MLflow server ...")
        pid, uri = start_mlflow(tmp)
        pids.append(pid)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        version, records = register_model(uri)
        log(f"registered {MODEL_NAME} v{version} as @champion")
        bodies = payloads(records, tmp)
        configs = tmp / "configs"
        configs.mkdir()
        raw = yaml.safe_load((ROOT / "configs" / "breast_cancer.yaml").read_text())
        raw["model_name"] = MODEL_NAME
        (configs / "breast_cancer.yaml").write_text(yaml.safe_dump(raw))

        servers: list[tuple[str, list[str], str, str]] = []
        for n in workers:
            ours = [sys.executable, "-m", "mlops.serving", "--configs-dir", str(configs)]
            ours += ["--log-uri", str(tmp / f"log-{n}"), "--workers", str(n), *args.serve_args.split()]
            servers.append((f"ours, {n} worker{'s' if n > 1 else ''}", ours, "/ready", "/predict/breast_cancer"))
        theirs = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion"]
        if not args.skip_mlflow:
            servers.append(("mlflow models serve", [*theirs, "--env-manager", "local"], "/ping", "/invocations"))
        for label, cmd, ready, path in servers:
            port = free_port()
            full = [*cmd, "--host", "127.0.0.1", "--port", str(port)]
            kind = "mlflow" if label.startswith("mlflow") else "ours"
            logfile = tmp / f"{label.replace(' ', '_').replace(',', '')}.log"
            # `mlflow models serve` refuses to deserialize any model unless told the registry is trusted.
            # It also runs `uvicorn` through bash, so the venv's bin must be on PATH.
            env = None
            if kind == "mlflow":
                search_path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
                env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "PATH": search_path}
            process = start_process_group(full, logfile, env=env)
            pids.append(process.pid)
            wait_for_http(f"http://127.0.0.1:{port}{ready}", 600, process, logfile)
            url = f"http://127.0.0.1:{port}{path}"
            if kind == "ours":
                served = httpx.get(f"http://127.0.0.1:{port}/models", timeout=30).json()["models"][0]
                results.append({"server": label, "predict_path": served["predict_path"]})
                log(f"{label}: predicts through {served['predict_path']}")
            # Rows answered with a 2xx, warm-ups included: each must be in the prediction log. wrk
            # does not count requests still in flight when it stops, which the server may answer
            # and log too: at most `connections` requests per wrk run.
            answered_rows = in_flight_rows = 0
            for rows in (1, 100):
                for c in connections:
                    warm = wrk(url, bodies[(kind, rows)], c, 2)
                    result = {"server": label, "rows": rows, "connections": c}
                    cpu_before = group_cpu_seconds(process.pid)
                    result.update(wrk(url, bodies[(kind, rows)], c, args.duration))
                    for run in (warm, result):
                        answered_rows += (int(run["requests"]) - int(run["non_2xx"])) * rows
                        in_flight_rows += c * rows
                    cpu = group_cpu_seconds(process.pid) - cpu_before
                    result["cpu_ms_per_request"] = 1000 * cpu / max(1, int(result["requests"]))
                    results.append(result)
                    log(
                        f"{label:22} rows={rows:<3} c={c:<2} {result['rps']:8.0f} req/s  "
                        f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                        f"cpu {result['cpu_ms_per_request']:.2f} ms/req  "
                        f"non-2xx {result['non_2xx']}  socket errors {result['socket_errors']}"
                    )
            stop_process_group(process.pid)
            pids.remove(process.pid)
            if kind == "ours":
                time.sleep(0.5)
                logged = len(read_predictions("breast_cancer", None, None, uri=str(tmp / f"log-{label.split()[1]}")))
                complete = answered_rows <= logged <= answered_rows + in_flight_rows
                log(
                    f"{label}: {logged} predictions in the log after shutdown, {answered_rows} answered rows "
                    f"counted by wrk (+ up to {in_flight_rows} in flight): {'all logged' if complete else 'MISMATCH'}"
                )
                results.append(
                    {"server": label, "logged_rows": logged, "answered_rows": answered_rows, "all_logged": complete}
                )
    finally:
        for pid in pids:
            stop_process_group(pid)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    write_report(results, args)
    return 0


def write_report(results: list[dict[str, object]], args: argparse.Namespace) -> None:
    import platform

    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs ({platform.machine()}),"
        f" wrk {args.duration} s per cell, load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "| server | rows/request | connections | req/s | p50 ms | p99 ms | CPU ms/req | non-2xx | sock. err. |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    logged = []
    for r in results:
        if "predict_path" in r:
            logged.append(f"- {r['server']}: predict path `{r['predict_path']}` (GET /models)")
            continue
        if "logged_rows" in r:
            verdict = "every answered row logged" if r.get("all_logged") else "**rows missing from the log**"
            logged.append(
                f"- {r['server']}: {r['logged_rows']} predictions in the prediction log after shutdown, "
                f"{r.get('answered_rows')} rows answered with a 2xx as counted by wrk: {verdict}"
            )
            continue
        # A cell with error answers measures an error page, not the model.
        flag = " (INVALID: error answers)" if r["non_2xx"] or r["socket_errors"] else ""
        lines.append(
            f"| {r['server']}{flag} | {r['rows']} | {r['connections']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['cpu_ms_per_request']:.2f} | {r['non_2xx']} | {r['socket_errors']} |"
        )
    text = "\n".join([*lines, "", *logged, ""])
    (HERE / "results.md").write_text(text)
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    print("\n" + text)


if __name__ == "__main__":
    raise SystemExit(main())
