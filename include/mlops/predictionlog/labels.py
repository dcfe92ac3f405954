"""Ground truth that arrives after the prediction: validated, stored beside its prediction, one label per id.

Every way a label comes in (`POST /labels`, the ingest_labels DAG's landing folder and SQL
query, the replay) goes through `write_labels`, which

- validates the batch (`validate_labels`): the columns, the label's type and domain from
  the use case's config, duplicated ids, a label whose event time precedes its prediction's;
  a refused batch raises `LabelError` naming every bad row and writes nothing;
- looks each id up in the prediction log (`lookup.prediction_times`) and stores the label
  in the partition of its *prediction's* event date, so a window read finds it beside the
  predictions whatever event time the label was stamped with. A label whose id the log
  does not hold (yet) goes to the `unmatched` partition, is counted in
  `LabelWrite.unknown_ids`, and joins as soon as its prediction is logged;
- replaces: a re-sent label for an id removes the earlier one (the partition is rewritten
  without it), so the store holds one label per id and a re-run of an ingestion adds nothing.

The class set of a classifier's labels: `labels.classes` in the config when given, else
the classes of the logged predictions' probability columns (`proba__<class>`, the classes
the model was trained on); with neither, a class label is only checked to be an integer
or a string.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops._io import file_lock
from mlops.naming import PROBA_COLUMN_PREFIX
from mlops.predictionlog.frames import TimeLike, to_timestamp, utc_now
from mlops.predictionlog.lookup import prediction_times
from mlops.predictionlog.stores import (
    ParquetStore,
    PredictionLogError,
    SqlStore,
    finished_files,
    is_sql_uri,
    label_store,
    prediction_store,
    use_case_name,
)

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import UseCase

LABEL_COLUMNS = ("request_id", "label", "event_time", "prediction_time", "arrived_at")
"""`event_time` is the label's own (as sent, else its prediction's); `prediction_time` its
prediction's event time, the partition key (NaT while the prediction is unknown)."""
UNMATCHED = "unmatched"
"""The Parquet partition (folder) of labels whose prediction the log does not hold yet."""
_MAX_LISTED = 10


@dataclass(frozen=True)
class LabelWrite:
    """What one `write_labels` call did."""

    written: int
    """Labels stored by this call (each id once)."""
    replaced: int
    """Of those, ids that already had a label, now replaced."""
    unknown_ids: list[str] = field(default_factory=list)
    """Ids the prediction log does not hold (yet): stored as unmatched, joined once the prediction arrives."""

    def to_dict(self) -> dict[str, Any]:
        return {"written": self.written, "replaced": self.replaced, "unknown_ids": list(self.unknown_ids)}


@dataclass(frozen=True)
class LabelProblem:
    row: int | None
    """Position in the batch, from 0 (None: the batch as a whole)."""
    field: str
    message: str
    request_id: str | None = None


class LabelError(ValueError):
    """A batch of labels was refused, nothing of it written; the message names each bad row and field."""

    def __init__(self, problems: Sequence[LabelProblem], total: int | None = None) -> None:
        self.problems = list(problems)
        self.total = total
        super().__init__(describe_problems(self.problems, total))


def describe_problems(
    problems: Sequence[LabelProblem], total: int | None = None, *, row_word: str = "row", row_offset: int = 0
) -> str:
    """`refused 2 of 5 labels (nothing written): row 1 (id 'b') label: ...; ...` with what to do.

    A file's rows read better as its lines: `row_word="line", row_offset=2` (a header line, counted from 1).
    """
    shown = []
    for problem in problems[:_MAX_LISTED]:
        where = "" if problem.row is None else f"{row_word} {problem.row + row_offset}"
        if problem.request_id is not None:
            where += f" (id {problem.request_id!r})"
        shown.append(f"{where + ' ' if where else ''}{problem.field}: {problem.message}")
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    rows = {p.row for p in problems if p.row is not None}
    head = f"refused {len(rows)} of {total} labels" if total is not None and rows else "refused the labels"
    return f"{head} (nothing of the batch was written): {'; '.join(shown)}{more}. Fix these and send the batch again"


# --------------------------------------------------------------------------- validation


