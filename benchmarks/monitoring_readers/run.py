"""The row work of monitoring at volume read three ways: pyarrow, DuckDB and Polars (the choice: docs/benchmarks.md).

    ./run bench monitoring_readers                 # 10M and 100M rows, every task and engine
    ./run bench monitoring_readers --sizes 10M     # one size (1B: 100 hard links of each 10M file)
    ./run bench monitoring_readers --tasks labels  # one task
    ./run bench monitoring_readers --data DIR      # where the synthetic logs live (shared with `monitoring`)

Above `monitoring.exact_below_rows` the decision's numbers come from the files' summaries;
three things still read rows of the Parquet log, and they are what this bench times:

- `sample`: the stratified sample of 200,000 rows with only the monitored columns
  (`volume.sample_window`: day quotas from the footers, row groups drawn by size, then rows
  drawn among them, event time filtered to the window, the shadow's rows left out), as a
  pandas frame;
- `labels`: the labels of the sampled request ids (the id filter and the sample's time
  ranges on `prediction_time` pushed into the label files' scan), attached to the sample;
- `column`: the exact recompute of one numeric column (`temp`) over every served row of the
  window (`summaries._served_column`, the fallback when a score sits within its bound of the
  threshold), as a pandas Series.

The group and row draws, the quota take and the label attach are the project's own
functions for every engine (`volume._choose_row_groups`, `_take_quota`, `_attach_labels`):
only the reading differs. Each engine reads as it reads best: pyarrow with the project's code
(for the labels, the dataset scan `volume` used before the measurement moved it to Polars),
DuckDB with `read_parquet` (row groups by `file_row_number`, pruned from the statistics; the
ids as a semi-join against the registered sample ids), Polars with `scan_parquet` (row groups
as pushed-down slices; the labels with the project's `label_scan`, the ids with `is_in`).

Before anything is timed, one process runs the three engines on each task of the 10M log and
compares their outputs (pandas `assert_frame_equal`); every timed cell also digests its
output and the run fails if the engines' digests differ. Each cell (size, task, engine) is a
process of its own: the task runs three times (median and first reported), peak memory is
the process's VmHWM, beside the baseline after imports (DuckDB and Polars load their own
native libraries).

DuckDB and Polars are not dependencies of the project: when they cannot be imported the run
re-executes itself under `uv run --with duckdb==... --with polars==...` (versions pinned
below), which layers them over the project's environment for this run only.

Data: `benchmarks/monitoring`'s 10M-row `drifted` log (14 day partitions of 1M-row files,
128k-row groups, labels on 80 % of rows); 100M rows are 10 hard links of each file, log and
labels (every link a file of its own; the same rows ten times).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DUCKDB = "2.0.1"
POLARS = "2.1.0"
ENGINES = ("pyarrow", "duckdb", "polars")
TASKS = ("sample", "labels", "column")
SIZES = {"10M": 1, "100M": 10, "1B": 100}
# A cell's task runs this many times in its process (the 1B label scans take a minute or more each).
REPEATS = {"10M": 3, "100M": 3, "1B": 1}
COLUMN = "temp"


def _monitoring_bench() -> Any:
    """benchmarks/monitoring/run.py: its generator, its constants, its hard-link copies."""
    spec = importlib.util.spec_from_file_location("monitoring_bench", ROOT / "benchmarks" / "monitoring" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _monitoring_bench()
START: datetime = BENCH.START
END: datetime = BENCH.START + timedelta(days=BENCH.DAYS)
USE_CASE: str = BENCH.USE_CASE


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --------------------------------------------------------------------------- the window's files


def window(home: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """The log files by day (as `sample_window` lists them) and the label files."""
    from mlops.monitoring import volume

    log_days = volume.day_folders(home / "predictions" / USE_CASE, START, END)
    days = {d.name[5:]: volume._parquet_files(d) for d in log_days}
    label_days = volume.day_folders(home / "labels" / USE_CASE, START, END)
    labels = [str(f) for d in label_days for f in volume._parquet_files(d)]
    return {day: files for day, files in days.items() if files}, labels


# --------------------------------------------------------------------------- the three readers


def _group_offsets(path: Path) -> list[int]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    offsets, at = [], 0
    for i in range(meta.num_row_groups):
        offsets.append(at)
        at += meta.row_group(i).num_rows
    return offsets


def _present(path: Path, columns: Sequence[str]) -> list[str]:
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    return [c for c in columns if c in names]


class Duck:
    """DuckDB: one connection, SQL over `read_parquet`."""

    def __init__(self) -> None:
        import duckdb

        self.con = duckdb.connect()

    def read_row_groups(self, groups: Sequence[tuple[Path, int, int]], columns: Sequence[str], start: datetime,
                        end: datetime) -> Any:  # fmt: skip
        import pyarrow as pa

        by_file: dict[Path, list[tuple[int, int]]] = {}
        offsets = {path: _group_offsets(path) for path, _, _ in groups}
        for path, group, rows in groups:
            offset = offsets[path][group]
            by_file.setdefault(path, []).append((offset, offset + rows - 1))
        parts = []
        for path, spans in by_file.items():
            names = ", ".join(f'"{c}"' for c in _present(path, columns))
            rows = " OR ".join(f"file_row_number BETWEEN {a} AND {b}" for a, b in spans)
            sql = (
                f"SELECT {names} FROM read_parquet(?, file_row_number = true) "
                f"WHERE ({rows}) AND event_time >= ? AND event_time < ?"
            )
            parts.append(self.con.sql(sql, params=[str(path), start, end]).to_arrow_table())
        return pa.concat_tables(parts, promote_options="default")

    def read_labels(self, files: Sequence[str], ids: Sequence[str], ranges: Sequence[tuple[Any, Any]]) -> Any:
        import pyarrow as pa

        self.con.register("sample_ids", pa.table({"request_id": pa.array(ids, pa.string())}))
        spans = " OR ".join("prediction_time BETWEEN ? AND ?" for _ in ranges) or "true"
        sql = (
            "SELECT request_id, label, arrived_at FROM read_parquet(?) "
            f"WHERE ({spans}) AND request_id IN (SELECT request_id FROM sample_ids)"
        )
        params = [list(files), *[_naive(t) for span in ranges for t in span]]
        table = self.con.sql(sql, params=params).to_arrow_table()
        self.con.unregister("sample_ids")
        return table.to_pandas()

    def served_column(self, files: Sequence[Path], name: str) -> Any:
        sql = f"SELECT \"{name}\" FROM read_parquet(?) WHERE role IS NULL OR role <> 'shadow'"
        table = self.con.sql(sql, params=[[str(f) for f in files]]).to_arrow_table()
        return table.column(name).to_pandas().rename(name)


class Polars:
    """Polars: lazy `scan_parquet`, filters and slices pushed into the scan."""

    def read_row_groups(self, groups: Sequence[tuple[Path, int, int]], columns: Sequence[str], start: datetime,
                        end: datetime) -> Any:  # fmt: skip
        import polars as pl

        offsets = {path: _group_offsets(path) for path, _, _ in groups}
        scans = [
            pl.scan_parquet(path).select(_present(path, columns)).slice(offsets[path][group], rows)
            for path, group, rows in groups
        ]
        frame = pl.concat(scans, how="diagonal_relaxed")
        frame = frame.filter((pl.col("event_time") >= start) & (pl.col("event_time") < end))
        return frame.collect().to_arrow()

    def read_labels(self, files: Sequence[str], ids: Sequence[str], ranges: Sequence[tuple[Any, Any]]) -> Any:
        from mlops.monitoring import label_scan

        return label_scan.read_labels(files, ids, ranges)

    def served_column(self, files: Sequence[Path], name: str) -> Any:
        import polars as pl

        served = pl.col("role").is_null() | (pl.col("role") != "shadow")
        column = pl.scan_parquet([str(f) for f in files]).filter(served).select(name).collect().to_series()
        return column.to_pandas().rename(name)


class Arrow:
    """pyarrow: the project's code in `mlops.monitoring.volume` and `summaries` (the label scan: as it was)."""

    def read_row_groups(self, groups: Sequence[tuple[Path, int, int]], columns: Sequence[str], start: datetime,
                        end: datetime) -> Any:  # fmt: skip
        from mlops.monitoring import volume

        return volume._read_row_groups(groups, columns, start, end)

    def read_labels(self, files: Sequence[str], ids: Sequence[str], ranges: Sequence[tuple[Any, Any]]) -> Any:
        """`volume._read_labels` up to the switch to Polars (commit 9053617): the dataset scanner, filters pushed."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        dataset = ds.dataset(list(files), format="parquet")
        wanted = [c for c in ("request_id", "label", "arrived_at") if c in dataset.schema.names]
        keep = pc.field("request_id").isin(list(ids))
        when = dataset.schema.field("prediction_time").type if "prediction_time" in dataset.schema.names else None
        if when is not None and pa.types.is_timestamp(when) and ranges:
            spans = [
                (pc.field("prediction_time") >= pa.scalar(_naive(a), when))
                & (pc.field("prediction_time") <= pa.scalar(_naive(b), when))
                for a, b in ranges
            ]
            in_time = spans[0]
            for span in spans[1:]:
                in_time = in_time | span
            keep = in_time & keep
        return dataset.to_table(columns=wanted, filter=keep).to_pandas()

    def served_column(self, files: Sequence[Path], name: str) -> Any:
        from mlops.monitoring import summaries

        return summaries._served_column(files, name)


def _naive(value: Any) -> datetime:
    import pandas as pd

    return pd.Timestamp(value).to_pydatetime()


def reader(engine: str) -> Any:
    return {"pyarrow": Arrow, "duckdb": Duck, "polars": Polars}[engine]()


# --------------------------------------------------------------------------- the tasks, every engine through the same s


def take_sample(read: Any, days: dict[str, list[Path]], sample_rows: int = 200_000, seed: int = 0) -> Any:
    """`volume.sample_window`'s draw with `read` reading the chosen row groups (no labels, nothing written)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops.config import find_use_case
    from mlops.monitoring import volume

    use_case = find_use_case(USE_CASE, ROOT / "configs")
    rows_by_day = {day: volume.count_rows(files) for day, files in days.items()}
    total = sum(rows_by_day.values())
    rng = np.random.default_rng(seed)
    tables = []
    for day, files in days.items():
        columns = volume._needed_columns(pq.read_schema(files[0]).names, use_case.features.all, [])
        quota = math.ceil(sample_rows * rows_by_day[day] / total)
        chosen = volume._choose_row_groups(files, quota, rng)
        if chosen:
            tables.append(volume._take_quota(read.read_row_groups(chosen, columns, START, END), quota, rng))
    return volume._served(pa.concat_tables(tables, promote_options="default").to_pandas())


