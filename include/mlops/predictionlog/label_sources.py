"""Where labels come from besides `POST /labels`: a landing folder of files, and an SQL query.

The `ingest_labels_<use case>` DAG calls these; they know nothing of Airflow (the SQL
connection arrives as an SQLAlchemy URL). Both write through `write_label_frame`, so a
label ingested twice (a file landed again, a query returning yesterday's rows) replaces
itself and is never doubled.

Landing folder (`labels.path`, default `$MLOPS_HOME/landing/labels/<use case>/`): every
`*.csv` or `*.parquet` file at its top is read, validated and written as one batch, then
moved to `done/`. A file that cannot be read, lacks a column or holds a bad row is moved
to `rejected/` with `<file>.reason.txt` beside it, nothing of it written; the other files
are still processed, and the report lists the rejections so the task can fail with them.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops._io import atomic_write_text
from mlops.predictionlog.frames import utc_now
from mlops.predictionlog.labels import LabelError, LabelWrite, describe_problems, write_label_frame

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import UseCase

log = logging.getLogger(__name__)

LABEL_FILE_SUFFIXES = (".csv", ".parquet")
DONE, REJECTED = "done", "rejected"


class LabelSourceError(ValueError):
    """A label source could not be read or returned bad labels; the message says which and what to do."""


@dataclass(frozen=True)
class FileOutcome:
    file: str
    moved_to: str
    result: LabelWrite | None = None
    reason: str | None = None
    """Why the file was rejected (None: written and moved to done/)."""


@dataclass
class IngestReport:
    """What one ingestion of a use case's labels did: the files, and the totals over every source."""

    use_case: str
    files: list[FileOutcome] = field(default_factory=list)
    results: list[LabelWrite] = field(default_factory=list)

    @property
    def rejected(self) -> list[FileOutcome]:
        return [f for f in self.files if f.reason is not None]

    def totals(self) -> dict[str, Any]:
        unknown = [i for r in self.results for i in r.unknown_ids]
        return {
            "written": sum(r.written for r in self.results),
            "replaced": sum(r.replaced for r in self.results),
            "unknown": len(unknown),
            "unknown_ids": unknown[:20],
            "files_done": len(self.files) - len(self.rejected),
            "files_rejected": [Path(f.file).name for f in self.rejected],
        }

    def summary(self) -> str:
        t = self.totals()
        return (
            f"labels of {self.use_case}: {t['written']} written ({t['replaced']} replaced an earlier label, "
            f"{t['unknown']} for ids the log does not hold yet, kept until their prediction arrives); "
            f"{t['files_done']} file(s) done, {len(t['files_rejected'])} rejected"
        )

    def failure(self) -> str | None:
        """The message a task fails with when a file was rejected (None when none was)."""
        if not self.rejected:
            return None
        reasons = "\n".join(f"- {f.reason} (moved to {f.moved_to})" for f in self.rejected)
        return (
            f"{len(self.rejected)} label file(s) of {self.use_case} rejected, nothing of them written:\n{reasons}\n"
            "Fix each file and land it again; the reasons are also in <file>.reason.txt beside it"
        )


def landed_files(use_case: UseCase) -> list[Path]:
    folder = use_case.labels_landing_dir
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in LABEL_FILE_SUFFIXES)


def read_label_file(path: Path) -> pd.DataFrame:
    """A landed file as a frame; ids stay text (a CSV's `007` is not the number 7)."""
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"id": str, "request_id": str, "event_time": str}, keep_default_na=True)


def ingest_landing(
    use_case: UseCase,
    *,
    uri: str | None = None,
    log_uri: str | None = None,
    arrived_at: datetime | None = None,
    report: IngestReport | None = None,
) -> IngestReport:
    """Write every landed file's labels, moving each to done/ or rejected/ (with the reason)."""
    report = report or IngestReport(use_case.name)
    arrived_at = arrived_at or utc_now()
    for path in landed_files(use_case):
        try:
            frame = read_label_file(path)
        except Exception as exc:  # an unreadable file is the file's fault, whatever the reader raised
            report.files.append(_reject(path, f"{path.name}: cannot be read as {path.suffix[1:]} ({exc})"))
            continue
        try:
            result = write_label_frame(use_case, frame, uri=uri, log_uri=log_uri, arrived_at=arrived_at)
        except LabelError as exc:
            csv = path.suffix.lower() == ".csv"
            reason = describe_problems(
                exc.problems, exc.total, row_word="line" if csv else "row", row_offset=2 if csv else 0
            )
            report.files.append(_reject(path, f"{path.name}: {reason}"))
            continue
        # A store failure (PredictionLogError) propagates with the file left in place: a retry takes it again.
        report.results.append(result)
        report.files.append(FileOutcome(str(path), str(_move(path, DONE, arrived_at)), result=result))
        log.info("%s: %d labels written, %d replaced, %d unknown ids", path.name, result.written,
                 result.replaced, len(result.unknown_ids))  # fmt: skip
    return report


def _reject(path: Path, reason: str) -> FileOutcome:
    moved = _move(path, REJECTED, utc_now())
    atomic_write_text(moved.with_name(f"{moved.name}.reason.txt"), reason + "\n")
    log.warning("rejected %s", reason)
    return FileOutcome(str(path), str(moved), reason=reason)


def _move(path: Path, folder: str, when: datetime) -> Path:
    target = path.parent / folder / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # the same name landed again: keep both, the later one stamped
        target = target.with_name(f"{path.stem}.{when:%Y%m%dT%H%M%S%f}{path.suffix}")
    shutil.move(path, target)
    return target


def ingest_query(
    use_case: UseCase,
    sql_uri: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    uri: str | None = None,
    log_uri: str | None = None,
    arrived_at: datetime | None = None,
) -> LabelWrite:
    """Run `labels.sql.query` against `sql_uri` and write the rows it returns as one batch.

    The query may use the bound parameters `:start` and `:end` (the DAG binds the last
    successful run's time and this run's), so each run reads only what came in since; a
    query without them is re-read whole each run, which the replacing write makes
    harmless, only slower.
    """
    import pandas as pd
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    if use_case.labels.sql is None:
        raise LabelSourceError(f"{use_case.name} has no labels.sql; set labels.sql: {{conn_id, query}}")
    source = use_case.labels.sql
    statement = sa.text(source.query)
    wanted = set(statement.compile().params)
    params = {k: v for k, v in {"start": start, "end": end}.items() if k in wanted}
    missing = sorted(k for k in wanted if params.get(k) is None)
    if missing:
        raise LabelSourceError(
            f"the labels query of {use_case.name} uses :{', :'.join(missing)}, which this run has no value for "
            "; pass start and end, or drop the parameters from labels.sql.query"
        )
    engine = sa.create_engine(sql_uri)
    try:
        with engine.connect() as connection:
            frame = pd.read_sql(statement, connection, params=params)
    except SQLAlchemyError as exc:
        raise LabelSourceError(
            f"the labels query of connection {source.conn_id!r} failed: {exc}; check the query and the connection"
        ) from exc
    finally:
        engine.dispose()
    if "event_time" in frame:
        frame["event_time"] = frame["event_time"].astype(object).where(frame["event_time"].notna(), None)
    try:
        return write_label_frame(use_case, frame, uri=uri, log_uri=log_uri, arrived_at=arrived_at or utc_now())
    except LabelError as exc:
        raise LabelSourceError(
            f"the labels query of connection {source.conn_id!r} returned bad labels, none written: {exc}"
        ) from exc
