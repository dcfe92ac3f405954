"""Content-addressed versioning of snapshots with DVC.

The DVC repository lives at `settings.data_dir` (no Git: the snapshots are run
outputs, not source). Every tracked file is pushed to the default DVC remote,
`local` at `settings.dvc_remote_dir` unless the operator configured another one,
so a snapshot can be restored byte for byte from its md5 alone, after the file,
the local cache or the source are gone.

This is the only module that imports DVC. It uses DVC's Python API rather than
the `dvc` CLI: one import per process instead of one per command (see the
timings in docs/data-versioning.md).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops._io import atomic_path, file_lock
from mlops.settings import get_settings

if TYPE_CHECKING:
    from dvc.repo import Repo

log = logging.getLogger(__name__)

DEFAULT_REMOTE = "local"
_MD5 = re.compile(r"^[0-9a-f]{32}$")
# Our own lock, held around every DVC operation: DVC's repo lock gives up after
# three seconds, which parallel ingest tasks of several use cases can exceed.
_LOCK_NAME = ".mlops-dvc.lock"


class VersioningError(RuntimeError):
    """A file could not be tracked or restored; the message says what to do."""


@dataclass(frozen=True)
class TrackedFile:
    md5: str
    dvc_file: str
    size: int


def _repo_lock(data_dir: Path) -> AbstractContextManager[None]:
    """One writer at a time in the DVC repository (tasks run in separate processes)."""
    return file_lock(data_dir / _LOCK_NAME)


def _site_cache_dir(data_dir: Path) -> Path:
    # DVC keeps a state database per repo under /var/tmp/dvc by default: outside
    # MLOPS_HOME, and never cleaned up when a (test) home is deleted.
    return data_dir / ".dvc" / "tmp" / "site"


@contextmanager
def _site_cache_env(data_dir: Path) -> Iterator[None]:
    """Point DVC's site cache into the repo before its config can say so.

    `Repo.init` and the first open build the state database before `_configure`
    has written `core.site_cache_dir`; DVC_SITE_CACHE_DIR wins over the config.
    """
    old = os.environ.get("DVC_SITE_CACHE_DIR")
    os.environ["DVC_SITE_CACHE_DIR"] = str(_site_cache_dir(data_dir))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DVC_SITE_CACHE_DIR", None)
        else:
            os.environ["DVC_SITE_CACHE_DIR"] = old


def _configure(repo: Repo, data_dir: Path, remote_dir: Path) -> bool:
    """Keep the repo self-contained and the `local` remote at the configured folder.

    Only missing or stale values are written, so an operator's own default remote
    (for example S3, see docs/data-versioning.md) survives every call. Returns
    whether the configuration changed.
    """
    config = repo.config  # merged and validated: booleans are booleans, paths absolute
    wanted_core: dict[str, Any] = {
        "site_cache_dir": str(_site_cache_dir(data_dir)),
        # The `dvc` CLI (documented for operators) would otherwise call home for usage
        # reports and version checks.
        "analytics": False,
        "check_update": False,
    }
    stale_core = {k: v for k, v in wanted_core.items() if config["core"].get(k) != v}
    needs_default = not config["core"].get("remote")
    stale_remote = config["remote"].get(DEFAULT_REMOTE, {}).get("url") != str(remote_dir)
    if not (stale_core or needs_default or stale_remote):
        return False
    with config.edit("repo") as conf:
        conf["core"].update(stale_core)
        if needs_default:
            conf["core"]["remote"] = DEFAULT_REMOTE
        if stale_remote:
            conf["remote"].setdefault(DEFAULT_REMOTE, {})["url"] = str(remote_dir)
    return True


def _open_repo() -> Repo:
    """Open the DVC repo at data_dir, creating and configuring it on first use.

    Call with the repo lock held: init is not safe to run twice at once.
    """
    from dvc.repo import Repo

    settings = get_settings()
    data_dir = settings.data_dir
    with _site_cache_env(data_dir):
        if not (data_dir / ".dvc").is_dir():
            # DVC logs its init notice to stdout, which is where `main` prints the result.
            logging.getLogger("dvc.repo.init").setLevel(logging.WARNING)
            Repo.init(str(data_dir), no_scm=True).close()
            log.info("created the DVC repository at %s", data_dir)
        repo = Repo(str(data_dir))
        try:
            changed = _configure(repo, data_dir, settings.dvc_remote_dir)
        except Exception:
            repo.close()
            raise
        if not changed:
            return repo
        # The cache, remotes and state database were built from the old configuration.
        repo.close()
        return Repo(str(data_dir))


def init() -> Path:
    """Create (or repair the configuration of) the DVC repository; idempotent."""
    data_dir = get_settings().data_dir
    with _repo_lock(data_dir):
        _open_repo().close()
    return data_dir


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def track(path: Path) -> TrackedFile:
    """`dvc add` a file inside data_dir and push it to the default remote.

    Does not check the file against outputs tracked elsewhere in the repo (a
    folder holding it, say); ingestion tracks one file per run folder.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import lock_repo

    settings = get_settings()
    path = Path(path).resolve()
    if not path.is_file():
        raise VersioningError(f"cannot version {path}: it is not a file; write it before tracking it")
    if not path.is_relative_to(settings.data_dir.resolve()):
        raise VersioningError(
            f"cannot version {path}: only files under the DVC repository {settings.data_dir} can be tracked; "
            "write the file there first"
        )
    with _repo_lock(settings.data_dir):
        repo = _open_repo()
        try:
            with lock_repo(repo):
                # What `dvc add <file>` does, minus its first step: parsing every .dvc file in
                # the repo to look for overlapping outputs, which costs ~25 ms per earlier
                # snapshot (3 s at 60), twice with `dvc push`. Callers track single files.
                stage = repo.stage.create(
                    single_stage=True, validate=False, fname=f"{path}.dvc", wdir=str(path.parent), outs=[path.name]
                )
                stage.add_outs()
                stage.dump()
            md5 = str(stage.outs[0].hash_info.value)
            remote = repo.config["core"]["remote"]
            # The push of one object: copy it from the cache unless the remote has it already.
            cache = repo.cache.local
            repo.cloud.get_remote_odb(remote).add(cache.oid_to_path(md5), cache.fs, md5)
        except DvcException as exc:
            raise VersioningError(f"DVC could not version {path}: {exc}") from exc
        finally:
            repo.close()
    log.info("versioned %s as md5 %s and pushed it to DVC remote %r", path, md5, remote)
    return TrackedFile(md5=md5, dvc_file=str(stage.path), size=path.stat().st_size)


