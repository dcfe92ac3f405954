"""Issue 18's cells: what a shadow, and a canary at 25 %, cost the champion (bench.py runs them).

One service per mode, each serving breast_cancer alone from its own configs folder, the same
champion and bodies; they differ only in the config's `deployment` block:

- `off`: no block (strategy direct), the champion alone;
- `shadow`: `strategy: shadow`, the second version as `@shadow` scores every micro-batch in
  the shadow's worker process;
- `shadow-sampled`: the same with `shadow_sample: 0.25` (a quarter of the micro-batches);
- `canary25`: `strategy: canary` with `canary_steps: [0.25, 1.0]` at step 0, the second
  version as `@canary` answers a quarter of the requests;
- `canary25-unguarded`: the same with `canary_guard_min_requests` 10^9,
  so the guard never judges; it measures what routing a quarter to the canary costs even
  when the default guard takes the canary off within the run (then canary25's own numbers
  are the champion's alone after the breach, and its measured canary share says so);
- `spool-off` (not run by default): `off` with `--no-spool`, the log buffered in memory only, as
  before the spool (serving/spool.py; issue 21): `off` against it is what the spool costs.

The bodies carry no ids, so the service draws a uuid per request and the canary's share is
the hash's, not one fixed id's side. The share each run actually got is read from /metrics
(`mlops_serving_requests_total` by role) around the measured wrk run, and /health is read
after the cells: the canary must still be at 0.25 and not breached, the shadow must have
scored (not dropped) its batches, or the numbers measure something else.
"""

from __future__ import annotations

from typing import Any

import httpx

MODES = ("off", "shadow", "shadow-sampled", "canary25", "canary25-unguarded")
"""The default modes: canary25-unguarded is canary25 with a guard that never judges (below)."""
UNGUARDED = 10**9
"""canary_guard_min_requests of `canary25-unguarded`: the routing's cost even where the guard would take it off."""
USE_CASE = "breast_cancer"
CANDIDATE_C = 0.1
"""The second version: the champion's pipeline with LogisticRegression(C=0.1) (the champion has C=1)."""
CANARY_FRACTION = 0.25
SHADOW_SAMPLE = 0.25
"""`shadow-sampled`'s deployment.shadow_sample."""
SHADOW_MAX_THROUGHPUT_LOSS_PCT = 20.0
"""Issue 18's target: a shadow costs at most 20 % of single-row throughput at 8 connections ..."""
SHADOW_MAX_P99_RISE_MS = 2.0
"""... and raises the champion's p99 by at most 2 ms."""


def deployment(mode: str) -> dict[str, Any] | None:
    """The use case config's `deployment` block for a mode (None: leave the config without one).

    `<mode>@<commit>`: the same block, served by the service code of that commit (bench.py checks it out),
    e.g. `shadow@dd0219b`, the shadow on a thread of the service as it was before its worker process.
    """
    mode = mode.split("@", 1)[0]
    if mode in ("off", "spool-off"):
        return None
    if mode == "shadow":
        return {"strategy": "shadow"}
    if mode == "shadow-sampled":
        return {"strategy": "shadow", "shadow_sample": SHADOW_SAMPLE}
    if mode == "canary25":
        return {"strategy": "canary", "canary_steps": [CANARY_FRACTION, 1.0]}
    if mode == "canary25-unguarded":
        return {"strategy": "canary", "canary_steps": [CANARY_FRACTION, 1.0], "canary_guard_min_requests": UNGUARDED}
    raise SystemExit(f"unknown rollout mode {mode!r}: choose from {', '.join(MODES)}, spool-off (or 'none')")


def serve_args(mode: str) -> list[str]:
    """The mode's own arguments for the service command (the others differ only in their configs)."""
    return ["--no-spool"] if mode.split("@", 1)[0] == "spool-off" else []


def model_name(base: str, mode: str) -> str:
    """The registered model of a mode's service: one per mode (a canary's breach is recorded on its version)."""
    return f"{base}_{mode.replace('-', '_').replace('@', '_at_')}"


def parse_modes(text: str) -> list[str]:
    if text == "none":
        return []
    modes = text.split(",")
    for mode in modes:
        deployment(mode)  # refuses an unknown one
    return modes


