"""The labels of a window's sample, scanned from the label files with Polars (the only module that imports it).

Polars because it was measured fastest at this scan, against pyarrow's dataset scanner (used
here before) and DuckDB, doing the same work on the same files (`./run bench
monitoring_readers`, docs/benchmarks.md "Monitoring at volume: the reading engine"): the
labels of 200,000 sampled ids among 80M label rows took 3.9 s with Polars, 6.0 s with DuckDB
and 8.1 s with pyarrow; among 800M, 45 s, 105 s and 121 s. This scan is most of
`collect_window` at a billion rows. The sample's
row groups and the exact recompute of a column stay with pyarrow (`volume`, `summaries`):
there neither engine was clearly faster, and Polars' sample took more memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

LABEL_READ_COLUMNS = ("request_id", "label", "arrived_at")


def read_labels(files: Sequence[str | Path], ids: Sequence[str], ranges: Sequence[tuple[Any, Any]]) -> pd.DataFrame:
    """request_id, label and arrived_at of the label rows of `ids` in `files`, the filters pushed into the scan.

    Besides the ids, a filter on the labels' `prediction_time` (a label's prediction's event
    time) to `ranges` (naive UTC, both ends included), the time ranges the sample came from:
    label files written as labels arrive for a span of predictions hold runs of prediction
    times, so their row-group statistics let the scan skip most of them without decoding an
    id. A label without prediction_time (written before labels had it) is kept by its id alone.

    One scan over all files takes the first file's schema. When files disagree on a column's
    type (a batch of integer labels is stored as int64, one with fractions as double, classes
    with text as strings), each file is scanned on its own and the columns take their common type.
    """
    import polars as pl

    paths = [str(f) for f in files]
    try:
        scan = pl.scan_parquet(paths, hive_partitioning=False, missing_columns="insert", extra_columns="ignore")
        frame = _filtered(scan, ids, ranges).collect()
    except pl.exceptions.PolarsError:
        scans = [pl.scan_parquet(path, hive_partitioning=False) for path in paths]
        frame = _filtered(pl.concat(scans, how="diagonal_relaxed"), ids, ranges).collect()
    return frame.to_pandas()


def _filtered(scan: pl.LazyFrame, ids: Sequence[str], ranges: Sequence[tuple[Any, Any]]) -> pl.LazyFrame:
    import pandas as pd
    import polars as pl

    schema = scan.collect_schema()
    keep = pl.col("request_id").cast(pl.String).is_in(pl.Series(list(ids), dtype=pl.String).implode())
    when = schema.get("prediction_time")
    if isinstance(when, pl.Datetime) and ranges:
        zone = when.time_zone

        def bound(value: Any) -> Any:
            moment = pd.Timestamp(value)
            return (moment.tz_localize("UTC").tz_convert(zone) if zone else moment).to_pydatetime()

        in_time = pl.col("prediction_time").is_null()
        for start, end in ranges:
            in_time = in_time | pl.col("prediction_time").is_between(bound(start), bound(end), closed="both")
        keep = in_time & keep
    wanted = [c for c in LABEL_READ_COLUMNS if c in schema]
    return scan.filter(keep).select(wanted)