def _remote_order(repo: Repo) -> list[str]:
    remotes = list(repo.config.get("remote", {}))
    default = repo.config["core"].get("remote")
    if default in remotes:
        remotes.remove(default)
        remotes.insert(0, default)
    return remotes


def _corrupt(md5: str, origin: str, actual: str) -> str:
    return f"the copy of {md5} in {origin} is corrupt (its md5 is {actual})"


class _CorruptCopy(Exception):
    """One store's copy does not hash to its name; another store may still hold a good one."""


def _fetch_verified(odb: Any, md5: str, destination: Path, origin: str) -> None:
    """Copy an object to a temporary file next to destination, check its hash, then rename.

    Raises _CorruptCopy when the copy's hash differs: a failed or corrupt transfer never
    leaves a half-written destination.
    """
    with atomic_path(destination) as tmp:
        odb.fs.get_file(odb.oid_to_path(md5), str(tmp))
        actual = _md5_of(tmp)
        if actual != md5:
            # The temporary file is removed on the way out; the rename never happens.
            raise _CorruptCopy(_corrupt(md5, origin, actual))
        tmp.chmod(0o644)  # cache objects are read-only; the restored file is the user's


@dataclass(frozen=True)
class CopyCheck:
    """One store's copy of a snapshot, hashed: `ok`, `corrupt` (its md5 differs) or `missing`."""

    origin: str
    status: str
    actual_md5: str | None = None


@dataclass(frozen=True)
class Availability:
    """Where a snapshot can be restored from now, every copy hashed rather than assumed."""

    md5: str
    copies: list[CopyCheck]

    @property
    def restorable(self) -> bool:
        return any(copy.status == "ok" for copy in self.copies)

    def describe(self) -> str:
        """`restorable from ...` or why not, naming every store and what was found there."""
        good = [c.origin for c in self.copies if c.status == "ok"]
        bad = [_corrupt(self.md5, c.origin, str(c.actual_md5)) for c in self.copies if c.status == "corrupt"]
        if good:
            return f"restorable from {', '.join(good)}" + (f" ({'; '.join(bad)})" if bad else "")
        searched = ", ".join(c.origin for c in self.copies)
        return f"not restorable: {'; '.join(bad) if bad else f'no copy of {self.md5}'} (searched {searched})"


