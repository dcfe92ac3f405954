"""Drift check at scale: mlops.monitoring.drift versus a full Evidently DataDriftPreset run, side by side.

Each (engine, size, scenario) runs in its own subprocess so its time and peak RSS
are its own (resource.getrusage of the child). Data generation is excluded from the
time but included in the RSS (it is the window the check must hold anyway; the
`baseline_rss_mb` column shows it).

    .venv/bin/python benchmarks/drift/run.py   # 1M and 10M rows, full Evidently at both sizes (~1-2 h on 2 cores)
    .venv/bin/python benchmarks/drift/run.py --sizes 100000 --scenarios none
    .venv/bin/python benchmarks/drift/run.py --evidently-max-rows 1000000   # Evidently on a 1M sample above 1M
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NUMERIC = [f"n{i}" for i in range(7)]
CATEGORICAL = [f"c{i}" for i in range(4)]
SCENARIOS = ["none", "one_column", "several_columns", "new_category", "near_threshold"]
REFERENCE_ROWS = 100_000


def make_frame(rows: int, seed: int, scenario: str = "none") -> pd.DataFrame:
    """Same 11 columns as tests/unit/test_drift.py; categorical columns as pandas categories,
    as a Parquet-backed prediction log would load them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"n{i}": rng.normal(10 * i, 1 + i, rows) for i in range(6)})
    frame["n6"] = rng.choice([0, 1, 2, 3], rows, p=[0.4, 0.3, 0.2, 0.1])
    frame["c0"] = pd.Categorical.from_codes(rng.choice(3, rows, p=[0.5, 0.3, 0.2]), ["a", "b", "c"])
    frame["c1"] = pd.Categorical.from_codes(rng.choice(4, rows), ["x", "y", "z", "w"])
    frame["c2"] = pd.Categorical.from_codes(rng.choice(2, rows, p=[0.7, 0.3]), ["yes", "no"])
    frame["c3"] = pd.Categorical.from_codes(rng.choice([0, 1, -1], rows, p=[0.45, 0.45, 0.1]), ["p", "q"])
    if scenario in ("one_column", "several_columns"):
        frame["n0"] += 0.5
    if scenario == "several_columns":
        for i in range(1, 5):
            frame[f"n{i}"] += 0.5 * (1 + i)
        frame["c0"] = pd.Categorical.from_codes(rng.choice(3, rows, p=[0.2, 0.3, 0.5]), ["a", "b", "c"])
    if scenario == "near_threshold":
        # Scores either side of the 0.1 threshold of the normed Wasserstein distance, so the
        # decisions are tested where a small numerical difference would flip them.
        frame["n0"] += 0.11 * 1
        frame["n1"] += 0.09 * 2
        frame["n2"] += 0.105 * 3
        frame["n3"] += 0.095 * 4
    if scenario == "new_category":
        codes = frame["c1"].cat.codes.to_numpy().copy()
        codes[rng.random(rows) < 0.3] = 4
        frame["c1"] = pd.Categorical.from_codes(codes, ["x", "y", "z", "w", "brand_new"])
    return frame


def child(engine: str, rows: int, scenario: str, evidently_max_rows: int) -> dict[str, Any]:
    reference = make_frame(REFERENCE_ROWS, seed=1)
    current = make_frame(rows, seed=2, scenario=scenario)
    sampled = engine == "evidently" and 0 < evidently_max_rows < rows
    if sampled:
        current = current.sample(n=evidently_max_rows, random_state=0)
    # Imports are paid once per process and not part of a check: Evidently's alone takes ~9-20 s here.
    from mlops.monitoring.drift import check_drift

    if engine == "evidently":
        import evidently  # noqa: F401

        from mlops.monitoring.reports import evidently_drift
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if engine == "fast":
        result = check_drift(reference, current, NUMERIC, CATEGORICAL, 0.5)
    else:
        result = evidently_drift(reference, current, NUMERIC, CATEGORICAL, 0.5).drift
    elapsed = time.perf_counter() - start
    return {
        "engine": engine + (f" ({evidently_max_rows} sample)" if sampled else ""),
        "rows": rows,
        "scenario": scenario,
        "seconds": round(elapsed, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "baseline_rss_mb": round(baseline),
        "drifted": {c.column: c.drifted for c in result.columns},
        "scores": {c.column: c.score for c in result.columns},
        "share": result.share_of_drifted_columns,
        "dataset_drift": result.dataset_drift,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument(
        "--evidently-max-rows", type=int, default=0, help="run Evidently on a sample of this size above it (0: never)"
    )
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "ROWS", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2], args.evidently_max_rows)))
        return
    results = []
    for rows in args.sizes:
        for scenario in args.scenarios:
            pair = {}
            for engine in ("fast", "evidently"):
                cmd = [sys.executable, __file__, "--child", engine, str(rows), scenario]
                cmd += ["--evidently-max-rows", str(args.evidently_max_rows)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                pair[engine] = json.loads(out)
                results.append(pair[engine])
                r = pair[engine]
                line = f"{rows:>10} {scenario:<16} {r['engine']:<22} {r['seconds']:>7.1f} s {r['peak_rss_mb']:>6} MB"
                print(f"{line}  share {r['share']:.2f}", flush=True)
            same = pair["fast"]["drifted"] == pair["evidently"]["drifted"]
            print(f"{'':>10} {scenario:<16} per-column decisions agree: {same}", flush=True)
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