def attach_labels(read: Any, sample: Any, label_files: Sequence[str]) -> Any:
    """`volume._join_sample_labels` with `read` reading the label files."""
    from mlops.monitoring import volume

    ids = sample["request_id"].astype(str).unique().tolist()
    return volume._attach_labels(sample, read.read_labels(label_files, ids, volume._label_time_ranges(sample)))


def run_task(engine: str, task: str, home: Path) -> tuple[Callable[[], Any], Any]:
    """A no-argument function doing `task` with `engine`, and the reader (set up, imports paid)."""
    import pandas as pd

    read = reader(engine)
    days, label_files = window(home)
    if task == "sample":
        return (lambda: take_sample(read, days)), read
    if task == "labels":
        sample = pd.read_parquet(home / "bench-readers-sample.parquet")
        return (lambda: attach_labels(read, sample.copy(), label_files)), read
    files = [f for day in sorted(days) for f in days[day]]
    return (lambda: read.served_column(files, COLUMN)), read


def normalised(output: Any) -> Any:
    """The output as plain columns (categoricals as values, times as int64 ns), so engines compare by value."""
    import pandas as pd

    frame = output.to_frame() if isinstance(output, pd.Series) else output.copy()
    if "label" in frame.columns:  # the label task's product is the attached labels
        frame = frame[["request_id", "label", "label_arrived_at"]]
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object)
        if pd.api.types.is_datetime64_any_dtype(column):
            column = column.astype("datetime64[ns]").astype("int64")
        frame[name] = column
    return frame.reset_index(drop=True)