def _stores(repo: Repo) -> list[tuple[str, Any]]:
    """The local cache, then every configured remote, the default one first."""
    stores: list[tuple[str, Any]] = [(f"the DVC cache ({repo.cache.local.path})", repo.cache.local)]
    for name in _remote_order(repo):
        odb = repo.cloud.get_remote_odb(name)
        stores.append((f"DVC remote {name} ({odb.path})", odb))
    return stores


def _valid_md5(md5: str) -> str:
    md5 = md5.strip().lower()
    if not _MD5.fullmatch(md5):
        raise VersioningError(f"{md5!r} is not an md5 hash (32 hex digits); copy it from the snapshot's metadata")
    return md5


def _hash_copy(odb: Any, md5: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with odb.fs.open(odb.oid_to_path(md5), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check(md5: str) -> Availability:
    """Hash every copy of `md5` in the DVC cache and remotes, without restoring anything.

    What `restore` would find now: a snapshot is restorable when one copy hashes to its md5.
    """
    from dvc.exceptions import DvcException

    md5 = _valid_md5(md5)
    copies: list[CopyCheck] = []
    with _repo_lock(get_settings().data_dir):
        repo = _open_repo()
        try:
            for origin, odb in _stores(repo):
                if not odb.exists(md5):
                    copies.append(CopyCheck(origin, "missing"))
                    continue
                actual = _hash_copy(odb, md5)
                copies.append(CopyCheck(origin, "ok" if actual == md5 else "corrupt", actual))
        except DvcException as exc:
            raise VersioningError(f"DVC could not check {md5}: {exc}") from exc
        finally:
            repo.close()
    return Availability(md5, copies)


def restore(md5: str, destination: Path) -> Path:
    """Write the exact bytes versioned under `md5` to `destination` (a file path).

    Looks in the local DVC cache first, then in every configured remote, the
    default one first. The result is checked against the hash before it is moved
    into place; a corrupt copy is passed over for the next store, and named in the
    error when no store holds a good one.
    """
    from dvc.exceptions import DvcException

    md5 = _valid_md5(md5)
    destination = Path(destination).expanduser().resolve()
    if destination.is_dir():
        raise VersioningError(
            f"{destination} is a directory; give the file path to write, e.g. {destination}/snapshot.parquet"
        )
    settings = get_settings()
    searched: list[str] = []
    corrupt: list[str] = []
    with _repo_lock(settings.data_dir):
        repo = _open_repo()
        try:
            for origin, odb in _stores(repo):
                searched.append(origin)
                if not odb.exists(md5):
                    continue
                try:
                    _fetch_verified(odb, md5, destination, origin)
                except _CorruptCopy as exc:
                    log.warning("%s; trying the next store", exc)
                    corrupt.append(str(exc))
                    continue
                log.info("restored %s from %s to %s", md5, origin, destination)
                return destination
        except DvcException as exc:
            raise VersioningError(f"DVC could not restore {md5}: {exc}") from exc
        finally:
            repo.close()
    if corrupt:
        raise VersioningError(
            f"{'; '.join(corrupt)}; no other store holds a good copy (searched {', '.join(searched)}). "
            "Delete the corrupt copies and push the snapshot again from another copy"
        )
    raise VersioningError(
        f"no file with md5 {md5} in {', '.join(searched)}. "
        "Check the hash, or add a DVC remote that holds it (docs/data-versioning.md)"
    )


def main(argv: list[str] | None = None) -> int:
    """`mlops data restore <md5> <dest>`."""
    parser = argparse.ArgumentParser(prog="python -m mlops.data.versioning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    restore_cmd = commands.add_parser("restore", help="write the exact bytes of a versioned snapshot to a file")
    restore_cmd.add_argument("md5", help="content hash recorded with the snapshot (Snapshot.md5, the MLflow run)")
    restore_cmd.add_argument("destination", type=Path, help="file path to write, e.g. /tmp/snapshot.parquet")
    commands.add_parser("init", help="create the DVC repository and its default remote")
    args = parser.parse_args(argv)
    try:
        if args.command == "restore":
            print(restore(args.md5, args.destination))
        else:
            print(init())
    except VersioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
