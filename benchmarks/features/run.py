"""Feature store timings (issue 20), side by side in one run, on the bundled weather view.

1. The point-in-time join of a year of hourly rows (8,760 entity rows, 2011): Feast's
   `get_historical_features` on the Parquet offline store (what training runs) against a plain
   pandas `merge_asof` doing the same join (newest value at or before each row's time, per
   hour key, within the view's ttl); the two results are checked equal before timing counts.
2. One entity row looked up in the SQLite online store through the platform's reader (the
   service's path, `mlops.features.store.OnlineReader`), against no lookup at all (features sent
   inline cost nothing here): p50/p99 of the added time, single-threaded.

    ./run bench features                 # = .venv/bin/python benchmarks/features/run.py
    ./run bench features --repeats 5 --lookups 2000

Results: benchmarks/features/results.json and docs/features.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "include"))

from mlops.features import keys, store  # noqa: E402

REFS = [f"weather_hourly:{f}" for f in ("temp", "atemp", "hum", "windspeed", "weathersit")]
NAMES = [r.split(":")[1] for r in REFS]


def _year_of_hours() -> pd.DataFrame:
    times = pd.Series(pd.date_range("2011-01-01", "2011-12-31 23:00", freq="h", tz="UTC"))
    # Half an hour into each hour: the join must pick the observation at the hour's start.
    return pd.DataFrame({"hour": keys.hour_keys(times), "event_timestamp": times + pd.Timedelta(minutes=30)})


def _merge_asof(entity: pd.DataFrame, offline: pd.DataFrame) -> pd.DataFrame:
    left = entity.sort_values("event_timestamp")
    right = offline.sort_values("event_timestamp")[["hour", "event_timestamp", *NAMES]]
    out = pd.merge_asof(left, right, on="event_timestamp", by="hour", tolerance=pd.Timedelta(hours=2),
                        direction="backward")  # fmt: skip
    return out


def _timed(fn: Any, repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=1000)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="bench-features-"))
    repo = store.FeatureRepo(definitions_dir=ROOT / "features", home=home)
    store.apply_definitions(repo)
    store.ingest_offline(repo, ROOT)
    offline = pd.read_parquet(repo.offline_dir / "weather_hourly.parquet")
    entity = _year_of_hours()

    feast_times, feast_out = _timed(lambda: store.historical_features(repo, entity, REFS), args.repeats)
    pandas_times, pandas_out = _timed(lambda: _merge_asof(entity, offline), args.repeats)
    # Hours the data lacks have no value on either side (Feast may keep or drop such rows): compared without them.
    a = feast_out.dropna(subset=NAMES, how="all").sort_values("hour").reset_index(drop=True)[["hour", *NAMES]]
    b = pandas_out.dropna(subset=NAMES, how="all").sort_values("hour").reset_index(drop=True)[["hour", *NAMES]]
    pd.testing.assert_frame_equal(a, b, check_dtype=False)

    store.materialize(repo, pd.Timestamp("2013-01-01", tz="UTC").to_pydatetime())
    reader = store.OnlineReader(repo, REFS)
    hours = list(entity["hour"].sample(args.lookups, random_state=0))
    reader.read([{"hour": hours[0]}])  # opens the store once, as the service does
    lookups = []
    for hour in hours:
        started = time.perf_counter()
        reader.read([{"hour": hour}])
        lookups.append(time.perf_counter() - started)
    lookups.sort()

    result = {
        "rows": len(entity),
        "joined_rows": len(a),
        "feast_historical_seconds": feast_times,
        "pandas_merge_asof_seconds": pandas_times,
        "feast_over_pandas": statistics.median(feast_times) / statistics.median(pandas_times),
        "online_lookup_ms": {
            "p50": lookups[len(lookups) // 2] * 1000,
            "p99": lookups[int(0.99 * len(lookups))] * 1000,
            "count": len(lookups),
        },
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    (Path(__file__).parent / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
