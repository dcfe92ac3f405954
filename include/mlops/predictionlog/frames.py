"""Log rows: what a prediction becomes before it is stored, and the column types it keeps.

Every prediction the online service, batch scoring or the replay logs is a
`PredictionBatch`; `build_frame` turns batches into the log's rows (META_COLUMNS,
then one column per feature) with stable types, so two appends of the same shape
read back as one table. Heavy imports sit inside the functions: DAG files and the
prediction service import this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SOURCES = ("online", "batch", "replay")
# Columns every prediction row carries; feature columns follow them.
META_COLUMNS = (
    "request_id",
    "use_case",
    "model_name",
    "model_version",
    "event_time",
    "logged_at",
    "source",
    "batch_partition",
    "prediction",
)

TimeLike = date | datetime | str


def to_timestamp(value: TimeLike) -> datetime:
    """A naive UTC datetime from a date, a datetime or an ISO string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not an ISO date or datetime such as 2011-05-01 or 2011-05-01T13:00"
            ) from exc
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    return datetime(value.year, value.month, value.day)


def utc_now() -> datetime:
    """The current time as the log stores it: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class PredictionBatch:
    """Predictions of one model for a list of records, ready to become log rows."""

    use_case: str
    model_name: str
    model_version: str
    source: str
    request_ids: Sequence[str]
    event_times: Sequence[datetime]
    predictions: Sequence[Any]
    features: dict[str, Sequence[Any]]
    """Column name -> values, one value per record."""
    batch_partition: str | None = None


def build_frame(batches: Iterable[PredictionBatch], logged_at: datetime) -> pd.DataFrame:
    """Log rows (META_COLUMNS then one column per feature) for `batches` of one use case.

    Every column is converted once, straight from its Python list, and the frame is built
    in one call: the prediction service runs this in its writer thread under the GIL, and
    converting through intermediate frames column by column cost ~25 ms per 900 rows, long
    enough to show in the service's p99 (docs/serving.md).
    """
    import pandas as pd

    columns: dict[str, list[Any]] = {name: [] for name in META_COLUMNS}
    feature_values: dict[str, list[Any]] = {}
    total = 0
    for batch in batches:
        if batch.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {batch.source!r}")
        n = len(batch.request_ids)
        if not (len(batch.event_times) == len(batch.predictions) == n):
            raise ValueError("request_ids, event_times and predictions must have the same length")
        columns["request_id"].extend(str(i) for i in batch.request_ids)
        columns["use_case"].extend([batch.use_case] * n)
        columns["model_name"].extend([batch.model_name] * n)
        columns["model_version"].extend([str(batch.model_version)] * n)
        columns["event_time"].extend(batch.event_times)
        columns["logged_at"].extend([logged_at] * n)
        columns["source"].extend([batch.source] * n)
        columns["batch_partition"].extend([batch.batch_partition] * n)
        columns["prediction"].extend(batch.predictions)
        for name, values in batch.features.items():
            if name in columns:
                raise ValueError(f"feature {name!r} collides with a prediction-log column; rename the feature")
            # A feature missing from earlier batches is padded so every column stays aligned.
            feature_values.setdefault(name, [None] * total).extend(values)
        total += n
        for values in feature_values.values():
            if len(values) < total:
                values.extend([None] * (total - len(values)))
    data: dict[str, Any] = {name: _object_column(values) for name, values in columns.items()}
    # cache=False: deciding whether to cache walks every value in Python (~30 ms per 10k rows,
    # under the GIL, in the prediction service's writer thread); the conversion itself is C.
    data["event_time"] = pd.to_datetime(columns["event_time"], cache=False)
    data["logged_at"] = pd.to_datetime(columns["logged_at"], cache=False)
    data["prediction"] = _prediction_column(columns["prediction"])
    for name, values in feature_values.items():
        data[name] = _feature_column(values)
    return pd.DataFrame(data, index=pd.RangeIndex(total), copy=False)


def _object_column(values: list[Any]) -> Any:
    import numpy as np

    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _prediction_column(values: list[Any]) -> Any:
    """float64 when every prediction is a number (class ids included), else as given (labels)."""
    import numpy as np
    import pandas as pd

    given = pd.Series(values)
    numeric = pd.to_numeric(given, errors="coerce")
    if numeric.notna().sum() == given.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    return given.to_numpy()


# Values a numeric feature holds; None is a missing value (NaN).
_NUMBER_TYPES = frozenset({float, int, bool, type(None)})


def _feature_column(values: list[Any]) -> Any:
    """float64 for numeric features (None becomes NaN); strings stay strings.

    The common case, numbers and None only, is one C conversion. Anything else takes the
    general rule: all strings (or None) stay as they are; otherwise numbers and numeric
    strings become float64 if every value converts, and the column is kept as given if not.
    """
    import numpy as np
    import pandas as pd

    types = set(map(type, values))
    if types <= _NUMBER_TYPES and types != {type(None)}:
        return np.asarray(values, dtype=np.float64)
    given = pd.Series(values)
    if given.dtype == object and all(isinstance(v, str) or v is None for v in values):
        return given.to_numpy()
    numeric = pd.to_numeric(given, errors="coerce")
    if numeric.notna().sum() == given.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    return given.to_numpy()
