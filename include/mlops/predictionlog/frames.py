"""Log rows: what a prediction becomes before it is stored, and the column types it keeps.

Every prediction the online service, batch scoring or the replay logs is a
`PredictionBatch`; `build_frame` turns batches into the log's rows (META_COLUMNS,
then one column per feature) with stable types, so two appends of the same shape
read back as one table. A feature's type comes from the model signature
(`feature_types`, kinds as in FEATURE_KINDS): long -> int64 (pandas `Int64` when a
value is null), double -> float64, string -> object, bool -> bool (`boolean` when
null), so a window read back validates against the suite the training data passed.
A classifier's batch also carries its `classes` and one probability row per record,
which become the `proba__<class>` columns. Heavy imports sit inside the functions: DAG files and the
prediction service import this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from mlops.naming import ROLE_CHAMPION, ROLES, proba_column

if TYPE_CHECKING:
    import pandas as pd

SOURCES = ("online", "batch", "replay")
# Columns every prediction row carries; feature columns follow them.
META_COLUMNS = (
    "request_id",
    "use_case",
    "model_name",
    "model_version",
    "role",
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


# The logical types of log columns. `datetime` is the event and logging times only.
FEATURE_KINDS = ("long", "double", "string", "bool")
KINDS = (*FEATURE_KINDS, "datetime")


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
    feature_types: Mapping[str, str] | None = None
    """Column name -> kind (FEATURE_KINDS), from the model signature; a feature without one is inferred."""
    role: str = ROLE_CHAMPION
    """Which alias answered: champion, shadow or canary (mlops.naming.ROLES)."""
    classes: Sequence[Any] | None = None
    """A classifier's class labels, in the order of each probability row."""
    probabilities: Sequence[Sequence[float]] | None = None
    """One row per record, one probability per class (None for a regressor)."""


def build_frame(batches: Iterable[PredictionBatch], logged_at: datetime) -> pd.DataFrame:
    """Log rows (META_COLUMNS, then `proba__<class>` columns, then one column per feature) for `batches`.

    Every column is converted once, straight from its Python list, and the frame is built
    in one call: the prediction service runs this in its writer thread under the GIL, and
    converting through intermediate frames column by column cost ~25 ms per 900 rows, long
    enough to show in the service's p99 (docs/serving.md). Raises ValueError naming the
    column when a value does not fit its declared type.
    """
    import numpy as np
    import pandas as pd

    columns: dict[str, list[Any]] = {name: [] for name in META_COLUMNS}
    feature_values: dict[str, list[Any]] = {}
    proba_values: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    chunks: list[tuple[int, int, Sequence[Any], Any]] = []
    total = 0
    for batch in batches:
        if batch.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {batch.source!r}")
        if batch.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {batch.role!r}")
        n = len(batch.request_ids)
        if not (len(batch.event_times) == len(batch.predictions) == n):
            raise ValueError("request_ids, event_times and predictions must have the same length")
        columns["request_id"].extend(str(i) for i in batch.request_ids)
        columns["use_case"].extend([batch.use_case] * n)
        columns["model_name"].extend([batch.model_name] * n)
        columns["model_version"].extend([str(batch.model_version)] * n)
        columns["role"].extend([batch.role] * n)
        columns["event_time"].extend(batch.event_times)
        columns["logged_at"].extend([logged_at] * n)
        columns["source"].extend([batch.source] * n)
        columns["batch_partition"].extend([batch.batch_partition] * n)
        columns["prediction"].extend(batch.predictions)
        if batch.probabilities is not None:
            if batch.classes is None:
                raise ValueError("probabilities need the classes they belong to")
            matrix = np.asarray(batch.probabilities, dtype=np.float64).reshape(n, len(batch.classes))
            chunks.append((total, n, batch.classes, matrix))
        for name, kind in (batch.feature_types or {}).items():
            if kind not in FEATURE_KINDS:
                raise ValueError(f"feature {name!r}: type {kind!r} is not one of {FEATURE_KINDS}")
            if kinds.setdefault(name, kind) != kind:
                raise ValueError(f"feature {name!r} is {kinds[name]} in one batch and {kind} in another")
        for name, values in batch.features.items():
            if name in columns:
                raise ValueError(f"feature {name!r} collides with a prediction-log column; rename the feature")
            # A feature missing from earlier batches is padded so every column stays aligned.
            feature_values.setdefault(name, [None] * total).extend(values)
        total += n
        for values in feature_values.values():
            if len(values) < total:
                values.extend([None] * (total - len(values)))
    for start, n, classes, matrix in chunks:
        for j, label in enumerate(classes):
            column = proba_values.get(proba_column(label))
            if column is None:
                column = proba_values[proba_column(label)] = np.full(total, np.nan)
            column[start : start + n] = matrix[:, j]
    data: dict[str, Any] = {name: _object_column(values) for name, values in columns.items()}
    # cache=False: deciding whether to cache walks every value in Python (~30 ms per 10k rows,
    # under the GIL, in the prediction service's writer thread); the conversion itself is C.
    data["event_time"] = pd.to_datetime(columns["event_time"], cache=False)
    data["logged_at"] = pd.to_datetime(columns["logged_at"], cache=False)
    data["prediction"] = _prediction_column(columns["prediction"])
    for name in proba_values:
        if name in feature_values:
            raise ValueError(f"feature {name!r} collides with a probability column; rename the feature")
        data[name] = proba_values[name]
    for name, values in feature_values.items():
        data[name] = _feature_column(name, values, kinds.get(name))
    return pd.DataFrame(data, index=pd.RangeIndex(total), copy=False)