def digest(output: Any) -> str:
    import pandas as pd

    frame = normalised(output)
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return f"{len(frame)}x{len(frame.columns)}:{hashlib.sha256(hashes.tobytes()).hexdigest()[:16]}"


# --------------------------------------------------------------------------- children


def child_cell(engine: str, task: str, repeats: int, home: Path) -> dict[str, Any]:
    work, _ = run_task(engine, task, home)
    baseline = peak_rss_mb()
    seconds, output = [], None
    for _ in range(repeats):
        output = None  # the previous run's output freed first, as a task process holds one
        clock = time.perf_counter()
        output = work()
        seconds.append(time.perf_counter() - clock)
    return {
        "engine": engine,
        "task": task,
        "seconds_median": round(statistics.median(seconds), 3),
        "seconds_first": round(seconds[0], 3),
        "seconds": [round(s, 3) for s in seconds],
        "peak_rss_mb": round(peak_rss_mb()),
        "baseline_rss_mb": round(baseline),
        "rows": len(output),
        "digest": digest(output),
    }


def child_check(task: str, home: Path) -> dict[str, Any]:
    """The three engines' outputs of `task`, compared value by value (nothing timed)."""
    import pandas as pd

    outputs = {engine: normalised(run_task(engine, task, home)[0]()) for engine in ENGINES}
    for engine in ENGINES[1:]:
        pd.testing.assert_frame_equal(outputs["pyarrow"], outputs[engine], check_dtype=False)
    return {"task": task, "equal": True, "rows": len(outputs["pyarrow"]), "columns": list(outputs["pyarrow"].columns)}


