"""The reference data a window is compared with: the champion's training snapshot, found through its lineage.

The champion's training run records the snapshot it trained on (`snapshot_path`, and
`dvc_md5` for DVC), so the reference follows the champion when it changes; it is never
a fixed file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase
from mlops.naming import TAG_DVC_MD5, TAG_SNAPSHOT_PATH
from mlops.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd


class LineageError(LookupError):
    """The champion's run does not lead to a readable training snapshot."""


def _lineage_value(tags: Mapping[str, Any], key: str) -> Any:
    """`key` as a tag or param, as MLflow's search API may prefix it (`params.`, `tags.`), or None."""
    return next((tags[k] for k in (key, f"params.{key}", f"tags.{key}") if tags.get(k)), None)


def reference_from_lineage(tags: Mapping[str, Any], settings: Settings | None = None) -> Path:
    """Path of the champion's training snapshot from its run's tags or params.

    Accepts the run's tags and params merged in one mapping (keys `snapshot_path`,
    optionally prefixed `params.`/`tags.` as MLflow's search API returns them).
    A relative path is tried against the data dir, MLOPS_HOME and the project root.
    """
    settings = settings or get_settings()
    raw = _lineage_value(tags, TAG_SNAPSHOT_PATH)
    if raw is None:
        raise LineageError(
            f"the champion's run has no 'snapshot_path' tag or param (keys found: {sorted(tags)}); "
            "re-register the champion from a training run that logs its snapshot, or pass a reference path by hand"
        )
    path = Path(str(raw)).expanduser()
    candidates = [path] if path.is_absolute() else [settings.data_dir / path, settings.home / path,
                                                      settings.project_root / path]  # fmt: skip
    for candidate in candidates:
        if candidate.exists():
            return candidate
    md5 = _lineage_value(tags, TAG_DVC_MD5)
    restore = f" It is versioned by DVC (md5 {md5}): run `dvc pull` in {settings.data_dir}." if md5 else ""
    raise LineageError(
        f"the champion's training snapshot {raw!r} does not exist (tried {[str(c) for c in candidates]}).{restore}"
    )


def read_reference(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a reference frame from a Parquet file or folder, or a CSV file."""
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"reference data {path} does not exist; check the champion's snapshot_path")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"reference data {path} is neither Parquet nor CSV; write snapshots as .parquet")
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    return frame


# Above this many reference rows only a seeded sample is scored. predict_proba of our
# pipelines runs ~1 s per 100k rows, but a forest or a wide one-hot can be ten times
# that, and a drift test on 50k scored rows already resolves any shift worth acting on
# (the HTML reports render on samples of the same size: run.REPORT_SAMPLE_ROWS).
REFERENCE_SCORE_ROWS = 50_000


def score_reference(
    model: Any, reference: pd.DataFrame, use_case: UseCase, max_rows: int = REFERENCE_SCORE_ROWS, seed: int = 0
) -> pd.DataFrame:
    """The reference with the champion's own answers, in the columns the prediction log has.

    Classifiers get `prediction` (the class as the model returns it) and one
    `proba__<label>` per class in the order of the model's `classes_` (when it has
    `predict_proba`); regressors get `prediction`. A reference of more than `max_rows`
    rows is scored on a seeded sample of that many: the other rows hold missing
    values, which every drift test drops, so the prediction drift compares the window
    with the sample (an int class column then reads as float, 1.0 for 1, which
    compares equal). `model` is an already-loaded scikit-learn model (see
    `load_champion_model`); the features are prepared as training prepared them.
    Raises whatever the model raises (a missing feature column: KeyError).
    """
    import numpy as np
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from mlops.naming import proba_column
    from mlops.training.candidates import THREADS_PER_TASK, model_input

    scored = reference.copy(deep=False)
    rows = reference if len(reference) <= max_rows else reference.sample(n=max_rows, random_state=seed)
    features = model_input(use_case, rows[list(use_case.features.all)])
    with threadpool_limits(limits=THREADS_PER_TASK):
        columns = {"prediction": pd.Series(np.asarray(model.predict(features)), index=rows.index)}
        if use_case.task == "classification" and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(features), dtype="float64")
            for j, label in enumerate(model.classes_):
                columns[proba_column(label)] = pd.Series(proba[:, j], index=rows.index)
    for name, values in columns.items():
        scored[name] = values if len(rows) == len(reference) else values.reindex(reference.index)
    return scored


def load_champion_model(model_name: str, version: str, tracking_uri: str | None = None) -> Any:
    """The scikit-learn pipeline of registered version `version`, loaded the way the service loads it."""
    from mlops.mlflow.models import VersionInfo, download_version, load_sklearn_model

    return load_sklearn_model(download_version(VersionInfo(model_name, version, None, ()), tracking_uri))
