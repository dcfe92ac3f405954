"""The reference data a window is compared with: the champion's training snapshot, found through its lineage.

The champion's training run records the snapshot it trained on (`snapshot_path`, and
`dvc_md5` for DVC), so the reference follows the champion when it changes; it is never
a fixed file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