def validate_labels(use_case: UseCase | str, frame: pd.DataFrame, *, log_uri: str | None = None) -> pd.DataFrame:
    """Check a batch of labels and return it as stored: `request_id, label, event_time, prediction_time`.

    `frame` has columns `id` (or `request_id`) and `label`, optionally `event_time`; other
    columns are ignored. Raises `LabelError` naming every bad row: a missing id or label,
    a label of the wrong type or outside the class set, an id twice in the batch (send
    one label per id; a later batch replaces it), an event time before the prediction's.
    A missing event time becomes the prediction's.
    """
    frame = _columns(frame)
    ids = [_id_text(v) for v in frame["request_id"]]
    found = prediction_times(
        use_case_name(use_case), [i for i in ids if i], days=_days(frame["event_time"]), uri=log_uri
    )
    return _checked(use_case, frame, found, log_uri)


def _columns(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    columns = set(frame.columns)
    problems = []
    if {"id", "request_id"} <= columns:
        problems.append(LabelProblem(None, "id", "both id and request_id are given; keep one column"))
    if not columns & {"id", "request_id"}:
        problems.append(LabelProblem(None, "id", "column missing; add an id (or request_id) column"))
    if "label" not in columns:
        problems.append(LabelProblem(None, "label", "column missing; add a label column"))
    if problems:
        got = ", ".join(map(str, frame.columns)) or "none"
        problems[-1] = LabelProblem(None, problems[-1].field, f"{problems[-1].message} (columns given: {got})")
        raise LabelError(problems)
    id_column = "id" if "id" in columns else "request_id"
    times = frame["event_time"] if "event_time" in columns else pd.Series([None] * len(frame), dtype=object)
    return pd.DataFrame(
        {
            "request_id": list(frame[id_column]),
            "label": list(frame["label"]),
            "event_time": list(times),
        }
    )


def _id_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a CSV column of numeric ids with a gap is read as floats
    return str(value).strip()


def _days(times: Any) -> list[date]:
    days = set()
    for value in times:
        try:
            moment = _time(value)
        except ValueError:
            continue
        if moment is not None:
            days.add(moment.date())
    return sorted(days)


def _time(value: Any) -> datetime | None:
    """A naive UTC datetime from what a label's event time may be sent as; None when absent."""
    import pandas as pd

    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        # The log keeps microseconds (Python datetimes); sub-microsecond digits mean nothing here.
        value = value.to_pydatetime(warn=False)
    if isinstance(value, datetime | date | str):
        if isinstance(value, str) and not value.strip():
            return None
        return to_timestamp(value.strip() if isinstance(value, str) else value)
    raise ValueError(f"{value!r} is not a date or time")


def _checked(
    use_case: UseCase | str, frame: pd.DataFrame, found: dict[str, datetime], log_uri: str | None
) -> pd.DataFrame:
    import pandas as pd

    config = _config(use_case)
    task = config.task if config is not None else None
    classes = _class_set(config, log_uri) if task == "classification" else None
    problems: list[LabelProblem] = []
    ids: list[str] = []
    labels: list[Any] = []
    times: list[datetime | None] = []
    predicted: list[datetime | None] = []
    first_row: dict[str, int] = {}
    for row, (raw_id, raw_label, raw_time) in enumerate(
        zip(frame["request_id"], frame["label"], frame["event_time"], strict=True)
    ):
        request_id = _id_text(raw_id)
        before = len(problems)
        if not request_id:
            problems.append(LabelProblem(row, "id", "missing; send the request id the prediction was answered with"))
        elif request_id in first_row:
            message = (
                f"appears in rows {first_row[request_id]} and {row}; send one label per id in a batch "
                "(a later batch may replace it)"
            )
            problems.append(LabelProblem(row, "id", message, request_id))
        first_row.setdefault(request_id, row)
        label, label_problem = _label(raw_label, task, classes)
        if label_problem:
            problems.append(LabelProblem(row, "label", label_problem, request_id or None))
        try:
            moment = _time(raw_time)
        except ValueError:
            moment = None
            message = f"{raw_time!r} is not an ISO date or time such as 2011-05-01T13:00; fix it or leave it out"
            problems.append(LabelProblem(row, "event_time", message, request_id or None))
        prediction_time = found.get(request_id)
        if moment is not None and prediction_time is not None and moment < prediction_time:
            message = (
                f"{moment.isoformat()} is before its prediction's event time {prediction_time.isoformat()}; "
                "a label cannot precede its prediction: send the prediction's event time or leave event_time out"
            )
            problems.append(LabelProblem(row, "event_time", message, request_id))
        if len(problems) == before:
            ids.append(request_id)
            labels.append(label)
            times.append(moment if moment is not None else prediction_time)
            predicted.append(prediction_time)
    if problems:
        raise LabelError(problems, total=len(frame))
    return pd.DataFrame(
        {
            "request_id": pd.Series(ids, dtype=object),
            "label": _label_column(labels, task),
            "event_time": pd.to_datetime(pd.Series(times, dtype=object)).astype("datetime64[ns]"),
            "prediction_time": pd.to_datetime(pd.Series(predicted, dtype=object)).astype("datetime64[ns]"),
        }
    )


def _config(use_case: UseCase | str) -> UseCase | None:
    """The use case's config; None for a bare name without one (then only the structure is checked)."""
    from mlops.config import ConfigError, find_use_case

    if not isinstance(use_case, str):
        return use_case
    try:
        return find_use_case(use_case)
    except ConfigError:
        return None


def _class_key(value: Any) -> str:
    """One spelling per class whatever the sender's type: 1, 1.0 and "1" are the same class."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item"):  # numpy scalars
        return _class_key(value.item())
    return str(value).strip()


def _class_set(config: UseCase | None, log_uri: str | None) -> dict[str, Any] | None:
    """Class key -> class label as the model returns it; None when neither config nor log names the classes."""
    if config is None:
        return None
    classes: list[Any] | None = list(config.labels.classes) if config.labels.classes is not None else None
    if classes is None:
        logged = logged_classes(config.name, log_uri)
        if logged:
            # The column names are text; a class set of integers is stored as integers, as predicted.
            classes = [int(c) for c in logged] if all(_is_int_text(c) for c in logged) else logged
    if not classes:
        return None
    return {_class_key(c): c for c in classes}


def _is_int_text(text: str) -> bool:
    return text.lstrip("-").isdigit()


def logged_classes(use_case: str, log_uri: str | None = None) -> list[str]:
    """The classes the log holds probabilities for (`proba__<class>` columns), from the schema only."""
    store = prediction_store(log_uri)
    names: list[str] = []
    if isinstance(store, ParquetStore):
        import pyarrow.parquet as pq

        files = finished_files((store.root / use_case).glob("date=*/*.parquet"))
        for path in reversed(files):  # the newest partition: the current model's classes
            try:
                names = pq.read_schema(path).names
                break
            except FileNotFoundError:
                continue
    elif isinstance(store, SqlStore):
        import sqlalchemy as sa

        with store.engine.connect() as conn:
            inspector = sa.inspect(conn)
            if inspector.has_table(store.table_name(use_case)):
                names = [c["name"] for c in inspector.get_columns(store.table_name(use_case))]
    return [n[len(PROBA_COLUMN_PREFIX) :] for n in names if n.startswith(PROBA_COLUMN_PREFIX)]


def _label(value: Any, task: str | None, classes: dict[str, Any] | None) -> tuple[Any, str | None]:
    """(the label as stored, None) or (None, what is wrong with it)."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, "missing; send the observed outcome"
    if task == "regression" or (task is None and _is_number(value)):
        number = _number(value)
        if number is None:
            return None, f"{value!r} is not a number; a regression label is the observed value, a finite number"
        if not math.isfinite(number):
            return None, f"{value!r} is not finite; send the observed value"
        return number, None
    if classes is not None:
        key = _class_key(value)
        if key not in classes:
            shown = ", ".join(repr(c) for c in classes.values())
            return None, f"{value!r} is not one of the classes [{shown}]; send one of them (config labels.classes)"
        return classes[key], None
    if isinstance(value, float) and not value.is_integer():
        return None, f"{value!r} is not a class label; a class is an integer or a string"
    if isinstance(value, int | float):
        return int(value), None
    if isinstance(value, str) and value.strip():
        return value.strip(), None
    return None, f"{value!r} is not a class label; a class is an integer or a string"


def _is_number(value: Any) -> bool:
    return _number(value) is not None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None  # True is an int in Python, but not an observed quantity
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _label_column(labels: list[Any], task: str | None) -> Any:
    import pandas as pd

    if all(isinstance(v, float) for v in labels) and labels:
        return pd.Series(labels, dtype="float64")
    if labels and all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        return pd.Series(labels, dtype="int64")
    # Mixed text and numbers cannot share a Parquet column: classes are then stored as text.
    if any(isinstance(v, str) for v in labels):
        return pd.Series([str(v) for v in labels], dtype=object)
    return pd.Series(labels, dtype=object)


# --------------------------------------------------------------------------- writing


def write_labels(
    use_case: UseCase | str,
    ids: Sequence[Any],
    labels: Sequence[Any],
    event_times: Sequence[TimeLike | None] | None = None,
    *,
    uri: str | None = None,
    arrived_at: datetime | None = None,
    log_uri: str | None = None,
) -> LabelWrite:
    """Validate and store ground truth that arrived later; it joins the predictions by request id.

    `event_times` is optional: a label's event time defaults to its prediction's. `uri` is
    the labels store (default: the log's database when the log is SQL, else
    settings.labels_dir); `log_uri` the prediction log the ids are looked up in (default:
    `uri` when it is a database, else settings.prediction_log_uri). A re-sent label
    replaces the earlier one (`LabelWrite.replaced`); ids the log does not hold are stored
    as unmatched and listed in `LabelWrite.unknown_ids`. Raises `LabelError` (nothing
    written) for a bad batch, `PredictionLogError` when a store fails.
    """
    import pandas as pd

    if event_times is not None and not (len(ids) == len(labels) == len(event_times)):
        raise ValueError(
            f"ids ({len(ids)}), labels ({len(labels)}) and event_times ({len(event_times)}) differ in length"
        )
    if len(ids) != len(labels):
        raise ValueError(f"ids ({len(ids)}) and labels ({len(labels)}) differ in length")
    if log_uri is None and uri is not None and is_sql_uri(uri):
        log_uri = uri
    raw = pd.DataFrame(
        {
            "request_id": list(ids),
            "label": list(labels),
            "event_time": list(event_times) if event_times is not None else [None] * len(ids),
        }
    )
    frame = validate_labels(use_case, raw, log_uri=log_uri)
    frame["arrived_at"] = pd.Timestamp(arrived_at or utc_now())
    name = use_case_name(use_case)
    store = label_store(uri, log_uri)
    unknown = frame.loc[frame["prediction_time"].isna(), "request_id"].tolist()
    try:
        replaced = _upsert(store, name, frame)
    except Exception as exc:
        raise PredictionLogError(f"cannot write {len(frame)} labels of {name} to {store.describe()}: {exc}") from exc
    return LabelWrite(written=len(frame), replaced=replaced, unknown_ids=unknown)


def write_label_frame(
    use_case: UseCase | str,
    frame: pd.DataFrame,
    *,
    uri: str | None = None,
    arrived_at: datetime | None = None,
    log_uri: str | None = None,
) -> LabelWrite:
    """`write_labels` for a frame with columns id (or request_id), label and optionally event_time.

    A missing column is a `LabelError` naming it (and the columns found); other columns are ignored.
    """
    rows = _columns(frame)
    times = None if rows["event_time"].isna().all() else list(rows["event_time"])
    return write_labels(
        use_case, list(rows["request_id"]), list(rows["label"]), times, uri=uri, arrived_at=arrived_at, log_uri=log_uri
    )


def _upsert(store: Any, use_case: str, frame: pd.DataFrame) -> int:
    if frame.empty:
        return 0
    if isinstance(store, SqlStore):
        return _sql_upsert(store, use_case, frame)
    if isinstance(store, ParquetStore):
        return _parquet_upsert(store.root / use_case, frame)
    raise TypeError(f"labels cannot be stored in {store.describe()}")


def _partition_of(prediction_time: Any) -> str:
    import pandas as pd

    return UNMATCHED if pd.isna(prediction_time) else f"date={prediction_time:%Y-%m-%d}"


def _parquet_upsert(base: Path, frame: pd.DataFrame) -> int:
    """Write the labels into their partitions and drop earlier labels of the same ids; returns ids replaced.

    The earlier label of an id lies in its prediction's partition or, if it came before the
    prediction, in `unmatched`: only those partitions are searched, by their id column.
    A partition holding a replaced id is rewritten without it (one compacted file), so
    re-sending never grows the store. The new files are renamed into place first: a reader
    in between sees both labels and keeps the later arrival, never none.
    """
    partitions = frame.groupby(frame["prediction_time"].map(_partition_of), sort=True)
    ids = set(frame["request_id"])
    with file_lock(base / ".labels.lock"):
        searched = sorted({name for name, _ in partitions} | {UNMATCHED})
        stale = {name: _files_with(base / name, ids) for name in searched}
        replaced = set().union(*(found for _, found in stale.values()))
        for name, part in partitions:
            _put(base / name, part)
        for name, (files, _) in stale.items():
            if files:
                _rewrite_without(base / name, files, ids)
    return len(replaced)


def _files_with(folder: Path, ids: set[str]) -> tuple[list[Path], set[str]]:
    """The label files of `folder` holding any of `ids`, and which of the ids they hold."""
    import pyarrow.parquet as pq

    files, found = [], set()
    wanted = sorted(ids)
    for path in finished_files(folder.glob("*.parquet")):
        held = set(
            pq.read_table(path, columns=["request_id"], filters=[("request_id", "in", wanted)])[
                "request_id"
            ].to_pylist()
        )
        if held:
            files.append(path)
            found |= {str(i) for i in held}
    return files, found


def _put(folder: Path, frame: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"labels__{os.getpid()}__{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".tmp-{name}"
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    return folder / name


def _rewrite_without(folder: Path, files: list[Path], ids: set[str]) -> None:
    import pandas as pd

    kept = [f[~f["request_id"].astype(str).isin(ids)] for f in map(pd.read_parquet, files)]
    kept = [f for f in kept if not f.empty]
    if kept:
        _put(folder, pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0])
    for path in files:
        path.unlink()


def _sql_upsert(store: SqlStore, use_case: str, frame: pd.DataFrame) -> int:
    """One transaction: find and delete the earlier labels of these ids, insert the new ones."""
    import sqlalchemy as sa

    table = store.table_name(use_case)
    ids = sorted(set(frame["request_id"]))
    replaced: set[str] = set()
    with store.engine.begin() as conn:
        if sa.inspect(conn).has_table(table):
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            for start in range(0, len(ids), 500):  # under every database's bound-parameter limit
                chunk = ids[start : start + 500]
                where = reflected.c.request_id.in_(chunk)
                replaced |= {str(r) for r in conn.scalars(sa.select(reflected.c.request_id).where(where).distinct())}
                conn.execute(sa.delete(reflected).where(where))
        store._insert(conn, table, frame)
    return len(replaced)


def settle_unmatched(use_case: UseCase | str, *, uri: str | None = None, log_uri: str | None = None) -> int:
    """Move unmatched labels whose prediction has since been logged beside it; returns how many moved.

    Unmatched labels join anyway (every window read reads them), so this changes no
    result: it keeps the unmatched partition, read by every window, small. The
    ingest_labels DAG runs it after each ingestion. A label's missing event time becomes
    its prediction's, as at write time.
    """
    name = use_case_name(use_case)
    if log_uri is None and uri is not None and is_sql_uri(uri):
        log_uri = uri
    store = label_store(uri, log_uri)
    try:
        if isinstance(store, SqlStore):
            return _sql_settle(store, name, log_uri)
        if isinstance(store, ParquetStore):
            return _parquet_settle(store.root / name, name, log_uri)
    except Exception as exc:
        raise PredictionLogError(f"cannot settle unmatched labels of {name} in {store.describe()}: {exc}") from exc
    return 0


def _parquet_settle(base: Path, use_case: str, log_uri: str | None) -> int:
    import pandas as pd

    folder = base / UNMATCHED
    with file_lock(base / ".labels.lock"):
        files = finished_files(folder.glob("*.parquet"))
        if not files:
            return 0
        waiting = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        found = prediction_times(use_case, waiting["request_id"].astype(str).tolist(), uri=log_uri)
        if not found:
            return 0
        matched = waiting[waiting["request_id"].astype(str).isin(found.keys())].copy()
        matched["prediction_time"] = pd.to_datetime(matched["request_id"].astype(str).map(found))
        matched["event_time"] = pd.to_datetime(matched["event_time"]).fillna(matched["prediction_time"])
        for name, part in matched.groupby(matched["prediction_time"].map(_partition_of), sort=True):
            _put(base / name, part)
        _rewrite_without(folder, files, set(found))
    return len(matched)


def _sql_settle(store: SqlStore, use_case: str, log_uri: str | None) -> int:
    import sqlalchemy as sa

    table = store.table_name(use_case)
    with store.engine.begin() as conn:
        if not sa.inspect(conn).has_table(table):
            return 0
        reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
        if "prediction_time" not in reflected.c:
            return 0
        unmatched = reflected.c.prediction_time.is_(None)
        waiting = [str(i) for i in conn.scalars(sa.select(reflected.c.request_id).where(unmatched))]
        found = prediction_times(use_case, waiting, uri=log_uri)
        for request_id, moment in found.items():
            where = sa.and_(reflected.c.request_id == request_id, unmatched)
            conn.execute(
                sa.update(reflected)
                .where(where)
                .values(prediction_time=moment, event_time=sa.func.coalesce(reflected.c.event_time, moment))
            )
    return len(found)


# --------------------------------------------------------------------------- reading


def read_labels(
    use_case: UseCase | str, start: TimeLike | None = None, end: TimeLike | None = None, *, uri: str | None = None
) -> pd.DataFrame:
    """The labels that can join predictions with event time in [start, end), one per request id (latest arrival).

    That is the labels stored in the window's partitions (by their prediction's event
    date) plus the unmatched ones (their prediction was not logged when they arrived);
    a label's own event time does not matter. Columns: LABEL_COLUMNS.
    """
    import pandas as pd

    name = use_case_name(use_case)
    lo = to_timestamp(start) if start is not None else None
    hi = to_timestamp(end) if end is not None else None
    store = label_store(uri)
    try:
        if isinstance(store, SqlStore):
            frame = _sql_read(store, name, lo, hi)
        elif isinstance(store, ParquetStore):
            frame = _parquet_read(store.root / name, lo, hi)
        else:
            frame = store.read(name, lo, hi)
    except Exception as exc:
        raise PredictionLogError(f"cannot read labels of {name} from {store.describe()}: {exc}") from exc
    if frame.empty:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in LABEL_COLUMNS})
        empty["arrived_at"] = pd.Series(dtype="datetime64[ns]")
        return empty
    for column in LABEL_COLUMNS:
        if column not in frame:  # written before labels had prediction_time
            frame[column] = pd.NaT
    frame["request_id"] = frame["request_id"].astype(str)
    frame["arrived_at"] = pd.to_datetime(frame["arrived_at"], format="mixed")
    frame = frame.sort_values("arrived_at", kind="stable").drop_duplicates("request_id", keep="last")
    return frame[list(LABEL_COLUMNS)].reset_index(drop=True)


