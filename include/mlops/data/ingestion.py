"""Ingest: read a use case's source window into a versioned Parquet snapshot.

A snapshot is a fixed partition (one per use case and run id), written with
deterministic bytes and versioned by content hash, so re-running a task
overwrites it with the same md5 and a later run can restore the exact data a
model was trained on. Tasks pass `Snapshot.to_dict()` (paths, ids, hashes)
through XCom, never data frames.

pandas and scikit-learn are imported inside functions: DAG files import this
module at parse time.
"""

from __future__ import annotations

import csv
import glob
import logging
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops._io import atomic_path
from mlops.config import FileSource, SklearnSource, SqlSource, UseCase
from mlops.data import versioning
from mlops.data.errors import IngestionError as IngestionError  # raised here; callers catch it from here
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "snapshot.parquet"
_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class Snapshot:
    """What downstream tasks need to find, trust and reproduce a snapshot."""

    path: str
    rows: int
    md5: str
    dvc_file: str
    window_start: str | None
    window_end: str | None
    columns: list[str]
    features: dict[str, Any] | None = None
    """What the snapshot took from the feature store (`JoinedFeatures.to_dict()`); None: all from the source."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        missing = {f.name for f in fields(cls)} - set(data)
        if missing:
            raise ValueError(f"not a snapshot record, missing keys {sorted(missing)}: {data!r}")
        return cls(
            path=str(data["path"]),
            rows=int(data["rows"]),
            md5=str(data["md5"]),
            dvc_file=str(data["dvc_file"]),
            window_start=data["window_start"],
            window_end=data["window_end"],
            columns=[str(c) for c in data["columns"]],
            features=data.get("features"),
        )


# ---------------------------------------------------------------- reading sources


def describe_source(use_case: UseCase) -> str:
    """Where the use case's rows come from, as errors and model cards name it."""
    source = use_case.source
    if isinstance(source, FileSource):
        return f"files {use_case.source_path}"
    if isinstance(source, SqlSource):
        return f"SQL connection {source.conn_id!r}"
    return f"scikit-learn dataset {source.dataset!r}"


def _file_format(path: Path, configured: str | None) -> str:
    if configured:
        return configured
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        return "parquet"
    if ".csv" in suffixes:  # also data.csv.gz, which pandas decompresses
        return "csv"
    raise IngestionError(
        f"cannot tell the format of {path} from its extension; set source.format to 'csv' or 'parquet'"
    )


def _check_csv_tail(path: Path, expected_fields: int) -> None:
    """A file cut mid-write ends in a short last line, which pandas pads with NaN silently."""
    if path.suffix.lower() != ".csv":
        return
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        tail = handle.read().decode("utf-8", errors="replace")
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return
    (last,) = csv.reader([lines[-1]])
    if len(last) < expected_fields:
        raise IngestionError(
            f"{path} looks truncated: its last line has {len(last)} of {expected_fields} fields "
            f"({lines[-1][:80]!r}); re-export or re-copy the file completely"
        )


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        df = pd.read_csv(path, encoding="utf-8")
    except pd.errors.EmptyDataError as exc:
        raise IngestionError(
            f"{path} is empty (no header, no rows); re-export it or remove it from the source"
        ) from exc
    except UnicodeDecodeError as exc:
        with open(path, "rb") as handle:
            # A byte-order mark says which encoding it is; without one, Latin-1 is the usual culprit.
            utf16 = handle.read(2) in (b"\xff\xfe", b"\xfe\xff")
        raise IngestionError(
            f"{path} is not UTF-8 ({exc.reason} at byte {exc.start}{', a UTF-16 byte-order mark' if utf16 else ''}); "
            f"re-save it as UTF-8, for example `iconv -f {'utf-16' if utf16 else 'latin1'} -t utf-8 in.csv > out.csv`"
        ) from exc
    except pd.errors.ParserError as exc:
        raise IngestionError(f"{path} is not a well-formed CSV ({exc}); it may be truncated, re-export it") from exc
    _check_csv_tail(path, len(df.columns))
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError) as exc:
        raise IngestionError(
            f"{path} is not a readable Parquet file ({exc}); it may be truncated or corrupt, re-export it"
        ) from exc


