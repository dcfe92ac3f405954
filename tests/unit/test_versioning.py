"""DVC versioning: track, restore from the cache or the remote, the CLI, concurrent init.

Every test gets its own MLOPS_HOME, so its own DVC repo, cache and remote.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.data.versioning import TrackedFile, VersioningError, check, main, restore, track
from mlops.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIKE_CSV = PROJECT_ROOT / "data" / "raw" / "bike_sharing_hourly.csv"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mlops-home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    return home


@pytest.fixture
def snapshot() -> Path:
    """A file inside the DVC repo: the first 500 lines of the bundled bike data."""
    path = get_settings().data_dir / "snapshots" / "bike_sharing" / "run1" / "snapshot.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(BIKE_CSV.read_bytes().splitlines(keepends=True)[:500]))
    return path


def remote_object(md5: str) -> Path:
    return get_settings().dvc_remote_dir / "files" / "md5" / md5[:2] / md5[2:]


def test_track_records_content_hash_and_pushes(snapshot: Path) -> None:
    data = snapshot.read_bytes()
    tracked = track(snapshot)
    assert tracked == TrackedFile(md5=hashlib.md5(data).hexdigest(), dvc_file=f"{snapshot}.dvc", size=len(data))
    assert f"md5: {tracked.md5}" in Path(tracked.dvc_file).read_text()
    assert remote_object(tracked.md5).read_bytes() == data
    assert snapshot.read_bytes() == data  # tracking leaves the workspace file as it was
    # The repo stays inside MLOPS_HOME and points at the configured remote.
    config = (get_settings().data_dir / ".dvc" / "config").read_text()
    assert f"url = {get_settings().dvc_remote_dir}" in config and "remote = local" in config


def test_track_again_is_idempotent_and_a_change_gets_a_new_hash(snapshot: Path) -> None:
    first = track(snapshot)
    assert track(snapshot) == first
    snapshot.write_bytes(snapshot.read_bytes() + b"2011-01-21,spring,7pm,No,Fri,Yes,Clear,1,1,1,1,1,1,2\n")
    changed = track(snapshot)
    assert changed.md5 != first.md5 and changed.dvc_file == first.dvc_file
    assert remote_object(first.md5).is_file() and remote_object(changed.md5).is_file()


def test_restore_after_deleting_the_file(snapshot: Path, tmp_path: Path) -> None:
    data = snapshot.read_bytes()
    tracked = track(snapshot)
    snapshot.unlink()
    out = restore(tracked.md5, tmp_path / "out" / "snapshot.csv")
    assert out == tmp_path / "out" / "snapshot.csv"
    assert out.read_bytes() == data


def test_restore_from_the_remote_when_the_cache_is_gone(snapshot: Path, tmp_path: Path) -> None:
    data = snapshot.read_bytes()
    tracked = track(snapshot)
    snapshot.unlink()
    shutil.rmtree(get_settings().data_dir / ".dvc" / "cache")
    out = restore(tracked.md5.upper(), tmp_path / "snapshot.csv")
    assert out.read_bytes() == data
    assert os.access(out, os.W_OK)  # an ordinary file, not a read-only cache object


def test_restore_into_a_fresh_home_with_only_the_remote_left(snapshot: Path, tmp_path: Path) -> None:
    data = snapshot.read_bytes()
    tracked = track(snapshot)
    shutil.rmtree(get_settings().data_dir)  # repo, cache, snapshot: everything but the remote
    assert restore(tracked.md5, tmp_path / "snapshot.csv").read_bytes() == data


def test_restore_rejects_a_corrupt_remote_copy(snapshot: Path, tmp_path: Path) -> None:
    tracked = track(snapshot)
    shutil.rmtree(get_settings().data_dir / ".dvc" / "cache")
    obj = remote_object(tracked.md5)
    obj.chmod(0o644)
    obj.write_bytes(b"bit rot")
    with pytest.raises(VersioningError, match=f"copy of {tracked.md5} in DVC remote local .* is corrupt"):
        restore(tracked.md5, tmp_path / "snapshot.csv")
    assert not (tmp_path / "snapshot.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def cache_object(md5: str) -> Path:
    return get_settings().data_dir / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def tamper(path: Path) -> None:
    path.chmod(0o644)  # DVC keeps its objects read-only
    path.write_bytes(b"bit rot")


def test_a_corrupt_cache_copy_is_passed_over_for_a_good_remote_one(snapshot: Path, tmp_path: Path) -> None:
    data = snapshot.read_bytes()
    tracked = track(snapshot)
    tamper(cache_object(tracked.md5))
    availability = check(tracked.md5)
    assert [(c.status, c.actual_md5) for c in availability.copies] == [
        ("corrupt", hashlib.md5(b"bit rot").hexdigest()),
        ("ok", tracked.md5),
    ]
    assert availability.restorable
    described = availability.describe()
    assert described.startswith("restorable from DVC remote local") and "the DVC cache" in described
    assert "is corrupt" in described
    assert restore(tracked.md5, tmp_path / "snapshot.csv").read_bytes() == data


def test_no_good_copy_anywhere_is_not_restorable_and_names_each_corrupt_one(snapshot: Path, tmp_path: Path) -> None:
    tracked = track(snapshot)
    tamper(cache_object(tracked.md5))
    tamper(remote_object(tracked.md5))
    availability = check(tracked.md5)
    assert not availability.restorable and [c.status for c in availability.copies] == ["corrupt", "corrupt"]
    assert availability.describe().startswith("not restorable: the copy of")
    with pytest.raises(VersioningError) as err:
        restore(tracked.md5, tmp_path / "snapshot.csv")
    message = str(err.value)
    assert message.count("is corrupt") == 2 and "no other store holds a good copy" in message
    assert not (tmp_path / "snapshot.csv").exists()
    gone = check("0" * 32)
    assert not gone.restorable and [c.status for c in gone.copies] == ["missing", "missing"]


def test_unknown_hash_names_the_places_searched(tmp_path: Path) -> None:
    unknown = "0" * 32
    with pytest.raises(VersioningError) as err:
        restore(unknown, tmp_path / "x.parquet")
    message = str(err.value)
    assert f"no file with md5 {unknown}" in message
    assert str(get_settings().dvc_remote_dir) in message and "DVC remote local" in message
    with pytest.raises(VersioningError, match="not an md5 hash"):
        restore("snapshot.parquet", tmp_path / "x.parquet")
    with pytest.raises(VersioningError, match="is a directory"):
        restore(unknown, tmp_path)


def test_track_refuses_files_outside_the_repo(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("a,b\n1,2\n")
    with pytest.raises(VersioningError, match="only files under the DVC repository"):
        track(outside)
    with pytest.raises(VersioningError, match="it is not a file"):
        track(get_settings().data_dir / "missing.parquet")


def test_cli_restore(snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = snapshot.read_bytes()
    tracked = track(snapshot)
    dest = tmp_path / "cli" / "snapshot.csv"
    assert main(["restore", tracked.md5, str(dest)]) == 0
    assert dest.read_bytes() == data
    assert capsys.readouterr().out.strip() == str(dest)
    assert main(["restore", "f" * 32, str(dest)]) == 1
    assert "error: no file with md5 ffff" in capsys.readouterr().err


def test_concurrent_init_and_a_user_default_remote(snapshot: Path, tmp_path: Path) -> None:
    """Two processes create the repo at once; then the documented `dvc` commands work on it."""
    cmd = [sys.executable, "-m", "mlops.data.versioning", "init"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0], results
    data_dir = get_settings().data_dir
    assert all(out.strip() == str(data_dir) for out, _, _ in results)

    archive = tmp_path / "archive"
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run([str(dvc), "remote", "add", "-d", "archive", str(archive)], cwd=data_dir, check=True)
    tracked = track(snapshot)
    assert (archive / "files" / "md5" / tracked.md5[:2] / tracked.md5[2:]).is_file()
    assert not remote_object(tracked.md5).exists()
    shutil.rmtree(data_dir / ".dvc" / "cache")
    assert restore(tracked.md5, tmp_path / "back.csv").read_bytes() == snapshot.read_bytes()
    assert "remote = archive" in (data_dir / ".dvc" / "config").read_text()

    # The .dvc files are ordinary DVC metadata: the stock CLI brings a run folder back too.
    data = snapshot.read_bytes()
    snapshot.unlink()
    assert not (data_dir / ".dvc" / "cache").exists()  # removed above; pull must use the remote
    subprocess.run([str(dvc), "pull", "-q", tracked.dvc_file], cwd=data_dir, check=True)
    assert snapshot.read_bytes() == data
