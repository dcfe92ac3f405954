"""One logged prediction found by its request id, for lineage: what was asked, what was answered, by whom.

A request id names one prediction, but the log is partitioned by event date, which the
id does not carry: the Parquet folders are scanned with the id pushed down into the read
(pyarrow skips row groups whose statistics rule it out), and an SQL table is asked with
a WHERE clause.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from mlops.predictionlog.frames import META_COLUMNS
from mlops.predictionlog.stores import ParquetStore, PredictionLogError, SqlStore, finished_files, prediction_store


def find_prediction(request_id: str, use_cases: Sequence[str], *, uri: str | None = None) -> dict[str, Any] | None:
    """The log row of `request_id` (the last logged, if a replay logged it twice), searching `use_cases` in order.

    Returns the row as plain values (`columns` holds every column besides META_COLUMNS:
    the features, and whatever else the writer logged), or None when no use case's log
    holds the id.
    """
    store = prediction_store(uri)
    for use_case in use_cases:
        try:
            rows = _rows_with_id(store, use_case, str(request_id))
        except Exception as exc:
            raise PredictionLogError(
                f"cannot look up request {request_id} of {use_case} in {store.describe()}: {exc}"
            ) from exc
        if rows:
            return _as_record(max(rows, key=lambda row: (str(row.get("logged_at")), str(row.get("event_time")))))
    return None


def _rows_with_id(store: Any, use_case: str, request_id: str) -> list[dict[str, Any]]:
    if isinstance(store, ParquetStore):
        return _parquet_rows(store, use_case, request_id)
    if isinstance(store, SqlStore):
        return _sql_rows(store, use_case, request_id)
    frame = store.read(use_case, None, None)
    return [] if frame.empty else frame[frame["request_id"].astype(str) == request_id].to_dict("records")


def _parquet_rows(store: ParquetStore, use_case: str, request_id: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in finished_files((store.root / use_case).glob("date=*/*.parquet")):
        try:
            table = pq.read_table(path, filters=[("request_id", "=", request_id)])
        except FileNotFoundError:
            continue  # replaced by a concurrent batch re-run between listing and reading
        rows += table.to_pylist()
    return rows


def _sql_rows(store: SqlStore, use_case: str, request_id: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    table = store.table_name(use_case)
    with store.engine.connect() as conn:
        if not sa.inspect(conn).has_table(table):
            return []
        reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
        result = conn.execute(sa.select(reflected).where(reflected.c.request_id == request_id))
        return [dict(row._mapping) for row in result]


def _as_record(row: dict[str, Any]) -> dict[str, Any]:
    """META_COLUMNS as they are, every other column under `columns`; times as ISO text."""
    record = {key: _plain(row.get(key)) for key in META_COLUMNS}
    record["columns"] = {key: _plain(value) for key, value in row.items() if key not in META_COLUMNS}
    return record


def _plain(value: Any) -> Any:
    """JSON-ready: times as ISO text, NaN as None, numpy scalars as Python numbers."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def prediction_times(
    use_case: str, request_ids: Sequence[str], *, days: Sequence[date] = (), uri: str | None = None
) -> dict[str, datetime]:
    """The logged event time of each of `request_ids` that the log holds (the last logged, if logged twice).

    For labels: a label is stored beside its prediction and may not predate it. `days` are
    the event dates the caller expects the ids under (a label's own event time is normally
    its prediction's): those partitions are read first, and only the ids not found there
    are looked for in the rest of the log. Only the id and time columns are read, with the
    ids pushed down into the Parquet read or the SQL WHERE clause.
    """
    wanted = {str(i) for i in request_ids}
    if not wanted:
        return {}
    store = prediction_store(uri)
    try:
        if isinstance(store, SqlStore):
            return _sql_times(store, use_case, wanted)
        if isinstance(store, ParquetStore):
            return _parquet_times(store, use_case, wanted, set(days))
        frame = store.read(use_case, None, None)
    except Exception as exc:
        raise PredictionLogError(
            f"cannot look up {len(wanted)} request ids of {use_case} in {store.describe()}: {exc}"
        ) from exc
    rows = frame[frame["request_id"].astype(str).isin(wanted)] if not frame.empty else frame
    return _latest_times(rows.to_dict("records"))


def _latest_times(rows: Iterable[dict[str, Any]]) -> dict[str, datetime]:
    import pandas as pd

    best: dict[str, tuple[Any, datetime]] = {}
    for row in rows:
        key, logged, event = str(row["request_id"]), row.get("logged_at"), pd.Timestamp(row["event_time"])
        logged_key = pd.Timestamp(logged) if logged is not None and not pd.isna(logged) else pd.Timestamp.min
        if key not in best or logged_key >= best[key][0]:
            best[key] = (logged_key, event.to_pydatetime())
    return {key: event for key, (_, event) in best.items()}


def _parquet_times(store: ParquetStore, use_case: str, wanted: set[str], days: set[date]) -> dict[str, datetime]:
    folders = sorted((store.root / use_case).glob("date=*"))
    hinted = {f"date={day:%Y-%m-%d}" for day in days}
    rows = _id_rows([f for f in folders if f.name in hinted], wanted)
    # The rest of the log only for ids the hinted partitions lack (a mis-stamped or absent event time).
    missing = wanted - {str(row["request_id"]) for row in rows}
    if missing:
        rows += _id_rows([f for f in folders if f.name not in hinted], missing)
    return _latest_times(rows)


def _id_rows(folders: Iterable[Path], wanted: set[str]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    ids = sorted(wanted)
    for folder in folders:
        for path in finished_files(folder.glob("*.parquet")):
            try:
                names = pq.read_schema(path).names
                columns = [c for c in ("request_id", "event_time", "logged_at") if c in names]
                rows += pq.read_table(path, columns=columns, filters=[("request_id", "in", ids)]).to_pylist()
            except FileNotFoundError:
                continue  # replaced by a concurrent batch re-run between listing and reading
    return rows


def _sql_times(store: SqlStore, use_case: str, wanted: set[str]) -> dict[str, datetime]:
    import sqlalchemy as sa

    table = store.table_name(use_case)
    rows: list[dict[str, Any]] = []
    with store.engine.connect() as conn:
        if not sa.inspect(conn).has_table(table):
            return {}
        reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
        columns = [reflected.c[c] for c in ("request_id", "event_time", "logged_at") if c in reflected.c]
        ordered = sorted(wanted)
        for start in range(0, len(ordered), 500):  # under every database's bound-parameter limit
            chunk = ordered[start : start + 500]
            result = conn.execute(sa.select(*columns).where(reflected.c.request_id.in_(chunk)))
            rows += [dict(row._mapping) for row in result]
    return _latest_times(rows)
