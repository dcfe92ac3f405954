"""The monitoring step as the DAG runs it, at 10M, 100M and 1B rows of a partitioned Parquet prediction log.

    ./run bench monitoring                      # generate once (reused), then every size and engine
    ./run bench monitoring --sizes 10M          # one size
    ./run bench monitoring --data DIR           # where the synthetic logs live (default /tmp/mlops-bench-monitoring)

Each run is one process per engine, timing what the monitoring DAG's three tasks do after
the champion lookup: `collect_window` (the window from the log), `validate_window` (Great
Expectations) and `run_monitoring` + `decide` (reports and decision). Not timed: the
registry lookup, the scoring of the reference by the champion (the bench has no champion:
prediction drift compares with the training target) and the MLflow record. Peak memory is
the process's VmHWM.

Engines:
- `today`: the exact path (`monitoring.exact_below_rows` above the window): the window read
  whole into pandas. Run at 10M only: at 100M it would need ~30 GB (2.9 GB at 10M).
- `summaries-cold`: the volume path with no summary cached: every file summarised in the run.
- `summaries-warm`: the steady state of a daily schedule: summaries of all days but the last
  cached, the last day's files summarised in the run.
- `summaries-landed`: the summaries computed as each day's partition lands
  (`mlops.monitoring.landing.summarize_landed`, what `score_<use case>` and
  `summarize_log_<use case>` run), each day timed on its own in a process of its own kind
  (`landing`); then the monitoring step, which finds every day summarised. At 1B only the last
  day's landing is timed (71M rows); the days before hold the 10M days' landed summaries
  counted 100 times, as for `summaries-warm`.
- `exact-columns`: the exact drift scores read column by column from every row (the check the
  summaries must agree with; not what the DAG runs).

    ./run bench monitoring --sizes 100M 1B --engines summaries-landed summaries-cold

Data: bike-sharing rows (data/raw) drawn with replacement, 14 day partitions of 1M-row files
(row groups of 128k rows), a prediction (label + N(0, 40)) and labels for 80 % of rows in the
label store's day folders. Reference: the 60 days before 2011-03-01 (the demo's first
champion). Scenario `drifted`: rows of 2011-03-01..2012-12-31 (summer in the window, winter
in the reference: 5 of 10 features drift, the dataset-drift share sits exactly at 0.5, so one
column flipping flips the decision). Scenario `stable` (10M only): rows of the reference period.
100M and 1B rows: 10 and 100 hard links of each 10M `drifted` file, log and labels (disk and
generation time for 1B distinct rows are not needed; every link is a file of its own to the
step, read in full when summarised). The days before the last hold the summaries they would
have from earlier runs: the 10M day summaries counted 10 or 100 times, naming the links. The
exact scores and metrics of these windows equal the 10M window's (every row repeated leaves
the distributions unchanged). Reads come from the page cache in every case (24 GB of RAM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data" / "raw" / "bike_sharing_hourly.csv"
USE_CASE = "bike_sharing"
FEATURES = ["temp", "atemp", "hum", "windspeed", "season", "hr", "holiday", "weekday", "workingday", "weathersit"]
START = datetime(2011, 3, 1)
DAYS = 14
FILE_ROWS = 1_000_000
ROW_GROUP = 131_072
CHAMPION_RMSE = 40.0
SIZES = {"10M": 10_000_000, "100M": 100_000_000, "1B": 1_000_000_000}


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --------------------------------------------------------------------------- data


def _pool(scenario: str) -> Any:
    import pandas as pd

    raw = pd.read_csv(RAW, parse_dates=["dteday"])
    if scenario == "stable":
        return raw[(raw["dteday"] >= "2010-12-31") & (raw["dteday"] < "2011-03-01")].reset_index(drop=True)
    return raw[raw["dteday"] >= "2011-03-01"].reset_index(drop=True)


def make_reference(path: Path) -> None:
    import pandas as pd

    raw = pd.read_csv(RAW, parse_dates=["dteday"])
    path.parent.mkdir(parents=True, exist_ok=True)
    raw[(raw["dteday"] >= "2010-12-31") & (raw["dteday"] < "2011-03-01")].to_parquet(path, index=False)


def generate(home: Path, rows: int, scenario: str, seed: int = 0) -> dict[str, Any]:
    """Write `rows` log rows over DAYS day folders and the labels of 80 % of them; returns the exact metrics."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pool = _pool(scenario)
    columns = {c: pool[c].to_numpy() for c in FEATURES if pool[c].dtype.kind in "fiu"}
    # Categoricals as codes into their values, decoded by Arrow (a Python string per row would cost minutes).
    codes = {c: pool[c].astype("category") for c in FEATURES if c not in columns}
    target = pool["cnt"].to_numpy(dtype="float64")
    rng = np.random.default_rng(seed)
    per_day = rows // DAYS
    sums = {"n": 0, "sse": 0.0, "sae": 0.0, "sy": 0.0, "syy": 0.0, "sape": 0.0}
    for day in range(DAYS):
        date = START + timedelta(days=day)
        log_dir = home / "predictions" / USE_CASE / f"date={date:%Y-%m-%d}"
        label_dir = home / "labels" / USE_CASE / f"date={date:%Y-%m-%d}"
        log_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        day_rows = per_day + (rows - per_day * DAYS if day == DAYS - 1 else 0)
        for part, offset in enumerate(range(0, day_rows, FILE_ROWS)):
            n = min(FILE_ROWS, day_rows - offset)
            take = rng.integers(0, len(pool), n)
            seconds = np.sort(rng.integers(0, 86_400 * 1_000_000, n))
            event = pa.array(np.datetime64(date, "us") + seconds.astype("timedelta64[us]"))
            ids = pc.binary_join_element_wise(
                f"d{day}-", pc.cast(pa.array(np.arange(offset, offset + n)), pa.string()), ""
            )
            label = target[take]
            prediction = label + rng.normal(0, 40, n)
            table = pa.table(
                {
                    "request_id": ids,
                    "use_case": pa.DictionaryArray.from_arrays(np.zeros(n, dtype="int32"), [USE_CASE]),
                    "model_name": pa.DictionaryArray.from_arrays(np.zeros(n, dtype="int32"), ["bike_sharing_cnt"]),
                    "model_version": pa.DictionaryArray.from_arrays(np.zeros(n, dtype="int32"), ["1"]),
                    "role": pa.DictionaryArray.from_arrays(np.zeros(n, dtype="int32"), ["champion"]),
                    "source": pa.DictionaryArray.from_arrays(np.zeros(n, dtype="int32"), ["online"]),
                    "event_time": event,
                    "logged_at": event,
                    **{c: columns[c][take] for c in columns},
                    **{
                        c: pa.DictionaryArray.from_arrays(
                            pa.array(v.cat.codes.to_numpy()[take], mask=v.cat.codes.to_numpy()[take] < 0),
                            pa.array(list(v.cat.categories)),
                        ).cast(pa.string())
                        for c, v in codes.items()
                    },
                    "prediction": prediction,
                }
            )
            pq.write_table(table, log_dir / f"online__bench__{part:04d}.parquet", row_group_size=ROW_GROUP)
            keep = rng.random(n) < 0.8
            mask = pa.array(keep)
            labels = pa.table(
                {
                    "request_id": ids.filter(mask),
                    "label": pa.array(label[keep]),
                    "event_time": event.filter(mask),
                    "prediction_time": event.filter(mask),
                    "arrived_at": pa.array(np.datetime64(date + timedelta(days=1), "us").repeat(int(keep.sum()))),
                }
            )
            pq.write_table(labels, label_dir / f"labels__bench__{part:04d}.parquet", row_group_size=ROW_GROUP)
            err = prediction[keep] - label[keep]
            y = label[keep]
            sums["n"] += int(keep.sum())
            sums["sse"] += float(np.sum(err**2))
            sums["sae"] += float(np.sum(np.abs(err)))
            sums["sy"] += float(np.sum(y))
            sums["syy"] += float(np.sum(y**2))
            sums["sape"] += float(np.sum(np.abs(err) / np.abs(y)))
        print(f"  generated {date:%Y-%m-%d}: {day_rows} rows", flush=True)
    n = sums["n"]
    exact = {
        "rmse": (sums["sse"] / n) ** 0.5,
        "mae": sums["sae"] / n,
        "r2": 1 - sums["sse"] / (sums["syy"] - sums["sy"] ** 2 / n),
        "mape": sums["sape"] / n,
        "labelled_rows": n,
    }
    (home / "exact-metrics.json").write_text(json.dumps(exact))
    return exact


