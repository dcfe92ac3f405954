"""The monitoring step as the DAG runs it, on a 1M- and a 10M-row prediction-log window.

`run.py` times the drift check alone on frames already in memory. This times what
`assess_window` does after it has found the champion: read the window's Parquet file,
read the champion's training snapshot, and `run_monitoring` (drift decision,
Evidently drift / data-summary / performance reports, files written). Side by side with
the alternative: the same function made to run Evidently on the whole window
(`fast_path_rows` and `report_sample_rows` above the window size), at 1M rows only —
`run.py` shows what a full Evidently drift run costs at 10M.

Data: the bundled bike-sharing rows. Reference: the 60 days before 2011-03-01, as the
demo's first champion is trained on. Window: rows of 2011-03-01..2012-12-31 drawn with
replacement to the size asked for, with a prediction (label plus noise) and the label on
80 % of rows, written as a prediction-log Parquet file.

    .venv/bin/python benchmarks/drift/step.py            # 1M (ours and full Evidently), 10M (ours)
    .venv/bin/python benchmarks/drift/step.py --sizes 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data" / "raw" / "bike_sharing_hourly.csv"


def make_window(rows: int, path: Path) -> None:
    raw = pd.read_csv(RAW, parse_dates=["dteday"])
    later = raw[raw["dteday"] >= "2011-03-01"].reset_index(drop=True)
    rng = np.random.default_rng(0)
    frame = later.sample(n=rows, replace=True, random_state=1).reset_index(drop=True)
    log = pd.DataFrame(
        {
            "request_id": pd.Series(np.arange(rows)).map("r{}".format),
            "use_case": "bike_sharing",
            "model_name": "bike_sharing_cnt",
            "model_version": "1",
            "event_time": pd.Timestamp("2011-03-01", tz="UTC") + pd.to_timedelta(np.arange(rows) % 1_209_600, "s"),
            "source": "online",
        }
    )
    features = ["temp", "atemp", "hum", "windspeed", "season", "hr", "holiday", "weekday", "workingday", "weathersit"]
    log = pd.concat([log, frame[features]], axis=1)
    label = frame["cnt"].to_numpy(dtype=float)
    log["prediction"] = label + rng.normal(0, 40, rows)
    label[rng.random(rows) > 0.8] = np.nan
    log["label"] = label
    log.to_parquet(path, index=False)


def make_reference(path: Path) -> None:
    raw = pd.read_csv(RAW, parse_dates=["dteday"])
    raw[(raw["dteday"] >= "2010-12-31") & (raw["dteday"] < "2011-03-01")].to_parquet(path, index=False)


def peak_rss_mb() -> float:
    """This process's own high-water RSS. Not getrusage's ru_maxrss: Linux carries that over from
    the parent across fork and exec, and the parent here has just built the window."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(engine: str, window: Path, reference: Path, reports: Path) -> dict[str, Any]:
    # Imports are paid once per task process (the scheduler preloads them); not timed.
    import evidently  # noqa: F401

    from mlops.config import find_use_case
    from mlops.monitoring.reference import read_reference
    from mlops.monitoring.run import run_monitoring
    from mlops.monitoring.window import read_window

    use_case = find_use_case("bike_sharing")
    baseline = peak_rss_mb()
    start = time.perf_counter()
    current = read_window(use_case, window)
    ref = read_reference(reference)
    read_seconds = time.perf_counter() - start
    whole = {"fast_path_rows": 10**9, "report_sample_rows": 10**9} if engine == "evidently" else {}
    summary = run_monitoring(use_case, current, ref, f"bench-{engine}", reports_root=reports, **whole)
    elapsed = time.perf_counter() - start
    return {
        "engine": "run_monitoring" + (" (Evidently on the whole window)" if engine == "evidently" else ""),
        "rows": len(current),
        "seconds": round(elapsed, 2),
        "read_seconds": round(read_seconds, 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "baseline_rss_mb": round(baseline),
        "drift_engine": summary.drift_engine,
        "drift_share": summary.drift.share_of_drifted_columns,
        "drifted_columns": sorted(c.column for c in summary.drift.columns if c.drifted),
        "performance": summary.performance,
        "notes": summary.notes,
        "report_sample_rows": summary.report_sample_rows,
        "reports": sorted(p.name for p in summary.report_dir.iterdir()) if summary.report_dir else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--evidently-up-to", type=int, default=1_000_000, help="largest window Evidently gets whole")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("step-results.json"))
    child_args = ("ENGINE", "WINDOW", "REFERENCE", "REPORTS")
    parser.add_argument("--child", nargs=4, metavar=child_args, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, window, reference, reports = args.child
        print(json.dumps(child(engine, Path(window), Path(reference), Path(reports))))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="mlops-step-bench-") as tmp:
        folder = Path(tmp)
        reference = folder / "reference.parquet"
        make_reference(reference)
        for rows in args.sizes:
            window = folder / f"window-{rows}.parquet"
            make_window(rows, window)
            engines = ["ours", "evidently"] if rows <= args.evidently_up_to else ["ours"]
            for engine in engines:
                cmd = [sys.executable, __file__, "--child", engine, str(window), str(reference), str(folder / "r")]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                r = json.loads(out)
                results.append(r)
                print(
                    f"{rows:>10} {r['engine']:<48} {r['seconds']:>7.1f} s (read {r['read_seconds']:.1f} s) "
                    f"{r['peak_rss_mb']:>6} MB  drift share {r['drift_share']:.2f} {r['drifted_columns']}",
                    flush=True,
                )
            window.unlink()
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
