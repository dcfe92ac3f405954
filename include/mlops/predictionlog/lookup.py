"""One logged prediction found by its request id, for lineage: what was asked, what was answered, by whom.

A request id names one prediction, but the log is partitioned by event date, which the
id does not carry: the Parquet folders are scanned with the id pushed down into the read
(pyarrow skips row groups whose statistics rule it out), and an SQL table is asked with
a WHERE clause.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlops.predictionlog.frames import META_COLUMNS
from mlops.predictionlog.stores import ParquetStore, PredictionLogError, SqlStore, prediction_store


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
    for path in sorted((store.root / use_case).glob("date=*/*.parquet")):
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
