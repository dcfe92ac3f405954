"""Summaries computed as log partitions land, so the monitoring run merges them instead of reading rows.

A window at volume is judged from per-day summaries (`mlops.monitoring.summaries`) whose bins
come from the champion's reference. Without this module they are computed by the first
monitoring run that needs them, on its critical path (a 100M-row window: ~76 s of an 89 s
run). Here they are computed as the rows land, by the DAG that lands them or right after:

- the scoring DAG (`score_<use case>`) summarises the day folders of the partition it wrote;
- the service's log (a file a second) is summarised by `summarize_log_<use case>`, hourly:
  each run extends the summaries of the day folders of its interval (and the day before, for
  late files) with the files that landed since.

The bins are those of the reference of the model version that is `@champion` when the rows
land, built by the same steps as the monitoring run (`run.summary_bins`); each day's summary
records the version and reference it was built against (`built_against`). The monitoring run
computes its own bins and reuses a day's summary only under the same key (so a new champion,
hence new bins, makes it summarise afresh): its verdicts stay those of the exact path. A use
case whose windows stay under `monitoring.exact_below_rows` never reads summaries: nothing is
summarised for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase

if TYPE_CHECKING:
    import pandas as pd

# Rows of the landed files the bins' column checks look at (which columns hold values, their types).
BINS_ROWS = 100_000


@dataclass(frozen=True)
class LandedSummaries:
    """What one landing step summarised: per day folder, the files covered and the files read this time."""

    use_case: str
    days: list[dict[str, Any]] = field(default_factory=list)
    bins_key: str | None = None
    built_against: dict[str, Any] | None = None
    skipped: str | None = None
    """Why nothing was summarised (no champion, an SQL log, a use case below volume, no file)."""

    @property
    def files_summarised(self) -> int:
        return sum(int(d["summarised"]) for d in self.days)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files_summarised": self.files_summarised}


def champion_reference(use_case: UseCase) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The `@champion`'s reference, scored by it as the monitoring run scores it, and what it was built from.

    None before the first promotion.
    """
    from mlops.mlflow import registry
    from mlops.monitoring.assessment import scored_reference
    from mlops.monitoring.reference import read_reference, reference_from_lineage

    champion = registry.champion(use_case.model_name)
    if champion is None:
        return None
    path = reference_from_lineage({**champion.lineage, **champion.tags})
    reference, _ = scored_reference(use_case, champion.name, champion.version, read_reference(path))
    return reference, {"model_version": champion.version, "reference": str(path)}


def summarize_landed(
    use_case: UseCase, folders: Sequence[Path], reference: pd.DataFrame, built_against: Mapping[str, Any]
) -> LandedSummaries:
    """Bring the summaries of `folders` (day folders of the Parquet log) up to date for `reference`'s bins.

    A day already covered is read, not written; a day with new files is extended with them
    only; a day whose files went (a batch partition replaced) is summarised afresh.
    """
    from mlops.monitoring import summaries
    from mlops.monitoring.run import summary_bins

    files, skipped = _files_at_volume(use_case, folders)
    if skipped is not None:
        return LandedSummaries(use_case.name, skipped=skipped)
    bins = summary_bins(use_case, reference, _landed_rows(use_case, files))
    origin = {"by": "landing", **built_against, "bins_key": bins.key}
    _, updates = summaries.update_day_summaries(files, bins, origin)
    days = [
        {"folder": u.folder.name, "files": u.files, "summarised": u.summarised, "afresh": u.afresh} for u in updates
    ]
    return LandedSummaries(use_case.name, days, bins.key, dict(origin))


def _files_at_volume(use_case: UseCase, folders: Sequence[Path]) -> tuple[list[Path], str | None]:
    """The folders' log files, and why not to summarise them (None: summarise)."""
    from mlops.monitoring import volume
    from mlops.predictionlog.stores import finished_files

    files = [f for folder in folders for f in finished_files(folder.glob("*.parquet"))]
    if not files:
        return files, "no log file in the landed day folders"
    rows, cfg = volume.count_rows(files), use_case.monitoring
    # A window of such days below the exact path's size is read whole: its summaries would never be read.
    if rows * cfg.window_days < cfg.exact_below_rows:
        return files, (
            f"{rows} rows landed: {cfg.window_days} days of them stay under monitoring.exact_below_rows "
            f"({cfg.exact_below_rows}), and monitoring reads such windows whole"
        )
    return files, None


def _landed_rows(use_case: UseCase, files: Sequence[Path]) -> pd.DataFrame:
    """Up to BINS_ROWS rows of the columns monitoring reads, from the landed files."""
    import pyarrow.dataset as ds

    from mlops.monitoring.performance import MODEL_VERSION, PREDICTION, ROLE
    from mlops.naming import PROBA_COLUMN_PREFIX

    dataset = ds.dataset([str(f) for f in files], format="parquet")
    names = dataset.schema.names
    keys = list(use_case.feature_store.entity_keys) if use_case.feature_store is not None else []
    proba = [c for c in names if c.startswith(PROBA_COLUMN_PREFIX)]
    wanted = [*use_case.features.all, *keys, PREDICTION, *proba, ROLE, MODEL_VERSION]
    return dataset.head(BINS_ROWS, columns=[c for c in dict.fromkeys(wanted) if c in names]).to_pandas()


def _log_root(use_case: UseCase) -> Path | None:
    from mlops.monitoring import volume

    roots = volume.parquet_roots(use_case.name)
    return roots[0] if roots is not None else None


def _with_champion(use_case: UseCase, folders: Sequence[Path]) -> LandedSummaries:
    if not folders:
        return LandedSummaries(use_case.name, skipped="no day folder of the log to summarise")
    _, skipped = _files_at_volume(use_case, folders)  # before the champion's model is loaded
    if skipped is not None:
        return LandedSummaries(use_case.name, skipped=skipped)
    found = champion_reference(use_case)
    if found is None:
        return LandedSummaries(use_case.name, skipped=f"no @champion of {use_case.model_name}: no reference to bin by")
    reference, built_against = found
    return summarize_landed(use_case, folders, reference, built_against)


def summarize_partition(use_case: UseCase, partition: str) -> LandedSummaries:
    """Summarise the day folders holding batch partition `partition` (what the scoring DAG just wrote)."""
    from mlops.predictionlog.stores import ParquetStore, prediction_store

    store = prediction_store()
    if not isinstance(store, ParquetStore):
        return LandedSummaries(use_case.name, skipped="an SQL log: the database summarises it at monitoring time")
    return _with_champion(use_case, store.partition_folders(use_case.name, partition))


def summarize_interval(use_case: UseCase, start: datetime, end: datetime) -> LandedSummaries:
    """Summarise the log's day folders of [start - 1 day, end): what the service logged in the interval,
    and the day before's files that landed late (a day's summary is extended, never read twice)."""
    from mlops.monitoring import volume

    root = _log_root(use_case)
    if root is None:
        return LandedSummaries(use_case.name, skipped="an SQL log: the database summarises it at monitoring time")
    return _with_champion(use_case, volume.day_folders(root, start - timedelta(days=1), end))
