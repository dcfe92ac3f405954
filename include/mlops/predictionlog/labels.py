"""Ground truth that arrives after the prediction: written by request id, read back one label per id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops.predictionlog.frames import TimeLike, to_timestamp, utc_now
from mlops.predictionlog.stores import PredictionLogError, label_store, use_case_name

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import UseCase

LABEL_COLUMNS = ("request_id", "label", "event_time", "arrived_at")


def write_labels(
    use_case: UseCase | str,
    ids: Sequence[Any],
    labels: Sequence[Any],
    event_times: Sequence[TimeLike],
    *,
    uri: str | None = None,
    arrived_at: datetime | None = None,
) -> int:
    """Store ground truth that arrived later; it joins the predictions by request id.

    Pass the same event time the prediction was logged with: both stores are
    partitioned by event date, so a window read finds the label next to its prediction.
    A label written twice for an id counts once (the latest arrival wins).
    """
    import pandas as pd

    if not (len(ids) == len(labels) == len(event_times)):
        raise ValueError(
            f"ids ({len(ids)}), labels ({len(labels)}) and event_times ({len(event_times)}) differ in length"
        )
    frame = pd.DataFrame(
        {
            "request_id": [str(i) for i in ids],
            "label": list(labels),
            "event_time": pd.to_datetime([to_timestamp(t) for t in event_times]),
            "arrived_at": pd.Timestamp(arrived_at or utc_now()),
        }
    )
    numeric = pd.to_numeric(frame["label"], errors="coerce")
    if numeric.notna().sum() == frame["label"].notna().sum():
        frame["label"] = numeric.astype("float64")
    name = use_case_name(use_case)
    store = label_store(uri)
    try:
        store.append(name, frame)
    except Exception as exc:
        raise PredictionLogError(f"cannot write {len(frame)} labels of {name} to {store.describe()}: {exc}") from exc
    return len(frame)


def read_labels(
    use_case: UseCase | str, start: TimeLike | None = None, end: TimeLike | None = None, *, uri: str | None = None
) -> pd.DataFrame:
    """Labels with event time in [start, end), one row per request id (latest arrival)."""
    import pandas as pd

    frame = label_store(uri).read(
        use_case_name(use_case), to_timestamp(start) if start else None, to_timestamp(end) if end else None
    )
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LABEL_COLUMNS})
    frame = frame.sort_values("arrived_at", kind="stable").drop_duplicates("request_id", keep="last")
    return frame.reset_index(drop=True)
