"""The window a monitoring run looks at: collected from the prediction log, read back, validated.

Each step reads and writes files and returns a small dataclass, so the monitoring DAG
passes paths through XCom and never a frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops._io import atomic_path
from mlops.config import UseCase
from mlops.monitoring.performance import LABEL, MODEL_VERSION, PREDICTION, ROLE, served_rows
from mlops.monitoring.reports import report_dir
from mlops.naming import PROBA_COLUMN_PREFIX
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

# Besides the features, prediction and label: what the per-version performance, the
# probability drift and the label lag read. Request ids, sources and partitions stay on disk.
LOG_COLUMNS = (ROLE, MODEL_VERSION, "label_arrived_at", "logged_at", "event_time")
# The null check a suite learned from a complete training column; under `serving.missing:
# impute` a null is a served and logged value, judged by the null-share finding instead.
NOT_NULL_EXPECTATION = "expect_column_values_to_not_be_null"


@dataclass(frozen=True)
class Window:
    path: str
    rows: int
    labelled_rows: int
    start: str
    end: str
    sampled: bool = False
    """True above `monitoring.exact_below_rows`: `path` holds a stratified sample and `files` lists the
    window's log files, whose summaries give the decision's numbers (mlops.monitoring.volume)."""
    files: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WindowValidation:
    passed: bool | None
    """None when there was nothing to validate (an empty window)."""
    details: str
    data_docs_page: str | None = None
    """File path of the window's Great Expectations Data Docs page (the task's "Data Docs" link)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_file(use_case: str, run_key: str) -> Path:
    """MLOPS_HOME/monitoring/<use_case>/<run key made safe>/window.parquet."""
    return report_dir(use_case, run_key, get_settings().home / "monitoring") / "window.parquet"


def collect_window(use_case: UseCase, start: datetime, end: datetime, run_key: str) -> Window:
    """Copy the prediction log's window [start, end), with the labels so far, to a run-keyed file.

    A window of `monitoring.exact_below_rows` rows or more is not copied: the file then holds a
    sample, and `files` lists the log files or names the SQL log (mlops.monitoring.volume).
    """
    from mlops.monitoring import volume
    from mlops.predictionlog.predictions import read_predictions

    path = window_file(use_case.name, run_key)
    if volume.window_rows(use_case.name, start, end) >= use_case.monitoring.exact_below_rows:
        listing = volume.sample_window(use_case, start, end, path, use_case.monitoring.sample_rows)
        return Window(
            str(path), listing.rows, listing.labelled_rows, start.isoformat(), end.isoformat(), True,
            str(volume.files_path(path)),
        )  # fmt: skip
    volume.files_path(path).unlink(missing_ok=True)  # a re-run below the size leaves no stale listing
    frame = read_predictions(use_case, start, end, with_labels=True)
    with atomic_path(path) as tmp:  # a re-run overwrites; a crash never leaves a half file under the real name
        frame.to_parquet(tmp, index=False)
    labelled = int(frame[LABEL].notna().sum()) if LABEL in frame.columns else 0
    return Window(str(path), len(frame), labelled, start.isoformat(), end.isoformat())


def read_window(use_case: UseCase, window_path: str | Path) -> pd.DataFrame:
    """The window's columns monitoring uses, where present: the features (and a store-backed use case's
    entity keys, for the skew check), `prediction`, `label`,
    the `proba__<label>` columns, and `role`, `model_version`, `label_arrived_at`,
    `logged_at`, `event_time`; of the rows answered to clients only (a shadow's are left out).

    The prediction log also holds request ids, sources and partitions as strings; a
    10M-row window read whole held 6.2 GB, most of it those Python strings, which no
    report needs (benchmarks/drift/step.py).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    names = pq.read_schema(window_path).names
    proba = [c for c in names if c.startswith(PROBA_COLUMN_PREFIX)]
    keys = list(use_case.feature_store.entity_keys) if use_case.feature_store is not None else []
    wanted = [*use_case.features.all, *keys, PREDICTION, *proba, LABEL, *LOG_COLUMNS]
    present = set(names)
    frame = pd.read_parquet(window_path, columns=[c for c in wanted if c in present])
    served = served_rows(frame)
    return served.reset_index(drop=True) if len(served) != len(frame) else frame


def missing_values_imputed(use_case: UseCase) -> bool:
    """Whether the service answers nulls (`serving.missing: impute`, the default) rather than refusing them."""
    serving = getattr(use_case, "serving", None)
    return getattr(serving, "missing", "impute") == "impute"


def validate_window(use_case: UseCase, window_path: str, run_id: str | None = None) -> WindowValidation:
    """Great Expectations on the window's features: a failure is a data bug, not drift.

    Under `serving.missing: impute` the suite's not-null expectations are left out: a
    null is then a value the service answered, and a rising share is the null-share
    finding of the monitoring run, not a broken feed. `run_id` names the validation run
    in Data Docs; by default the window file's folder, which `collect_window` already
    names after the run.
    """
    from mlops.data import validation

    frame = read_window(use_case, window_path)
    if frame.empty:
        return WindowValidation(None, "empty window: nothing to validate")
    missing = [c for c in use_case.features.all if c not in frame.columns]
    if missing:
        return WindowValidation(False, f"the prediction log lacks feature columns {missing}")
    skip = (NOT_NULL_EXPECTATION,) if missing_values_imputed(use_case) else ()
    outcome = validation.validate_features(
        use_case, frame[use_case.features.all], run_id=run_id or Path(window_path).parent.name, skip_expectations=skip
    )
    return WindowValidation(outcome.success, "; ".join(f.describe() for f in outcome.failed), outcome.data_docs_page)