def role_counts(port: int, use_case: str) -> dict[str, float]:
    """Requests answered so far per role (`champion`, `canary`; the shadow's scored ones) from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "mlops_serving_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("use_case") == use_case:
                role = sample.labels.get("role", "champion")
                counts[role] = counts.get(role, 0.0) + sample.value
    return counts


def wait_ready(mode: str, port: int, timeout: float = 120) -> None:
    """Until a shadow mode's worker process has loaded `@shadow` (before that its batches are dropped)."""
    import time

    if not mode.startswith("shadow"):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        block = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json().get("shadows", {}).get(USE_CASE, {})
        # A service from before the worker process (`shadow@<commit>`) has no `worker`: ready once it has @shadow.
        worker = block.get("worker", {"version": block.get("version")})
        if block.get("version") and worker.get("version") == block.get("version"):
            return
        time.sleep(0.2)
    raise SystemExit(f"the {mode} service's shadow worker did not load @shadow in {timeout:.0f} s: {block}")


def health_check(mode: str, port: int) -> dict[str, Any]:
    """The mode's block of /health after the cells, and whether it says the mode ran as meant."""
    body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()
    if mode.startswith("shadow"):
        block = body.get("shadows", {}).get(USE_CASE, {})
        ok = bool(block.get("version")) and block.get("scored_batches", 0) > 0
        # Failures and restarts mean the mode did not run as meant; a few batches dropped or late under an
        # overload are the shadow shedding load as designed, reported with their share.
        broken = {k: block.get(k, 0) for k in ("failures", "restarts") if block.get(k)}
        shed = {k: block.get(k, 0) for k in ("timeouts", "dropped_batches") if block.get(k)}
        sampled = block.get("sampled_out_batches", 0)
        scored = block.get("scored_batches", 0)
        total = scored + sum(shed.values())
        verdict = f"scored {scored} batches in time" + (f" ({sampled} more sampled out)" if sampled else "")
        if shed:
            shares = (f"{v} {k} ({100 * v / max(1, total):.2f} %)" for k, v in shed.items())
            verdict += "; not scored: " + ", ".join(shares)
        if not ok or broken:
            verdict = f"NOT AS MEANT: {broken or block}"
    elif mode.startswith("canary25"):
        block = body.get("canaries", {}).get(USE_CASE, {})
        ok = block.get("fraction") == CANARY_FRACTION and block.get("breached") is False
        verdict = (
            f"fraction {block.get('fraction')}, not breached"
            if ok
            else f"NOT AS MEANT: fraction {block.get('fraction')}, breached {block.get('breached')}"
        )
    else:
        block, ok, verdict = {}, True, "champion only"
    return {"mode": mode, "health": block, "as_meant": ok and "NOT" not in verdict, "verdict": verdict}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per rows × connections × load × mode (means over repeats), with the cost against `off`."""
    cells: dict[tuple[int, int, str], dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        if "rps" in r and r.get("mode"):
            key = (r["rows"], r["connections"], r.get("load", "closed"))
            cells.setdefault(key, {}).setdefault(r["mode"], []).append(r)
    out = []
    for (rows, c, load), modes in cells.items():
        off = modes.get("off")
        for mode, runs in modes.items():
            row: dict[str, Any] = {
                "use_case": USE_CASE, "rows": rows, "connections": c, "load": load, "mode": mode,
                "rps": _mean([x["rps"] for x in runs]), "rps_runs": [x["rps"] for x in runs],
                "p50_ms": _mean([x["p50_ms"] for x in runs]), "p99_ms": _mean([x["p99_ms"] for x in runs]),
                "p99_runs": [x["p99_ms"] for x in runs],
                "cpu_ms": _mean([x["cpu_ms_per_request"] for x in runs]),
                "invalid": any(x["non_2xx"] or x["socket_errors"] for x in runs),
            }  # fmt: skip
            if all("cores" in x for x in runs):
                row["cores"] = {k: _mean([x["cores"][k] for x in runs]) for k in runs[0]["cores"]}
            shares = [x["canary_share"] for x in runs if x.get("canary_share") is not None]
            row["canary_share"] = _mean(shares) if shares else None
            for key in ("champion_p99_ms", "canary_p99_ms"):
                values = [x[key] for x in runs if x.get(key) is not None]
                row[key] = _mean(values) if values else None
            if off and mode != "off":
                base_rps, base_p99 = _mean([x["rps"] for x in off]), _mean([x["p99_ms"] for x in off])
                row["throughput_change_pct"] = 100 * (row["rps"] / base_rps - 1)
                row["p99_change_ms"] = row["p99_ms"] - base_p99
                row["p50_change_ms"] = row["p50_ms"] - _mean([x["p50_ms"] for x in off])
                row["cpu_change_pct"] = 100 * (row["cpu_ms"] / _mean([x["cpu_ms_per_request"] for x in off]) - 1)
                if mode.startswith("shadow") and rows == 1 and c == 8 and load == "closed":
                    row["target_met"] = (
                        row["throughput_change_pct"] >= -SHADOW_MAX_THROUGHPUT_LOSS_PCT
                        and row["p99_change_ms"] <= SHADOW_MAX_P99_RISE_MS
                    )
                elif mode.startswith("shadow") and rows == 1 and c == 8:
                    row["target_met"] = row["p99_change_ms"] <= SHADOW_MAX_P99_RISE_MS  # paced: the p99 part
            out.append(row)
    return out


def report_lines(results: list[dict[str, Any]]) -> list[str]:
    summary = summarize(results)
    if not summary:
        return []
    lines = [
        "",
        f"Shadow and canary (issue 18): {USE_CASE}, one service per mode, identical but for the config's "
        f"`deployment` (off: none; shadow: `strategy: shadow`, @shadow = v2, scored in the shadow's worker "
        f"process; shadow-sampled: the same with `shadow_sample: {SHADOW_SAMPLE:g}`; canary25: `strategy: canary`, "
        f"@canary = v2 at {CANARY_FRACTION:.0%}; spool-off: off with `--no-spool`, the log buffered in memory "
        "only; every other mode spools each answer to a local file before answering); "
        f"v2 is the same pipeline with C = {CANDIDATE_C:g} (v1: C = 1). "
        "Modes alternate within the cell, the order rotated every repeat. Δ against off in the same cell. "
        "Load: `closed` = wrk as fast as answers come; `paced N/s` = each connection waits a random think time "
        "(paced.lua), about N requests a second in all, below saturation. "
        f"Target (shadow, 1 row, 8 connections): at most −{SHADOW_MAX_THROUGHPUT_LOSS_PCT:g} % req/s and "
        f"+{SHADOW_MAX_P99_RISE_MS:g} ms p99 (closed: both; paced: the p99). Cores: CPU of the service process, "
        "the shadow's worker process, wrk, everything else and idle, in cores (2 = both). Canary share: requests "
        "the canary answered during the measured runs (/metrics); champion / canary p99: the service's own "
        "timing of each side's answers (the canary guard's last 1000 of each, read after each run).",
        "",
        "| rows/req | conn. | load | mode | req/s (runs) | Δ req/s | p50 ms | Δ p50 | p99 ms (runs) | Δ p99 ms "
        "| Δ CPU/req | cores: service / shadow / wrk / other / idle | canary share | guard p99 ms | target |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for row in summary:

        def f(key: str, fmt: str, row: dict[str, Any] = row) -> str:
            value = row.get(key)
            return "–" if value is None else format(value, fmt)

        runs = ", ".join(f"{x:.0f}" for x in row["rps_runs"])
        p99s = ", ".join(f"{x:.2f}" for x in row["p99_runs"])
        met = row.get("target_met")
        target = "–" if met is None else "met" if met else "**not met**"
        flag = " (INVALID: error answers)" if row["invalid"] else ""
        cores = row.get("cores")
        where = (
            " / ".join(f"{cores[k]:.2f}" for k in ("service", "shadow_worker", "wrk", "other", "idle"))
            if cores
            else "–"
        )
        lines.append(
            f"| {row['rows']} | {row['connections']} | {row['load']} | {row['mode']}{flag} | {row['rps']:.0f} ({runs}) "
            f"| {f('throughput_change_pct', '+.1f')} % | {row['p50_ms']:.2f} | {f('p50_change_ms', '+.2f')} | "
            f"{row['p99_ms']:.2f} ({p99s}) | {f('p99_change_ms', '+.2f')} | {f('cpu_change_pct', '+.1f')} % | "
            f"{where} | {f('canary_share', '.1%')} | {f('champion_p99_ms', '.2f')} / {f('canary_p99_ms', '.2f')} | "
            f"{target} |"
        )
    lines.append("")
    for r in results:
        if "verdict" in r:
            lines.append(f"- rollout {r['mode']}: /health after the cells: {r['verdict']} ({r['health']})")
    return lines