def _object_column(values: list[Any]) -> Any:
    import numpy as np

    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _prediction_column(values: list[Any]) -> Any:
    """Class labels and values as the model returned them: int64, float64, bool or text."""
    import numpy as np

    types = set(map(type, values))
    if types == {int}:
        return np.asarray(values, dtype=np.int64)
    if types == {bool}:
        return np.asarray(values, dtype=bool)
    if types and types <= {int, float}:
        return np.asarray(values, dtype=np.float64)
    import pandas as pd

    given = pd.Series(values)
    numeric = pd.to_numeric(given, errors="coerce")
    if given.dtype == object and all(isinstance(v, str) or v is None for v in values):
        return given.to_numpy()
    if numeric.notna().sum() == given.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    return given.to_numpy()


# Values a numeric feature holds; None is a missing value (NaN).
_NUMBER_TYPES = frozenset({float, int, bool, type(None)})


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _feature_column(name: str, values: list[Any], kind: str | None) -> Any:
    """The column of one feature, of its declared kind, or inferred when it has none.

    The common cases are one C conversion. Without a declared kind: ints (and None) become
    int64 (`Int64` with a null), booleans bool, other numbers float64 (None as NaN); all
    strings (or None) stay as they are; numeric strings become float64 if every value
    converts, and the column is kept as given if not.
    """
    import numpy as np
    import pandas as pd

    types = set(map(type, values))
    if kind is None:
        if types in ({int}, {int, type(None)}):
            kind = "long"
        elif types and types <= {bool, type(None)} and types != {type(None)}:
            kind = "bool"
    try:
        if kind == "long":
            if types == {int}:
                return np.asarray(values, dtype=np.int64)
            # Int64 refuses 3.5 instead of truncating it; floats like 3.0 are taken as 3.
            column = pd.array([None if _is_null(v) else v for v in values], dtype="Int64")
            return column.to_numpy(dtype=np.int64) if not column.isna().any() else column
        if kind == "double":
            if types <= _NUMBER_TYPES:
                return np.asarray(values, dtype=np.float64)
            return pd.to_numeric(pd.Series(values), errors="raise").to_numpy(dtype=np.float64)
        if kind == "bool":
            if types == {bool}:
                return np.asarray(values, dtype=bool)
            column = pd.array([None if _is_null(v) else v for v in values], dtype="boolean")
            return column.to_numpy(dtype=bool) if not column.isna().any() else column
        if kind == "string":
            return _object_column([None if _is_null(v) else v if isinstance(v, str) else str(v) for v in values])
    except (TypeError, ValueError) as exc:
        example = next((v for v in values if not _is_null(v)), None)
        raise ValueError(f"feature {name!r} is declared {kind} but holds values such as {example!r}: {exc}") from exc
    if types <= _NUMBER_TYPES and types != {type(None)}:
        return np.asarray(values, dtype=np.float64)
    given = pd.Series(values)
    if given.dtype == object and all(isinstance(v, str) or v is None for v in values):
        return given.to_numpy()
    numeric = pd.to_numeric(given, errors="coerce")
    if numeric.notna().sum() == given.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    return given.to_numpy()