def link_copies(source: Path, home: Path, copies: int) -> None:
    """A window `copies` times larger: hard links of each of `source`'s files (log and labels)."""
    for kind in ("predictions", "labels"):
        for folder in sorted((source / kind / USE_CASE).glob("date=*")):
            target = home / kind / USE_CASE / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.glob("*.parquet")):
                for copy in range(copies):
                    link = target / f"{path.stem}__copy{copy}.parquet"
                    if not link.exists():
                        os.link(path, link)
    shutil.copy(source / "exact-metrics.json", home / "exact-metrics.json")


def copy_summaries(source: Path, home: Path, copies: int) -> int:
    """Give each day folder of `home` the summary of its `source` original counted `copies` times, naming the links
    (the same rows `copies` times): the days before the last, summarised as they landed."""
    from mlops.monitoring.summaries import merge

    written = 0
    for path in (source / "predictions" / USE_CASE).glob("date=*/_summaries/day.*.json"):
        record = json.loads(path.read_text())
        folder = home / "predictions" / USE_CASE / path.parent.parent.name
        names = sorted(f"{Path(n).stem}__copy{c}.parquet" for n in record["files"] for c in range(copies))
        (folder / "_summaries").mkdir(parents=True, exist_ok=True)
        summary = merge([record["summary"]] * copies)
        copied = {**record, "files": names, "summary": summary}
        (folder / "_summaries" / path.name).write_text(json.dumps(copied))
        written += 1
    return written


