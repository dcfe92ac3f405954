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
from mlops.monitoring.performance import LABEL, PREDICTION
from mlops.monitoring.reports import report_dir
from mlops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Window:
    path: str
    rows: int
    labelled_rows: int
    start: str
    end: str

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
    """Copy the prediction log's window [start, end), with the labels so far, to a run-keyed file."""
    from mlops.predictionlog.predictions import read_predictions

    frame = read_predictions(use_case, start, end, with_labels=True)
    path = window_file(use_case.name, run_key)
    with atomic_path(path) as tmp:  # a re-run overwrites; a crash never leaves a half file under the real name
        frame.to_parquet(tmp, index=False)
    labelled = int(frame[LABEL].notna().sum()) if LABEL in frame.columns else 0
    return Window(str(path), len(frame), labelled, start.isoformat(), end.isoformat())


def read_window(use_case: UseCase, window_path: str | Path) -> pd.DataFrame:
    """The window's columns monitoring uses: the features, `prediction` and `label`, where present.

    The prediction log also holds request ids, model names and timestamps as strings; a
    10M-row window read whole held 6.2 GB, most of it those Python strings, which no
    report needs (benchmarks/drift/step.py).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    wanted = [*use_case.features.all, PREDICTION, LABEL]
    present = set(pq.read_schema(window_path).names)
    return pd.read_parquet(window_path, columns=[c for c in wanted if c in present])


def validate_window(use_case: UseCase, window_path: str, run_id: str | None = None) -> WindowValidation:
    """Great Expectations on the window's features: a failure is a data bug, not drift.

    `run_id` names the validation run in Data Docs; by default the window file's folder,
    which `collect_window` already names after the run.
    """
    from mlops.data import validation

    frame = read_window(use_case, window_path)
    if frame.empty:
        return WindowValidation(None, "empty window: nothing to validate")
    missing = [c for c in use_case.features.all if c not in frame.columns]
    if missing:
        return WindowValidation(False, f"the prediction log lacks feature columns {missing}")
    outcome = validation.validate_features(
        use_case, frame[use_case.features.all], run_id=run_id or Path(window_path).parent.name
    )
    return WindowValidation(outcome.success, "; ".join(f.describe() for f in outcome.failed), outcome.data_docs_page)
