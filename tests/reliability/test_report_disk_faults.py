"""Fault 3: the reports folder on a full disk, then read-only, then back.

The reports root is a real 64 KiB tmpfs (the suite runs as root); Evidently's
HTML alone is larger, so the disk fills in the middle of a file, as it would in
production. Where mounting is not allowed the test falls back to making every
write under the folder raise ENOSPC at the OS boundary (`os.fdopen`), and says so.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops.config import find_use_case
from mlops.monitoring.reports import ReportWriteError
from mlops.monitoring.run import run_monitoring
from mlops.ui.files import latest_report

pytestmark = pytest.mark.integration
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SmallDisk:
    root: Path
    real: bool
    """True: a tmpfs; False: ENOSPC simulated by patching os.fdopen."""

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.root)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    root = tmp_path / "reports"
    root.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], capture_output=True)
    if done.returncode == 0:
        try:
            yield SmallDisk(root, real=True)
        finally:
            subprocess.run(["umount", "-l", str(root)], capture_output=True)
        return
    real_fdopen = os.fdopen

    def full_disk_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(root)):
            return handle

        def refuse(_: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = refuse
        return handle

    monkeypatch.setattr(os, "fdopen", full_disk_fdopen)
    yield SmallDisk(root, real=False)


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    use_case = find_use_case("bike_sharing", PROJECT_ROOT / "configs")
    raw = pd.read_csv(PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv")
    reference = raw[raw["dteday"] < "2011-03-01"].head(1000).reset_index(drop=True)
    window = raw[(raw["dteday"] >= "2011-06-01") & (raw["dteday"] < "2011-06-15")].reset_index(drop=True)
    current = window[use_case.features.all].copy()
    current["request_id"] = [f"r{i}" for i in range(len(window))]
    current["prediction"] = window["cnt"].astype(float) * 0.9
    current["label"] = window["cnt"].astype(float)
    return reference, current


def test_full_then_read_only_reports_disk_fails_clearly_and_leaves_no_report_that_looks_complete(
    small_disk: SmallDisk,
) -> None:
    use_case = find_use_case("bike_sharing", PROJECT_ROOT / "configs")
    reference, current = _frames()
    run_key = f"monitor_bike_sharing/disk-{uuid.uuid4().hex[:6]}"
    folder = small_disk.root / "bike_sharing" / run_key.replace("/", "_")

    with pytest.raises(ReportWriteError) as full:
        run_monitoring(use_case, current, reference, run_key, reports_root=small_disk.root)
    message = str(full.value)
    assert "No space left on device" in message and str(folder) in message
    assert "writable" in message  # says what to check next
    assert not (folder / "summary.json").exists()
    assert not [p.name for p in folder.rglob(".*tmp")], "a temporary file was left behind"
    # Whatever did fit is not offered as a report: the UI looks for summary.json, written last.
    assert latest_report(small_disk.root, "bike_sharing") is None

    if not small_disk.real:
        pytest.skip("mount is not permitted here: ENOSPC was simulated at os.fdopen; read-only case not run")

    small_disk.remount("size=64m,ro")
    with pytest.raises(ReportWriteError, match="Read-only file system"):
        run_monitoring(use_case, current, reference, run_key, reports_root=small_disk.root)
    assert not (folder / "summary.json").exists()

    # Space is back: the same run key re-runs into the same folder and completes.
    small_disk.remount("size=64m,rw")
    summary = run_monitoring(use_case, current, reference, run_key, reports_root=small_disk.root)
    assert (folder / "summary.json").is_file() and summary.report_dir == folder
    assert {p.name for p in folder.iterdir()} >= {"drift.html", "data_quality.html", "performance.html"}
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    report = latest_report(small_disk.root, "bike_sharing")
    assert report is not None and report.folder == folder.name