def drop_summaries(home: Path, last_day_only: bool) -> None:
    days = sorted((home / "predictions" / USE_CASE).glob("date=*"))
    for folder in days[-1:] if last_day_only else days:
        shutil.rmtree(folder / "_summaries", ignore_errors=True)


# --------------------------------------------------------------------------- one engine, in its own process


def child(engine: str, home: Path, reference_path: Path) -> dict[str, Any]:
    # Imports are paid once per task process (the scheduler preloads them); not timed.
    import evidently  # noqa: F401

    import great_expectations  # noqa: F401
    from mlops.config import find_use_case
    from mlops.monitoring import drift, summaries
    from mlops.monitoring.decision import Guards, decide
    from mlops.monitoring.reference import read_reference
    from mlops.monitoring.run import run_monitoring
    from mlops.monitoring.volume import WindowFiles, day_folders
    from mlops.monitoring.window import collect_window, read_window, validate_window

    base = find_use_case(USE_CASE)
    end = START + timedelta(days=DAYS)
    limit = 10**13 if engine == "today" else base.monitoring.exact_below_rows
    use_case = base.model_copy(update={"monitoring": base.monitoring.model_copy(update={"exact_below_rows": limit})})
    baseline = peak_rss_mb()
    if engine == "exact-columns":
        start_time = time.perf_counter()
        files = [
            f for d in day_folders(home / "predictions" / USE_CASE, START, end) for f in sorted(d.glob("*.parquet"))
        ]
        reference = read_reference(reference_path)
        reference["prediction"] = reference[use_case.target]
        source = summaries.ServedColumns(files)
        features = use_case.features
        result = drift.check_drift(reference, source, features.numeric, features.categorical, 0.5)
        prediction = drift.column_drift(reference["prediction"], source["prediction"], "numeric")
        return {
            "engine": engine,
            "seconds": round(time.perf_counter() - start_time, 1),
            "peak_rss_mb": round(peak_rss_mb()),
            "scores": {c.column: c.score for c in result.columns},
            "drifted": sorted(result.drifted_columns),
            "prediction_score": prediction.score,
            "prediction_drifted": prediction.drifted,
        }
    if engine == "landing":
        return land(use_case, home, reference_path, baseline)
    stages: dict[str, float] = {}
    started_ns = time.time_ns()
    clock = time.perf_counter()
    window = collect_window(use_case, START, end, f"bench-{engine}")
    stages["collect_window"] = time.perf_counter() - clock
    clock = time.perf_counter()
    validation = validate_window(use_case, window.path, f"bench-{engine}")
    stages["validate_window"] = time.perf_counter() - clock
    clock = time.perf_counter()
    reference = read_reference(reference_path)
    current = read_window(use_case, window.path)
    summary = run_monitoring(
        use_case, current, reference, f"bench-{engine}", {"rmse": CHAMPION_RMSE}, home / "reports",
        champion_version="1", at_volume=WindowFiles.load(window.files) if window.files else None,
    )  # fmt: skip
    guards = Guards(now=end, training_active=False, last_triggered_at=None, validation_passed=validation.passed,
                    validation_details=validation.details)  # fmt: skip
    decision = decide(use_case, summary, guards)
    stages["assess_window"] = time.perf_counter() - clock
    return {
        "engine": engine,
        "rows": summary.rows,
        "seconds": round(sum(stages.values()), 1),
        "stages": {k: round(v, 1) for k, v in stages.items()},
        "peak_rss_mb": round(peak_rss_mb()),
        "baseline_rss_mb": round(baseline),
        "sampled": window.sampled,
        "window_sample_rows": summary.window_sample_rows,
        "labelled_rows": summary.labelled_rows,
        "performance_rows": summary.performance_rows,
        "drift_engine": summary.drift_engine,
        "scores": {c.column: c.score for c in summary.drift.columns},
        "error_bounds": summary.drift_error_bounds,
        "drifted": sorted(summary.drift.drifted_columns),
        "drift_share": summary.drift.share_of_drifted_columns,
        "prediction_score": summary.prediction_drift.score if summary.prediction_drift else None,
        "prediction_drifted": summary.prediction_drift.drifted if summary.prediction_drift else None,
        "performance": summary.performance,
        "validation_passed": validation.passed,
        "action": decision.action,
        "reasons": decision.reasons,
        "notes": summary.notes,
        "day_summaries_written": _written_since(home, started_ns),
    }


