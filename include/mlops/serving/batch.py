"""Batch scoring: one partition of rows through `models:/<name>@champion` into the prediction log.

A partition is a date (`2011-05-01`) or any label (`replay-2011-05`). Scoring it
again replaces what the earlier run wrote for it, so an Airflow retry or backfill
never doubles rows. Heavy imports stay inside the functions (DAG files import this).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops._io import atomic_path
from mlops.config import UseCase, resolve_use_case
from mlops.predictionlog.frames import PredictionBatch, to_timestamp
from mlops.predictionlog.predictions import replace_batch_partition
from mlops.predictionlog.stores import prediction_store
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

    from mlops.serving.models import LoadedModel


@dataclass(frozen=True)
class ScoringResult:
    """What one scoring run wrote: the partition, the model version that scored it, and where."""

    use_case: str
    partition: str
    model_name: str
    model_version: str
    model_uri: str
    rows: int
    replaced_rows: int
    """Rows an earlier run of the same partition had written (now gone)."""
    prediction_mean: float | None
    log_location: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def landing_dir(use_case: UseCase | str, partition: str) -> Path:
    """Where rows to score arrive: `$MLOPS_HOME/landing/<use_case>/date=<partition>/` (CSV or Parquet files)."""
    name = use_case if isinstance(use_case, str) else use_case.name
    return get_settings().home / "landing" / name / f"date={partition}"


def land_partition(use_case: UseCase | str, partition: str, frame: pd.DataFrame) -> Path:
    """Drop `frame` into the landing folder of `partition` (replacing what was there); returns the file."""
    folder = landing_dir(use_case, partition)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    final = folder / "rows.parquet"
    with atomic_path(final) as tmp:
        frame.to_parquet(tmp, index=False)
    return final


def read_landed_partition(use_case: UseCase | str, partition: str) -> pd.DataFrame | None:
    """The rows landed for `partition`, or None when nothing has landed (the DAG then skips)."""
    import pandas as pd

    folder = landing_dir(use_case, partition)
    files = sorted([*folder.glob("*.parquet"), *folder.glob("*.csv")]) if folder.is_dir() else []
    if not files:
        return None
    frames = [pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f) for f in files]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def run_partition(partition: str | None, logical_date: datetime | None, run_after: datetime | None) -> str:
    """The partition a scoring run scores: the one asked for, else its logical date, else the date it ran after.

    A run triggered through the REST API with `logical_date: null` (AirflowAPI.trigger
    sends that) has no logical date, and so no `ds`; it still has `run_after`, the time
    it was due, which is the day whose rows it should score. Dates are taken in UTC,
    as Airflow's `ds` is.
    """
    if partition:
        # The partition becomes a folder name (`date=<partition>`): only a real date may.
        try:
            return f"{date.fromisoformat(partition):%Y-%m-%d}"
        except (TypeError, ValueError):
            raise ValueError(f"partition {partition!r} is not a date: pass it as YYYY-MM-DD") from None
    for moment in (logical_date, run_after):
        if moment is not None:
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC)
            return f"{moment:%Y-%m-%d}"
    raise ValueError(
        "the run has neither a logical date nor a run_after date to take the partition from; "
        'trigger it with conf {"partition": "YYYY-MM-DD"}'
    )


def prepare_features(use_case: UseCase, frame: pd.DataFrame) -> pd.DataFrame:
    """The feature columns in config order, categoricals as strings (NaN when missing), numerics as floats."""
    import numpy as np
    import pandas as pd

    missing = [c for c in use_case.features.all if c not in frame.columns]
    if missing:
        raise ValueError(
            f"cannot score {use_case.name}: the frame lacks feature columns {missing}; "
            f"it has {sorted(map(str, frame.columns))}"
        )
    out = pd.DataFrame(index=frame.index)
    for name in use_case.features.numeric:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() & frame[name].notna()
        if bad.any():
            raise ValueError(
                f"numeric feature {name!r} has non-numeric values such as {frame.loc[bad, name].iloc[0]!r}"
            )
        out[name] = values.astype(np.float64)
    for name in use_case.features.categorical:
        column = frame[name]
        out[name] = column.where(column.isna(), column.astype(str)).astype(object)
    return out.reset_index(drop=True)


def _event_times(
    use_case: UseCase, partition: str, frame: pd.DataFrame, event_times: Sequence[Any] | None, fallback: datetime
) -> list[datetime]:
    import pandas as pd

    if event_times is not None:
        if len(event_times) != len(frame):
            raise ValueError(f"event_times has {len(event_times)} entries for {len(frame)} rows")
        # The log keeps microseconds (Python datetimes); sub-microsecond digits mean nothing here.
        return [t.to_pydatetime(warn=False) if isinstance(t, pd.Timestamp) else to_timestamp(t) for t in event_times]
    if use_case.time_column and use_case.time_column in frame.columns:
        times = pd.to_datetime(frame[use_case.time_column], errors="coerce")
        if times.isna().any():
            raise ValueError(f"time column {use_case.time_column!r} has values that are not dates")
        if getattr(times.dt, "tz", None) is not None:
            times = times.dt.tz_convert("UTC").dt.tz_localize(None)
        return [t.to_pydatetime() for t in times]
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", partition):
        return [to_timestamp(partition)] * len(frame)
    return [fallback] * len(frame)


def score_partition(
    use_case: UseCase | str,
    partition: str,
    frame: pd.DataFrame,
    *,
    alias: str = "champion",
    ids: Sequence[Any] | None = None,
    id_column: str | None = None,
    event_times: Sequence[Any] | None = None,
    source: str = "batch",
    log_uri: str | None = None,
    tracking_uri: str | None = None,
    scored_at: datetime | None = None,
    model: LoadedModel | None = None,
) -> ScoringResult:
    """Score `frame` with `models:/<name>@<alias>` and write it as partition `partition` of the log.

    Row ids: `ids`, else `frame[id_column]`, else `<partition>:<row number>` (stable,
    so labels delivered later still join after a re-run). Event time: `event_times`,
    else the use case's time column, else the partition's date, else `scored_at`.
    A store-backed use case's store features are joined from the offline store first
    (`join_store`; the time column at `feature_store.hour_column`'s hour is then the event time).
    `model` skips the registry lookup (replay passes the model it already loaded).
    """
    from mlops.serving.models import load_alias

    uc = resolve_use_case(use_case)
    _check_partition_and_source(partition, source)
    logged_at = scored_at or datetime.now(UTC).replace(tzinfo=None)
    entity_keys: dict[str, list[Any]] = {}
    if uc.feature_store is not None:
        frame, entity_keys, store_times = join_store(uc, frame)
        event_times = event_times if event_times is not None else store_times
    features = prepare_features(uc, frame)
    row_ids = _row_ids(partition, frame, ids, id_column)
    times = _event_times(uc, partition, frame, event_times, logged_at)

    loaded = model or load_alias(uc, alias, tracking_uri)
    predictions, probabilities = loaded.predict_rows(features) if len(features) else ([], None)
    batch = PredictionBatch(
        use_case=uc.name,
        model_name=loaded.model_name,
        model_version=loaded.version,
        source=source,
        request_ids=row_ids,
        event_times=times,
        predictions=predictions,
        features={
            **{str(c): [None if _missing(v) else v for v in features[c].tolist()] for c in features.columns},
            **entity_keys,
        },
        batch_partition=partition,
        # The signature's types: an integer feature is logged as an integer, not as the float the
        # pipeline was fed (a value like 3.5 in an integer column fails here, naming the column).
        feature_types={**loaded.schema.log_types, **dict.fromkeys(entity_keys, "string")},
        classes=loaded.classes if probabilities is not None else None,
        probabilities=probabilities,
    )
    replaced = replace_batch_partition(uc, partition, batch, uri=log_uri, logged_at=logged_at)
    numeric = [p for p in predictions if isinstance(p, int | float)]
    return ScoringResult(
        use_case=uc.name,
        partition=partition,
        model_name=loaded.model_name,
        model_version=loaded.version,
        model_uri=loaded.uri,
        rows=len(predictions),
        replaced_rows=replaced,
        prediction_mean=sum(numeric) / len(numeric) if numeric else None,
        log_location=prediction_store(log_uri).describe(),
    )


def join_store(uc: UseCase, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[Any]], list[datetime]]:
    """A store-backed use case's rows with their store features joined as training joins them: from the
    offline store, as of each row's event time (its date at its hour). Returns the joined rows, the
    entity keys to log beside the features (the skew check looks them up again) and the event times."""
    from mlops.data.store_features import event_times, join_store_features

    times = event_times(uc, frame).dt.tz_convert("UTC").dt.tz_localize(None)
    joined, _ = join_store_features(uc, frame.reset_index(drop=True))
    section = uc.feature_store
    assert section is not None
    keys = {k: [str(v) for v in joined[k]] for k in section.entity_keys}
    return joined, keys, [t.to_pydatetime() for t in times]


def _check_partition_and_source(partition: str, source: str) -> None:
    if not partition or len(partition) > 200:
        raise ValueError("partition must be a non-empty label of at most 200 characters, e.g. a date 2011-05-01")
    if source not in ("batch", "replay"):
        raise ValueError(f"batch scoring writes source 'batch' or 'replay', got {source!r}")


def _row_ids(partition: str, frame: pd.DataFrame, ids: Sequence[Any] | None, id_column: str | None) -> list[str]:
    """`ids`, else `frame[id_column]`, else `<partition>:<row number>`, all as text, one per row."""
    if ids is not None:
        row_ids = [str(i) for i in ids]
    elif id_column is not None:
        if id_column not in frame.columns:
            raise ValueError(f"id_column {id_column!r} is not a column of the frame")
        row_ids = [str(i) for i in frame[id_column]]
    else:
        row_ids = [f"{partition}:{i}" for i in range(len(frame))]
    if len(row_ids) != len(frame):
        raise ValueError(f"ids has {len(row_ids)} entries for {len(frame)} rows")
    return row_ids


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
