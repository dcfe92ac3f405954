"""One answered request's log entry, and its encoding in the spool.

Its own module because both the log writer (which batches entries into the store) and the
spool (which frames their encodings on disk) need it, and neither should import the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from mlops.naming import ROLE_CHAMPION


@dataclass(frozen=True)
class LogEntry:
    """One request's predictions, as cheap to build as possible (rows stay rows)."""

    use_case: str
    model_name: str
    model_version: str
    source: str
    ids: list[str]
    event_times: list[datetime]
    names: list[str]
    rows: list[list[Any]]
    predictions: list[Any]
    feature_types: dict[str, str] | None = None
    """Feature -> kind from the model signature (InputSchema.log_types)."""
    classes: tuple[Any, ...] | None = None
    probabilities: list[list[float]] | None = None
    role: str = ROLE_CHAMPION


def encode_entry(entry: LogEntry) -> bytes:
    """One request's log entry as JSON (orjson writes datetimes as ISO 8601, numpy scalars as numbers)."""
    return orjson.dumps(
        [entry.use_case, entry.model_name, entry.model_version, entry.source, entry.role, entry.ids,
         entry.event_times, entry.names, entry.rows, entry.predictions, entry.feature_types,
         list(entry.classes) if entry.classes is not None else None, entry.probabilities],
        option=orjson.OPT_SERIALIZE_NUMPY,
    )  # fmt: skip


def decode_entry(payload: bytes) -> LogEntry:
    (use_case, model_name, version, source, role, ids, times, names, rows, predictions, types, classes,
     probabilities) = orjson.loads(payload)  # fmt: skip
    return LogEntry(
        use_case=use_case,
        model_name=model_name,
        model_version=version,
        source=source,
        ids=ids,
        event_times=[datetime.fromisoformat(t) for t in times],
        names=names,
        rows=rows,
        predictions=predictions,
        feature_types=types,
        classes=tuple(classes) if classes is not None else None,
        probabilities=probabilities,
        role=role,
    )