def _written_since(home: Path, since_ns: int) -> int:
    """Day summaries the step wrote (0: every day was read as it had been summarised before)."""
    found = (home / "predictions" / USE_CASE).glob("date=*/_summaries/day.*.json")
    return sum(1 for p in found if p.stat().st_mtime_ns >= since_ns)


def land(use_case: Any, home: Path, reference_path: Path, baseline: float) -> dict[str, Any]:
    """Each day partition summarised as it lands (BENCH_LAND_DAYS: `all`, or `last` alone), timed per day."""
    from mlops.monitoring import landing
    from mlops.monitoring.reference import read_reference
    from mlops.monitoring.volume import count_rows, day_folders

    folders = day_folders(home / "predictions" / USE_CASE, START, START + timedelta(days=DAYS))
    if os.environ.get("BENCH_LAND_DAYS", "all") == "last":
        folders = folders[-1:]
    reference = read_reference(reference_path)  # what the landing step reads once per run
    days = []
    for folder in folders:
        clock = time.perf_counter()
        result = landing.summarize_landed(use_case, [folder], reference, {"model_version": "bench"})
        seconds = time.perf_counter() - clock
        if result.skipped:
            raise RuntimeError(f"landing {folder.name} skipped: {result.skipped}")
        rows = count_rows(sorted(folder.glob("*.parquet")))
        days.append({"day": folder.name[5:], "rows": rows, "files": result.files_summarised,
                     "seconds": round(seconds, 2), "bins_key": result.bins_key})  # fmt: skip
    return {
        "engine": "landing",
        "days": days,
        "seconds": round(sum(d["seconds"] for d in days), 1),
        "max_day_seconds": max(d["seconds"] for d in days),
        "peak_rss_mb": round(peak_rss_mb()),
        "baseline_rss_mb": round(baseline),
    }