def _load_files(use_case: UseCase, source: FileSource) -> pd.DataFrame:
    import pandas as pd

    pattern = use_case.source_path
    assert pattern is not None
    paths = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
    if not paths:
        raise IngestionError(
            f"no file matches {pattern} (source.path {source.path!r} of use case {use_case.name!r}, "
            f"relative to {get_settings().project_root}); check the path or copy the data there"
        )
    frames = []
    for path in paths:
        if path.stat().st_size == 0:
            raise IngestionError(f"{path} is empty (0 bytes); re-export it or remove it from the source")
        fmt = _file_format(path, source.format)
        frames.append(_read_csv(path) if fmt == "csv" else _read_parquet(path))
    log.info("read %d file(s) matching %s", len(paths), pattern)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _load_sql(source: SqlSource, sql_uri_resolver: Callable[[str], str] | None) -> pd.DataFrame:
    import pandas as pd
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    if sql_uri_resolver is None:
        raise IngestionError(
            f"the SQL source needs a connection resolver to turn conn_id {source.conn_id!r} into a URI; "
            "pass sql_uri_resolver (the Airflow layer reads it from the Airflow connection)"
        )
    uri = sql_uri_resolver(source.conn_id)
    engine = None
    try:
        engine = sqlalchemy.create_engine(uri)
        with engine.connect() as connection:
            return pd.read_sql(sqlalchemy.text(source.query), connection)
    except SQLAlchemyError as exc:
        raise IngestionError(
            f"the query of connection {source.conn_id!r} failed: {exc}; check the query and the connection"
        ) from exc
    finally:
        if engine is not None:
            engine.dispose()


def _load_sklearn(source: SklearnSource) -> pd.DataFrame:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{source.dataset}")(as_frame=True)
    df = bunch.data.copy()
    df.columns = [str(c).replace(" ", "_") for c in df.columns]
    df["target"] = bunch.target.to_numpy()
    return df


def load_source(use_case: UseCase, sql_uri_resolver: Callable[[str], str] | None = None) -> pd.DataFrame:
    """Read the configured source as it is: columns and types unchanged, so validation sees upstream changes."""
    source = use_case.source
    if isinstance(source, FileSource):
        df = _load_files(use_case, source)
    elif isinstance(source, SqlSource):
        df = _load_sql(source, sql_uri_resolver)
    else:
        df = _load_sklearn(source)
    if use_case.time_column and use_case.time_column not in df.columns:
        raise IngestionError(
            f"the time column {use_case.time_column!r} of use case {use_case.name!r} is not in "
            f"{describe_source(use_case)}, which has columns {list(df.columns)}; "
            "fix time_column in the config or the source"
        )
    return df


# ---------------------------------------------------------------- windowing


def _timestamp(value: object, what: str) -> pd.Timestamp:
    import pandas as pd

    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise IngestionError(f"{what} {value!r} is not a date or timestamp; use ISO format, e.g. 2011-03-01") from exc
    if ts is pd.NaT:
        raise IngestionError(f"{what} is empty; use ISO format, e.g. 2011-03-01")
    return ts


def _like(ts: pd.Timestamp, reference: pd.Timestamp) -> pd.Timestamp:
    """Bring a bound into the time zone convention of the data, so comparisons never raise.

    Airflow's logical dates are UTC-aware while most sources store naive dates.
    """
    if reference.tz is None:
        return ts.tz_convert("UTC").tz_localize(None) if ts.tz is not None else ts
    return ts.tz_localize("UTC").tz_convert(reference.tz) if ts.tz is None else ts.tz_convert(reference.tz)


