"""Issue 21's peers: MLServer (adaptive batching on) and BentoML serving the same pipeline as ours (bench.py runs them).

Neither is in the project's lock: `ensure_venv` makes a throwaway venv (`uv venv` + `uv pip install`, by
default ~/.cache/mlops-bench/peers) with the peers at the versions below and scikit-learn, numpy and pandas
at this venv's own versions, so the pickled pipeline loads unchanged. Both serve the registered
@champion itself: bench.py loads it from the registry, `export_model` writes it with joblib (the file
MLServer's scikit-learn runtime reads), and `prepare_bentoml` saves that file into a BentoML model store
inside the bench's temporary folder (BENTOML_HOME).

- **MLServer** (`mlserver` + `mlserver-sklearn`): the V2 inference protocol; the request names its
  columns with the pandas content type (the pipeline's ColumnTransformer selects columns by name) and
  asks for `predict` and `predict_proba`, the content of our answer (MLServer calls the model once per
  output). Adaptive batching on: `max_batch_size` 32 requests, `max_batch_time` 5 ms (the MLServer docs'
  example values); otherwise its defaults (one inference worker process beside the HTTP process).
- **BentoML**: a service written the way its docs show (`@bentoml.service`, a sync `@bentoml.api` that
  takes the same `{"records": [...]}` body as ours), answering with classes and probabilities from one
  `predict_proba` per request, as ours does per micro-batch; one worker, its default.

Before any timing, `check_answers` compares every server's predictions (and probabilities, where it
gives them) with ours on a few rows, one request at a time and in concurrent bursts (MLServer's batcher
merges concurrent requests: a mis-split batch would answer the wrong rows).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from itertools import zip_longest
from pathlib import Path
from typing import Any

PEERS = ("mlserver", "bentoml")
USE_CASE = "breast_cancer"
"""The pipeline the peers serve: 30 double features, nothing a V2 tensor cannot carry."""
PACKAGES = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "bentoml==1.4.40", "uvloop==0.21.0", "py-spy")
"""The peers' versions (py-spy profiles any server of the run: `--profile`). uvloop 0.22 and later raise
from `asyncio.get_event_loop()` without a running loop, which MLServer 1.7.1's inference workers call at
start: they die and the model never loads."""
SHARED = ("scikit-learn", "numpy", "pandas", "joblib")
"""Installed in the peers' venv at this venv's versions: the same pickled pipeline, the same numerics."""
DEFAULT_VENV = Path.home() / ".cache" / "mlops-bench" / "peers"
MAX_BATCH_SIZE = 32
MAX_BATCH_TIME_S = 0.005
READY = {"mlserver": "/v2/health/ready", "bentoml": "/readyz"}
MODEL = "bench_model"
"""The model's name inside MLServer and in BentoML's store."""


def requirements() -> list[str]:
    return [*PACKAGES, *(f"{name}=={version(name)}" for name in SHARED)]


def ensure_venv(folder: Path = DEFAULT_VENV) -> Path:
    """The peers' venv's python, made or updated when its recorded requirements differ from today's."""
    python = folder / "bin" / "python"
    wanted = "\n".join(requirements())
    stamp = folder / "mlops-bench-requirements.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([uv, "venv", "--quiet", "--allow-existing", "--python", minor, str(folder)], check=True)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), *requirements()], check=True)
    stamp.write_text(wanted)
    return python


def export_model(pipe: Any, folder: Path) -> Path:
    """The registered pipeline as `model.joblib` (MLServer's scikit-learn runtime's well-known file name)."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.joblib"
    joblib.dump(pipe, path)
    return path


def prepare_mlserver(folder: Path, model_file: Path, ports: tuple[int, int, int]) -> list[str]:
    """MLServer's settings and model settings in `folder`; returns the arguments after `mlserver`."""
    http, grpc, metrics = ports
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics}
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_file), "version": "v1"},
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": MAX_BATCH_TIME_S,
    }
    (folder / "model-settings.json").write_text(json.dumps(model))
    return ["start", str(folder)]


BENTO_SERVICE = '''\
"""The benchmark's BentoML service: the registered pipeline from BentoML's model store."""

import bentoml
import numpy as np
import pandas as pd


@bentoml.service(workers=1)
class Classifier:
    model_ref = bentoml.models.BentoModel("{model}:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)
        self.classes = self.model.classes_

    @bentoml.api
    def predict(self, records: list[dict[str, float]]) -> dict:
        proba = self.model.predict_proba(pd.DataFrame.from_records(records))
        return {{
            "predictions": self.classes[np.argmax(proba, axis=1)].tolist(),
            "probabilities": proba.tolist(),
        }}
'''


def prepare_bentoml(python: Path, folder: Path, model_file: Path, env: dict[str, str]) -> list[str]:
    """The model saved into the store at env's BENTOML_HOME and the service file; the arguments after `bentoml`."""
    folder.mkdir(parents=True, exist_ok=True)
    save = f"import bentoml, joblib; bentoml.sklearn.save_model({MODEL!r}, joblib.load({str(model_file)!r}))"
    subprocess.run([str(python), "-c", save], check=True, env=env, capture_output=True)
    (folder / "service.py").write_text(BENTO_SERVICE.format(model=MODEL))
    return ["serve", "service:Classifier", "--working-dir", str(folder)]