def run_child(engine: str, home: Path, reference: Path, land_days: str = "all") -> dict[str, Any]:
    env = {**os.environ, "MLOPS_HOME": str(home), "MLOPS_PREDICTION_LOG_URI": str(home / "predictions"),
           "BENCH_LAND_DAYS": land_days}  # fmt: skip
    cmd = [sys.executable, __file__, "--child", engine, str(home), str(reference)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{engine} at {home} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- the whole run


def compare(result: dict[str, Any], exact: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """How far the run's scores and metrics are from the exact ones, and whether each decision agrees."""
    errors = {c: abs(result["scores"][c] - exact["scores"][c]) for c in exact["scores"] if c in result["scores"]}
    worst = max(errors, key=lambda c: errors[c]) if errors else None
    perf = {k: abs(result["performance"][k] - metrics[k]) / abs(metrics[k]) for k in ("rmse", "mae", "r2", "mape")
            if k in result.get("performance", {})}  # fmt: skip
    return {
        "columns_agree": result["drifted"] == exact["drifted"],
        "prediction_agrees": result["prediction_drifted"] == exact["prediction_drifted"],
        "max_score_error": errors[worst] if worst else None,
        "max_score_error_column": worst,
        "within_bounds": all(errors[c] <= result.get("error_bounds", {}).get(c, 0.0) + 1e-12 for c in errors),
        "performance_relative_error": perf,
    }


def land_before(size: str, home: Path, source: Path, copies: int, reference: Path) -> dict[str, Any]:
    """The `summaries-landed` cell's landing: every day summarised as it lands, each day timed (at 1B the last
    day; the days before get the 10M days' landed summaries counted 100 times, as `summaries-warm` does)."""
    drop_summaries(home, last_day_only=False)
    if size != "1B":
        return run_child("landing", home, reference)
    drop_summaries(source, last_day_only=False)
    run_child("landing", source, reference)
    copy_summaries(source, home, copies)
    drop_summaries(home, last_day_only=True)
    return run_child("landing", home, reference, land_days="last")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--engines", nargs="+", help="run only these engines of the sizes' cells (default: all)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/mlops-bench-monitoring"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--generate-only", action="store_true", help="write the synthetic logs and stop")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, home, reference = args.child
        print(json.dumps(child(engine, Path(home), Path(reference)), default=str))
        return
    data = args.data
    reference = data / "reference.parquet"
    if not reference.exists():
        make_reference(reference)
    plan: list[tuple[str, str, list[str]]] = [
        ("10M", "drifted", ["exact-columns", "today", "summaries-cold", "summaries-warm", "summaries-landed"]),
        ("10M", "stable", ["exact-columns", "today", "summaries-cold"]),
    ]
    if "100M" in args.sizes:
        plan += [("100M", "drifted", ["summaries-cold", "summaries-warm", "summaries-landed"])]
    if "1B" in args.sizes:
        plan += [("1B", "drifted", ["summaries-warm", "summaries-landed"])]
    plan = [(size, scenario, engines) for size, scenario, engines in plan if size in args.sizes]
    if args.engines:
        plan = [(z, s, [e for e in engines if e in args.engines]) for z, s, engines in plan]
        plan = [cell for cell in plan if cell[2]]
    results: list[dict[str, Any]] = json.loads(args.out.read_text()) if args.out.exists() else []
    source = data / "10M-drifted"
    for size, scenario, engines in plan:
        home = data / f"{size}-{scenario}"
        copies = SIZES[size] // SIZES["10M"]
        if not (home / "exact-metrics.json").exists():
            started = time.perf_counter()
            if size == "10M":
                generate(home, SIZES[size], scenario)
            else:
                if not (source / "exact-metrics.json").exists():
                    generate(source, SIZES["10M"], "drifted")
                link_copies(source, home, copies)
            print(f"{size} {scenario}: data ready in {time.perf_counter() - started:.0f} s", flush=True)
        if args.generate_only:
            continue
        metrics = json.loads((home / "exact-metrics.json").read_text())
        exact_file = (home if size == "10M" else source) / "exact-scores.json"
        for engine in engines:
            if engine == "summaries-cold":
                drop_summaries(home, last_day_only=False)
            if engine == "summaries-warm":
                if not any((source / "predictions" / USE_CASE).glob("date=*/_summaries/*.json")):
                    run_child("summaries-cold", source, reference)
                if size != "10M":
                    copy_summaries(source, home, copies)  # the days before, summarised as they landed
                drop_summaries(home, last_day_only=True)
            landed = None
            if engine == "summaries-landed":
                landed = land_before(size, home, source, copies, reference)
            if engine == "exact-columns" and exact_file.exists():
                continue
            if engine != "exact-columns" and not exact_file.exists():
                exact_file.write_text(json.dumps(run_child("exact-columns", exact_file.parent, reference)))
            r = run_child(engine, home, reference)
            if landed is not None:
                r["landing"] = landed
            shutil.rmtree(home / "reports", ignore_errors=True)
            shutil.rmtree(home / "monitoring", ignore_errors=True)
            if engine == "exact-columns":
                exact_file.write_text(json.dumps(r))
            r = {"size": size, "scenario": scenario, **r}
            if engine != "exact-columns":
                r["vs_exact"] = compare(r, json.loads(exact_file.read_text()), metrics)
            results = [x for x in results if (x["size"], x["scenario"], x["engine"]) != (size, scenario, engine)]
            results.append(r)
            args.out.write_text(json.dumps(results, indent=1))
            agree = r.get("vs_exact", {})
            if landed is not None:
                print(
                    f"{size:>5} {scenario:<8} landing per day: {[d['seconds'] for d in landed['days']]} s "
                    f"(total {landed['seconds']} s, {landed['peak_rss_mb']} MB peak)",
                    flush=True,
                )
            print(
                f"{size:>5} {scenario:<8} {engine:<15} {r['seconds']:>7.1f} s {r['peak_rss_mb']:>6} MB "
                f"{r.get('stages', '')} action={r.get('action')} drifted={r['drifted']} "
                f"agree={agree.get('columns_agree')}/{agree.get('prediction_agrees')} "
                f"max_err={agree.get('max_score_error')} perf_err={agree.get('performance_relative_error')}",
                flush=True,
            )


if __name__ == "__main__":
    main()