def resolve_window(
    use_case: UseCase, as_of: str | None, newest: pd.Timestamp
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The [start, end) training window.

    end: `as_of`, else `training.window.end`, else the day after the newest row.
    start: `training.window.start`, else end - `window.days`, else unbounded.
    """
    import pandas as pd

    if not use_case.time_column:
        return None, None
    window = use_case.training.window
    if as_of:
        end = _timestamp(as_of, "as_of")
    elif window.end:
        end = _timestamp(window.end, "training.window.end")
    else:
        if newest is None or newest is pd.NaT:
            raise IngestionError(
                f"cannot place the window of {use_case.name!r}: the source has no dated rows and no end is set; "
                "pass as_of or set training.window.end"
            )
        end = newest.normalize() + pd.Timedelta(days=1)
    if newest is not None and newest is not pd.NaT:
        end = _like(end, newest)
    start: pd.Timestamp | None = None
    if window.start:
        start = _like(_timestamp(window.start, "training.window.start"), end)
    elif window.days:
        start = end - pd.Timedelta(days=window.days)
    if start is not None and start >= end:
        raise IngestionError(
            f"the window of {use_case.name!r} is empty: start {start} is not before end {end}; "
            "fix training.window or as_of"
        )
    return start, end


def _parse_times(df: pd.DataFrame, column: str, where: str) -> pd.Series:
    import pandas as pd

    raw = df[column]
    times = pd.to_datetime(raw, errors="coerce")
    bad = times.isna() & raw.notna()
    if bad.any():
        examples = raw[bad].astype(str).unique()[:3].tolist()
        raise IngestionError(
            f"{int(bad.sum())} value(s) of time column {column!r} in {where} are not dates, e.g. {examples}; "
            "fix the source or time_column"
        )
    return times


def _check_not_in_future(times: pd.Series, column: str, where: str, today: date | None) -> None:
    """Rows dated after today are a clock, time-zone or export bug upstream, never data.

    The window would silently leave them out of every training run (and so lose the
    rows they really belong to), so the whole source is refused instead. The limit is
    the end of today, as in the validation suite's `max_date`.
    """
    import pandas as pd

    newest = times.max()
    if newest is pd.NaT or (isinstance(newest, float) and math.isnan(newest)):
        return  # no dated rows: the window check says so
    day = today or date.today()
    future = times >= _like(pd.Timestamp(day) + pd.Timedelta(days=1), newest)
    if not future.any():
        return
    examples = times[future].astype(str).unique()[:3].tolist()
    raise IngestionError(
        f"{int(future.sum())} row(s) of {where} have time column {column!r} after today "
        f"({day}), e.g. {examples}: timestamps from the future mean a clock, "
        "time-zone or export bug upstream, and such rows would fall outside every training window. "
        "Fix the dates at the source (or remove those rows) and re-run"
    )


# ---------------------------------------------------------------- snapshots


def snapshot_dir(use_case: UseCase, run_id: str) -> Path:
    """The run's partition; run ids such as `manual__2024-01-01T00:00:00+00:00` become path-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    if not safe:
        raise IngestionError(f"run id {run_id!r} cannot name a folder; pass the Airflow run id")
    return get_settings().data_dir / "snapshots" / use_case.name / safe


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write atomically; pyarrow's output depends only on the frame, so equal input gives equal bytes."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, engine="pyarrow", index=False, compression="snappy")


def ingest_snapshot(
    use_case: UseCase,
    run_id: str,
    as_of: str | None = None,
    sql_uri_resolver: Callable[[str], str] | None = None,
    *,
    today: date | None = None,
) -> Snapshot:
    """Read the source window, write the run's Parquet snapshot and version it with DVC.

    Re-running for the same run id overwrites the snapshot; with unchanged source
    data the bytes and the md5 are the same. Rows whose time is missing fall in no window.
    A source with rows dated after `today` is refused; the DAG passes the day its run was
    due (`run_after`), so the verdict does not change on a re-run; the default, the
    machine's date, is for calling it by hand.
    """
    df = load_source(use_case, sql_uri_resolver)
    where = describe_source(use_case)
    if df.empty:
        raise IngestionError(f"{where} has no rows; check the source of use case {use_case.name!r}")
    start = end = None
    if use_case.time_column:
        times = _parse_times(df, use_case.time_column, where)
        _check_not_in_future(times, use_case.time_column, where, today)
        start, end = resolve_window(use_case, as_of, times.max())
        mask = times < end
        if start is not None:
            mask &= times >= start
        if not mask.any():
            raise IngestionError(
                f"no rows of {where} fall in the window [{start}, {end}) of use case {use_case.name!r}; "
                f"the source spans {times.min()} to {times.max()}. Pass another as_of or fix training.window"
            )
        df = df.loc[mask.to_numpy()].reset_index(drop=True)
    joined = None
    if use_case.feature_store is not None:
        from mlops.data.store_features import join_store_features

        df, joined = join_store_features(use_case, df)
    path = snapshot_dir(use_case, run_id) / SNAPSHOT_FILE
    _write_parquet(df, path)
    tracked = versioning.track(path)
    snapshot = Snapshot(
        path=str(path),
        rows=len(df),
        md5=tracked.md5,
        dvc_file=tracked.dvc_file,
        window_start=start.isoformat() if start is not None else None,
        window_end=end.isoformat() if end is not None else None,
        columns=[str(c) for c in df.columns],
        features=joined.to_dict() if joined is not None else None,
    )
    log.info("snapshot of %s: %d rows in [%s, %s), md5 %s", use_case.name, len(df), start, end, tracked.md5)
    return snapshot


def read_snapshot(path: str) -> pd.DataFrame:
    """Load a snapshot written by `ingest_snapshot`."""
    import pandas as pd

    if not Path(path).is_file():
        raise IngestionError(
            f"snapshot {path} does not exist; restore it with `mlops data restore <md5> {path}` "
            "using the md5 recorded with the run"
        )
    return pd.read_parquet(path)


# ---------------------------------------------------------------- holdout


def split_holdout(use_case: UseCase, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into (train, holdout), deterministically.

    With a time column the holdout is the latest `holdout_fraction` of rows (a
    stable sort keeps the source order within a timestamp), so evaluation looks
    at the future as production will. Otherwise a split seeded with
    `training.seed`, stratified on the target for classification.
    """
    from sklearn.model_selection import train_test_split

    fraction = use_case.training.holdout_fraction
    n = len(df)
    if n < 2:
        raise IngestionError(f"cannot split {n} row(s) into train and holdout; widen the window")
    n_holdout = min(n - 1, max(1, math.ceil(n * fraction)))
    if use_case.time_column:
        times = _parse_times(df, use_case.time_column, "the snapshot").reset_index(drop=True)
        # Rows without a time sort first: they can train but say nothing about the future.
        order = times.sort_values(kind="stable", na_position="first").index.to_numpy()
        ordered = df.iloc[order].reset_index(drop=True)
        cut = n - n_holdout
        return ordered.iloc[:cut].reset_index(drop=True), ordered.iloc[cut:].reset_index(drop=True)
    stratify = None
    if use_case.task == "classification":
        counts = df[use_case.target].value_counts()
        n_classes = len(counts)
        if counts.min() >= 2 and n_classes <= n_holdout and n_classes <= n - n_holdout:
            stratify = df[use_case.target]
        else:
            log.warning("cannot stratify %s: too few rows per class; using a plain seeded split", use_case.name)
    train, holdout = train_test_split(
        df, test_size=n_holdout, random_state=use_case.training.seed, shuffle=True, stratify=stratify
    )
    return train.reset_index(drop=True), holdout.reset_index(drop=True)