def url(peer: str, port: int) -> str:
    path = "/v2/models/" + MODEL + "/infer" if peer == "mlserver" else "/predict"
    return f"http://127.0.0.1:{port}{path}"


def body(peer: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The request for `records`: BentoML takes ours as it is; MLServer a V2 request, one input per column."""
    if peer == "bentoml":
        return {"records": records}
    columns = list(records[0])
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": c, "shape": [len(records)], "datatype": "FP64", "data": [r[c] for r in records]} for c in columns
        ],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }


def request_body(kind: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """`records` in the body format of a server kind: ours, mlflow, mlserver, bentoml."""
    if kind == "ours":
        return {"records": records}
    if kind == "mlflow":
        columns = list(records[0])
        return {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]}}
    return body(kind, records)


def answer(kind: str, payload: dict[str, Any]) -> tuple[list[Any], list[list[float]] | None]:
    """(predictions, probabilities or None) from a server's JSON answer; kind: ours, mlflow, mlserver, bentoml."""
    if kind in ("ours", "bentoml"):
        return list(payload["predictions"]), payload.get("probabilities")
    if kind == "mlflow":
        return list(payload["predictions"]), None
    if kind == "mlserver":
        outputs = {o["name"]: o for o in payload["outputs"]}
        proba = outputs["predict_proba"]
        width = proba["shape"][1]
        flat = proba["data"]
        return list(outputs["predict"]["data"]), [flat[i : i + width] for i in range(0, len(flat), width)]
    raise ValueError(f"unknown server kind {kind!r}")


def compare(
    label: str,
    expected: tuple[list[Any], list[list[float]] | None],
    got: tuple[list[Any], list[list[float]] | None],
    tolerance: float = 1e-9,
) -> str | None:
    """None when `got` answers as `expected` (ours) does; else what differs."""
    if [str(p) for p in got[0]] != [str(p) for p in expected[0]]:
        return f"{label}: predictions {got[0]} differ from ours {expected[0]}"
    if got[1] is not None and expected[1] is not None:
        worst = max(abs(a - b) for g, e in zip(got[1], expected[1], strict=True) for a, b in zip(g, e, strict=True))
        if worst > tolerance:
            return f"{label}: probabilities differ from ours by up to {worst:g}"
    return None


def check_answers(ours: Any, others: list[Any], records: list[dict[str, Any]], pipe: Any) -> dict[str, Any]:
    """Every server in `others` answers as `ours` does, and ours as the pipeline in this process.

    `ours`/`others` are bench.Server objects (`kind`, `peer`, `label`, `url()`). Checked on all `records`
    in one request and, in three bursts, on eight slices of five records sent at once (a batcher that
    merges concurrent requests must hand each its own rows back). Raises SystemExit on a difference:
    a fast wrong answer is not a result. Returns the lines to report and, per label, the rows each of
    our services answered (they log them: the bench's log check counts them).
    """
    import httpx
    import numpy as np
    import pandas as pd

    def post(server: Any, rows: list[dict[str, Any]]) -> tuple[list[Any], list[list[float]] | None]:
        kind = server.peer or ("mlflow" if server.kind == "mlflow" else "ours")
        reply = httpx.post(server.url(USE_CASE), json=request_body(kind, rows), timeout=60)
        if reply.status_code >= 300:
            raise SystemExit(f"{server.label} answered {reply.status_code} to the check: {reply.text[:500]}")
        return answer(kind, reply.json())

    slices = [records[i * 5 : i * 5 + 5] for i in range(8)]
    proba = pipe.predict_proba(pd.DataFrame.from_records(records))
    local = (pipe.classes_[np.argmax(proba, axis=1)].tolist(), proba.tolist())
    expected = post(ours, records)
    problem = compare(f"{ours.label} vs the pipeline in-process", local, expected)
    if problem:
        raise SystemExit(problem)
    expected_slices = [post(ours, rows) for rows in slices]
    per_server = len(records) + 3 * sum(map(len, slices))
    answered = {ours.label: len(records) + sum(map(len, slices))}
    lines = [
        f"{ours.label}: {len(records)} rows ({sorted(set(map(str, expected[0])))} predicted) answered as the "
        "pipeline in this process does"
    ]
    for server in others:
        problem = compare(server.label, expected, post(server, records))
        with ThreadPoolExecutor(len(slices)) as pool:
            for _ in range(3):
                answers = list(pool.map(post, [server] * len(slices), slices))
                for got, want in zip(answers, expected_slices, strict=True):
                    problem = problem or compare(f"{server.label} (concurrent)", want, got)
        if problem:
            raise SystemExit(f"{problem}: the servers do not answer alike, the timings would not compare")
        answered[server.label] = per_server
        what = "predictions" if server.kind == "mlflow" else "predictions and probabilities"
        lines.append(
            f"{server.label}: same {what} as ours on {len(records)} rows and in 3 bursts of 8 concurrent requests"
        )
    return {"lines": lines, "answered_rows": answered}


_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """`predict (/x/site-packages/sklearn/pipeline.py:123)` -> `predict (sklearn/pipeline.py)`."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "include/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def summarize_stacks(raw: str, top: int = 15) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> samples, and the frames with the largest share, inclusive and self.

    A line is `frame;frame;...;frame count`, outermost first. Inclusive counts a frame once per stack
    (recursion does not count twice); self counts the innermost frame.
    """
    total, inclusive, own = 0, Counter[str](), Counter[str]()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    # Inclusive shares of the package's own frames: the outer frames (runpy, uvicorn, asyncio) are in
    # nearly every stack and say nothing.
    ours = Counter({name: n for name, n in inclusive.items() if "mlops/" in name})
    return {
        "samples": total,
        "inclusive": [(name, n / total) for name, n in ours.most_common(top)] if total else [],
        "self": [(name, n / total) for name, n in own.most_common(top)] if total else [],
    }


def profile_lines(results: list[dict[str, Any]]) -> list[str]:
    """The py-spy summaries of the `--profile` runs."""
    lines: list[str] = []
    for r in results:
        if "profile" not in r:
            continue
        p = r["profile"]
        lines += [
            "",
            f"py-spy on {r['server']} at {r['rows']} rows, {r['connections']} connections ({p['samples']} samples; "
            f"{r['rps']:.0f} req/s, p99 {r['p99_ms']:.2f} ms while sampled). Share of the samples:",
            "",
            "| our frame (and everything it calls) | share | frame itself (innermost) | share |",
            "| --- | ---: | --- | ---: |",
        ]
        for inc, own in zip_longest(p["inclusive"], p["self"]):
            left = f"`{inc[0]}` | {inc[1]:.1%}" if inc else " | "
            right = f"`{own[0]}` | {own[1]:.1%}" if own else " | "
            lines.append(f"| {left} | {right} |")
    return lines


def server_name(run: dict[str, Any]) -> str | None:
    """The name a run's server has in the peers table: ours (on N workers), mlflow, mlserver, bentoml."""
    kind = run.get("kind")
    if kind == "new":
        return "ours"
    if isinstance(kind, str) and kind.startswith("new-w"):
        return f"ours, {kind.removeprefix('new-w')} workers"
    if kind == "peer":
        return str(run["peer"])
    return "mlflow" if kind == "mlflow" else None


def report_lines(results: list[dict[str, Any]]) -> list[str]:
    """The peers' tables: every server per rows × connections cell (means over repeats), then the verdicts.

    A verdict per cell and configuration of ours: ahead of every peer on req/s, and a p99 no higher
    than the lowest peer p99 (issue 21's target; MLflow counts as a peer).
    """
    cells: dict[tuple[str, int, int], dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        name = server_name(r)
        if "rps" not in r or r.get("mode") or name is None:
            continue
        cells.setdefault((r["use_case"], r["rows"], r["connections"]), {}).setdefault(name, []).append(r)
    if not any(len(by_server) > 1 for by_server in cells.values()):
        return []
    lines = [
        "",
        "Against the peers (ours with prediction logging on; mean over its runs where it ran more than once; "
        "CPU of the server's processes per request):",
        "",
        "| use case | rows/req | conn. | server | req/s | p50 ms | p99 ms | CPU ms/req | runs |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts = [
        "",
        "Issue 21's target per cell: ahead of every peer on req/s, at a p99 no higher than the lowest peer p99:",
        "",
        "| use case | rows/req | conn. | ours | req/s ÷ best peer's | p99 ÷ lowest peer p99 | met |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for (use_case, rows, c), by_server in sorted(cells.items()):
        mean = {
            s: {k: sum(x[k] for x in runs) / len(runs) for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")}
            for s, runs in by_server.items()
        }
        for s, m in mean.items():
            bad = any(x["non_2xx"] or x["socket_errors"] for x in by_server[s])
            lines.append(
                f"| {use_case} | {rows} | {c} | {s} | {m['rps']:.0f}{' (INVALID)' if bad else ''} | "
                f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['cpu_ms_per_request']:.2f} | {len(by_server[s])} |"
            )
        others = [s for s in mean if not s.startswith("ours")]
        if not others:
            continue
        best = max(others, key=lambda s: mean[s]["rps"])
        lowest = min(others, key=lambda s: mean[s]["p99_ms"])
        for ours in (s for s in mean if s.startswith("ours")):
            ahead = mean[ours]["rps"] / mean[best]["rps"]
            tail = mean[ours]["p99_ms"] / mean[lowest]["p99_ms"]
            met = "yes" if ahead > 1 and tail <= 1 else "no"
            verdicts.append(
                f"| {use_case} | {rows} | {c} | {ours} | {ahead:.2f}× ({best}) | {tail:.2f}× ({lowest}) | {met} |"
            )
    return lines + verdicts


def peer_env(python: Path, home: Path) -> dict[str, str]:
    """The peers' processes' environment: their venv first on PATH, BentoML's home in the bench's folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    env["BENTOML_HOME"] = str(home / "bentoml")
    env["BENTOML_DO_NOT_TRACK"] = "true"
    return env