def child_prepare(home: Path) -> dict[str, Any]:
    """The sample the label task starts from (pyarrow's, the same for every engine)."""
    days, _ = window(home)
    sample = take_sample(Arrow(), days)
    sample.to_parquet(home / "bench-readers-sample.parquet", index=False)
    return {"rows": len(sample)}


def run_child(args: list[str], home: Path) -> dict[str, Any]:
    env = {**os.environ, "MLOPS_HOME": str(home), "MLOPS_PREDICTION_LOG_URI": str(home / "predictions")}
    done = subprocess.run([sys.executable, __file__, "--child", *args, str(home)], capture_output=True, text=True,
                          env=env)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{args} at {home} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- the whole run


def ensure_engines(argv: list[str]) -> None:
    """Re-execute under `uv run --with` the pinned DuckDB and Polars when they are not importable."""
    if importlib.util.find_spec("duckdb") and importlib.util.find_spec("polars"):
        return
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if os.environ.get("MLOPS_BENCH_READERS_REEXEC") or not Path(uv).exists():
        pins = f"--with duckdb=={DUCKDB} --with polars=={POLARS}"
        raise SystemExit(f"DuckDB and Polars are needed: run `uv run --frozen --no-sync {pins} python {__file__}`")
    os.environ["MLOPS_BENCH_READERS_REEXEC"] = "1"
    cmd = [uv, "run", "--frozen", "--no-sync", "--with", f"duckdb=={DUCKDB}", "--with", f"polars=={POLARS}",
           "python", __file__, *argv]  # fmt: skip
    os.execvp(cmd[0], cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["10M", "100M"], choices=list(SIZES))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--data", type=Path, default=Path("/tmp/mlops-bench-monitoring"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        home = Path(rest[-1])
        if kind == "cell":
            result = child_cell(rest[0], rest[1], int(rest[2]), home)
        else:
            result = child_check(rest[0], home) if kind == "check" else child_prepare(home)
        print(json.dumps(result, default=str))
        return
    ensure_engines(sys.argv[1:])
    import duckdb
    import polars

    source = args.data / "10M-drifted"
    if not (source / "exact-metrics.json").exists():
        BENCH.generate(source, 10_000_000, "drifted")
    # Cells of earlier runs are kept unless this run measures them again; each cell names its run.
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {"runs": [], "cells": []}
    run = len(results["runs"]) + 1
    results["runs"].append({
        "run": run,
        "command": " ".join(["./run bench monitoring_readers", *sys.argv[1:]]),
        "started": datetime.now().isoformat(timespec="seconds"),
        "load_average_before": os.getloadavg(),
        "versions": {"duckdb": duckdb.__version__, "polars": polars.__version__,
                     "pyarrow": __import__("pyarrow").__version__},
        "checks": [],
    })  # fmt: skip
    for size in args.sizes:
        home = source if size == "10M" else args.data / f"{size}-drifted"
        if size != "10M" and not (home / "exact-metrics.json").exists():
            BENCH.link_copies(source, home, SIZES[size])
        if "labels" in args.tasks:
            print(f"{size}: sample for the label task: {run_child(['prepare'], home)}", flush=True)
        if size == "10M":
            for task in args.tasks:
                check = run_child(["check", task], home)
                results["runs"][-1]["checks"].append({"size": size, **check})
                print(f"{size} {task}: the three engines' outputs equal ({check['rows']} rows)", flush=True)
        for task in args.tasks:
            cells = [{"run": run, "size": size, **run_child(["cell", engine, task, str(REPEATS[size])], home)}
                     for engine in ENGINES]  # fmt: skip
            digests = {c["engine"]: c["digest"] for c in cells}
            if len(set(digests.values())) != 1:
                raise SystemExit(f"{size} {task}: the engines' outputs differ: {digests}")
            for c in cells:
                print(f"{size:>5} {task:<7} {c['engine']:<8} median {c['seconds_median']:>7.2f} s "
                      f"(first {c['seconds_first']:.2f}) peak {c['peak_rss_mb']:>6} MB "
                      f"(after imports {c['baseline_rss_mb']} MB) rows {c['rows']}", flush=True)  # fmt: skip
            measured = {(c["size"], c["task"], c["engine"]) for c in cells}
            results["cells"] = [c for c in results["cells"] if (c["size"], c["task"], c["engine"]) not in measured]
            results["cells"] += cells
            results["runs"][-1]["load_average_after"] = os.getloadavg()
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