def _parquet_read(base: Path, lo: datetime | None, hi: datetime | None) -> pd.DataFrame:
    import pandas as pd

    folders = [base / UNMATCHED]
    for folder in sorted(base.glob("date=*")):
        try:
            day = datetime.strptime(folder.name[5:], "%Y-%m-%d")
        except ValueError:
            continue
        if (lo is None or day + timedelta(days=1) > lo) and (hi is None or day < hi):
            folders.append(folder)
    frames = []
    for folder in folders:
        for path in finished_files(folder.glob("*.parquet")):
            try:
                frames.append(pd.read_parquet(path))
            except FileNotFoundError:
                continue  # rewritten by a concurrent replacement between listing and reading
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _sql_read(store: SqlStore, use_case: str, lo: datetime | None, hi: datetime | None) -> pd.DataFrame:
    import pandas as pd
    import sqlalchemy as sa

    table = store.table_name(use_case)
    with store.engine.connect() as conn:
        if not sa.inspect(conn).has_table(table):
            return pd.DataFrame()
        reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
        query = sa.select(reflected)
        if "prediction_time" in reflected.c and (lo is not None or hi is not None):
            when = reflected.c.prediction_time
            in_window = sa.and_(*([when >= lo] if lo is not None else []), *([when < hi] if hi is not None else []))
            query = query.where(sa.or_(when.is_(None), in_window))
        frame = pd.read_sql(query, conn)
    for column in ("event_time", "prediction_time", "arrived_at"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], format="mixed")
    return frame
