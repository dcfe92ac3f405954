"""The prediction log's API: append predictions, replace a batch partition, read a window (with its labels).

Batch scoring, the online service and the replay all write through these functions,
and monitoring reads back with `read_predictions`. A store failure raises
`PredictionLogError` naming the store, so a caller can tell it from bad data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from mlops.naming import ROLE_CHAMPION
from mlops.predictionlog.frames import META_COLUMNS, PredictionBatch, TimeLike, build_frame, to_timestamp, utc_now
from mlops.predictionlog.labels import read_labels
from mlops.predictionlog.stores import (
    LogSchemaError,
    PredictionLogError,
    Store,
    apply_schema,
    check_schema,
    frame_schema,
    is_sql_uri,
    prediction_store,
    use_case_name,
)

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import UseCase


def append_predictions(
    use_case: UseCase | str,
    batches: Sequence[PredictionBatch],
    *,
    uri: str | None = None,
    logged_at: datetime | None = None,
) -> int:
    """Append prediction rows to the log; returns the number of rows written."""
    return append_frame(use_case, build_frame(batches, logged_at or utc_now()), uri=uri)


def append_frame(
    use_case: UseCase | str, frame: pd.DataFrame, *, uri: str | None = None, batch_id: str | None = None
) -> int:
    """Append rows made by `build_frame`; a store failure raises PredictionLogError.

    With a `batch_id`, appending the same batch again (a replay after a crash between the store's
    write and the caller's bookkeeping) leaves its rows in the store once.

    Raises LogSchemaError (a ValueError too) when the rows would change the type of a
    column the log holds: a data error that a retry cannot fix.

    Separate from `append_predictions` so that a caller holding rows (the service's log
    writer) can tell a batch that cannot become rows (`build_frame` raised: the data is
    wrong and retrying will not help) from a store that cannot take them now (retry).
    """
    name = use_case_name(use_case)
    store = prediction_store(uri)
    try:
        _keep_schema(store, name, frame)
        store.append(name, frame, batch_id=batch_id)
    except LogSchemaError:
        raise
    except Exception as exc:
        raise PredictionLogError(
            f"cannot write {len(frame)} predictions of {name} to {store.describe()}: {exc}"
        ) from exc
    return len(frame)


def replace_batch_partition(
    use_case: UseCase | str,
    partition: str,
    batch: PredictionBatch,
    *,
    uri: str | None = None,
    logged_at: datetime | None = None,
) -> int:
    """Write a batch-scoring partition, replacing whatever an earlier run wrote for it; returns rows replaced."""
    if batch.batch_partition != partition:
        raise ValueError(f"batch.batch_partition {batch.batch_partition!r} must equal partition {partition!r}")
    frame = build_frame([batch], logged_at or utc_now())
    name = use_case_name(use_case)
    store = prediction_store(uri)
    try:
        _keep_schema(store, name, frame)
        return store.replace_partition(name, partition, frame)
    except LogSchemaError:
        raise
    except Exception as exc:
        raise PredictionLogError(
            f"cannot replace partition {partition!r} of {name} in {store.describe()}: {exc}"
        ) from exc


def read_predictions(
    use_case: UseCase | str,
    start: TimeLike | None,
    end: TimeLike | None,
    with_labels: bool = False,
    *,
    uri: str | None = None,
    labels_uri: str | None = None,
) -> pd.DataFrame:
    """Predictions whose event time lies in [start, end), oldest first.

    `start`/`end` take dates, datetimes or ISO strings; None leaves that side open.
    `with_labels` adds `label` (NaN until the label arrives) and `label_arrived_at` (NaT until
    then), joined on request_id only.
    """
    import pandas as pd

    lo = to_timestamp(start) if start is not None else None
    hi = to_timestamp(end) if end is not None else None
    name = use_case_name(use_case)
    store = prediction_store(uri)
    try:
        frame = store.read(name, lo, hi)
        schemas = store.read_schemas(name) if not frame.empty else {}
    except Exception as exc:
        raise PredictionLogError(f"cannot read predictions of {name} from {store.describe()}: {exc}") from exc
    if not frame.empty:
        frame = apply_schema(frame, schemas)
        # Rows logged before roles existed were all answered by the champion.
        frame["role"] = frame["role"].fillna(ROLE_CHAMPION) if "role" in frame else ROLE_CHAMPION
    if frame.empty:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in META_COLUMNS})
        frame["event_time"] = pd.Series(dtype="datetime64[ns]")
    else:
        frame = frame.sort_values(["event_time", "logged_at"], kind="stable").reset_index(drop=True)
    if with_labels:
        frame = _join_labels(frame, name, lo, hi, labels_uri or _labels_beside(uri))
    return frame


def _join_labels(
    frame: pd.DataFrame, use_case: str, lo: datetime | None, hi: datetime | None, labels_uri: str | None
) -> pd.DataFrame:
    """Add `label` and `label_arrived_at`, joined on request_id only.

    The labels read are those stored in the window's partitions (labels sit in their
    prediction's event-date partition) and the unmatched ones; a label's own event time
    plays no part, so a mis-stamped label still joins its prediction.
    """
    import numpy as np
    import pandas as pd

    labels = read_labels(use_case, lo, hi, uri=labels_uri)
    labels = labels[labels["request_id"].isin(set(frame["request_id"].astype(str)))]
    position = pd.Index(labels["request_id"]).get_indexer(frame["request_id"].astype(str))
    found = position >= 0
    values = labels["label"].to_numpy(dtype=object)
    column = np.full(len(frame), np.nan, dtype=object)
    column[found] = values[position[found]]
    frame["label"] = column
    numeric = pd.to_numeric(frame["label"], errors="coerce")
    if numeric.notna().sum() == frame["label"].notna().sum():
        frame["label"] = numeric
    arrived = pd.to_datetime(labels["arrived_at"]).to_numpy(dtype="datetime64[ns]")
    stamps = np.full(len(frame), np.datetime64("NaT"), dtype="datetime64[ns]")
    stamps[found] = arrived[position[found]]
    frame["label_arrived_at"] = stamps
    return frame


def _keep_schema(store: Store, use_case: str, frame: pd.DataFrame) -> None:
    """Check `frame` against the log's schema; record the schema of each model version it is the first of.

    Why per version: the file (or row) says which version wrote which types, so the error
    for a conflicting write can name the version that fixed the type. The check is against
    every version: the log is one table and a column keeps one type.
    """
    if frame.empty:
        return
    new = frame_schema(frame)
    schemas = store.read_schemas(use_case)
    versions = sorted({str(v) for v in frame["model_version"].unique()})
    check_schema(use_case, schemas, new, versions)
    for version in versions:
        known = schemas.get(version)
        if known is None or not known.keys() >= new.keys():
            store.write_schema(use_case, version, {**(known or {}), **new})


def _labels_beside(log_uri: str | None) -> str | None:
    """The labels store that goes with an explicit log URI: an SQL log keeps its labels in the same database."""
    if log_uri and is_sql_uri(log_uri):
        return log_uri
    return None
