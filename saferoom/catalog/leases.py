"""Leases on dataset versions: a version is never deleted while a process still has it open.

A process that maps a version (``Catalog.open``), serves one (a server's ``CatalogVersion``, which also covers
Spark datasets, read by the cluster from their Parquet directory), or has just written one and not published
it yet (``datasets import``) holds a shared ``flock`` on the version's own file: its Arrow file, or its
partitioned-Parquet directory. The collector (``saferoom.importer.retention``) deletes a version only while it
holds the exclusive lock, taken without waiting: a version anybody holds is kept, and collected by a later run.

Why ``flock`` on the version's own file, and not a lease table or a lease file of its own:

* the kernel drops a process's locks when the process dies, however it dies (SIGKILL, out of memory, power cut):
  a crashed server leaves no stale lease behind, and nothing has to expire or be cleaned up;
* it needs nothing written, so it works on a data directory the server mounts read-only (deploy/compose.yaml);
* the lock is on the inode, so a server in a container and a collector on the host see the same lock.

A shared lock waits while the collector holds the exclusive one, and then may be granted on a file the collector
has just unlinked: ``Lease.hold`` checks, once locked, that the path still names the very file it locked, and
says the version is gone otherwise (``FileNotFoundError``).

Lock order, with the catalog lock of ``saferoom.importer.versions``: leases are taken (waiting) before the catalog
lock or without it; the collector holds the catalog lock and tries exclusive leases without waiting. Nobody
waits for a lock while holding one that its waiter needs.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

from saferoom.catalog.manifest import DatasetInfo, Manifest
from saferoom.errors import InvalidRequest

__all__ = ["PARQUET_DIR", "Claim", "Lease", "claimed", "parquet_name", "version_path"]

PARQUET_DIR = "parquet"  # where a catalog directory keeps its Spark datasets' versions


def parquet_name(dataset: str, version: str) -> str:
    """The directory (under ``PARQUET_DIR``) of a Spark dataset's version."""
    return f"{dataset}-{version[:16]}"


def version_path(info: DatasetInfo) -> str | None:
    """The version's own file (Arrow) or directory (Spark), relative to the catalog directory; None for a dataset
    that is not an imported version (generated or hand-written: never collected, so never leased)."""
    if not info.version:
        return None
    if info.engine == "arrow":
        return info.file
    return f"{PARQUET_DIR}/{parquet_name(info.name, info.version)}"


def _open(path: Path) -> int:
    return os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))


def _names(fd: int, path: Path) -> bool:
    """``path`` still names the file open as ``fd`` (not unlinked, not replaced)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _close_all(fds: dict[Path, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the last descriptor of the file drops its lock
    fds.clear()


class Lease:
    """Shared locks on dataset versions, held until ``close()`` (idempotent), until the lease is garbage
    collected, or until the process ends."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        self._release = weakref.finalize(self, _close_all, self._fds)

    def hold(self, path: Path) -> None:
        """Lease the version at ``path`` (waits while a collector is deleting it); ``FileNotFoundError`` if it is
        not there (any more)."""
        if path in self._fds:
            return
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not _names(fd, path):
                raise FileNotFoundError(errno.ENOENT, "the dataset version was collected", str(path))
        except BaseException:
            os.close(fd)
            raise
        self._fds[path] = fd

    def adopt(self, path: Path, fd: int) -> None:
        """Keep ``fd``, which the caller opened and locked shared, as the lease of ``path`` (closed with it)."""
        self._fds.setdefault(path, fd)

    def hold_manifest(self, directory: Path, manifest: Manifest, engines: tuple[str, ...] = ("arrow", "spark")) -> None:
        """Lease every imported version ``manifest`` names (of datasets on ``engines``). A Spark dataset whose
        Parquet directory is not in ``directory`` is the cluster's own copy: nothing here to keep. A version that is
        gone (collected after ``manifest`` was read: a newer one is current) is ``InvalidRequest``."""
        for info in manifest.datasets.values():
            relative = version_path(info)
            if relative is None or info.engine not in engines:
                continue
            path = directory / relative
            if info.engine == "spark" and not path.exists():
                continue
            try:
                self.hold(path)
            except FileNotFoundError:
                raise InvalidRequest(
                    f"dataset {info.name!r}: version {info.version[:16] if info.version else ''} is gone from the "
                    "catalog directory (collected: the catalog has a newer one)"
                ) from None

    @property
    def paths(self) -> list[Path]:
        """What this lease holds."""
        return sorted(self._fds)

    def close(self) -> None:
        """Release every lock (idempotent)."""
        self._release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Claim(enum.StrEnum):
    """What trying to take a version for deletion found."""

    CLAIMED = "claimed"  # nobody holds it: the claimant may delete it now
    HELD = "held"  # a process holds a lease on it
    GONE = "gone"  # nothing is there (already deleted)


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[Claim]:
    """Try the exclusive lock on the version at ``path`` without waiting, for as long as the block runs."""
    try:
        fd = _open(path)
    except FileNotFoundError:
        yield Claim.GONE
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield Claim.HELD
            return
        # Replaced under its name meanwhile (not something saferoom does): the new file is somebody else's.
        yield Claim.CLAIMED if _names(fd, path) else Claim.HELD
    finally:
        os.close(fd)
