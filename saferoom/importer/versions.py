"""Immutable dataset versions in a catalog directory, and the one pointer to the current version of each.

A version is a file (Arrow IPC) or directory (partitioned Parquet, for Spark) named after the SHA-256 of its
content, written beside ``catalog.json`` under a temporary name, fsynced and linked or renamed into place: nothing
half-written is ever visible under a version's name, and a version's name is never made to point at another file
(importing content that is already there keeps the file that is there). ``catalog.json`` is the pointer: it is
rewritten the same way (temporary file, fsync, atomic rename, fsync of the directory), so a reader sees the old
catalog or the new one, never a mixture. ``versions.json`` keeps every version each dataset has had (``saferoom
datasets history``), collected ones too (marked ``collected_at``).

Old versions are deleted by ``saferoom.importer.retention`` once nothing refers to them. An import holds a lease
(``saferoom.catalog.leases``) on the version it writes from before the version appears under its name until it is
published, so a collector running meanwhile never deletes it, even when the same content had been imported, and
retired, before. The catalog lock (``locked``) serialises every change of the pointer and the history: imports'
publications and collections.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from saferoom.catalog import statistics
from saferoom.catalog.leases import PARQUET_DIR, Lease, parquet_name
from saferoom.catalog.manifest import MANIFEST_NAME, DatasetInfo, Manifest

__all__ = [
    "HISTORY_NAME",
    "Version",
    "collected",
    "fsync_dir",
    "history",
    "locked",
    "now",
    "publish",
    "read_entries",
    "write_arrow",
    "write_entries",
    "write_parquet",
]

HISTORY_NAME = "versions.json"
LOCK_NAME = ".catalog.lock"
ROWS_PER_FILE = 2_000_000


@dataclass(frozen=True)
class Version:
    """One imported version of a dataset."""

    dataset: str
    version: str  # SHA-256 of the content
    file: str  # Arrow file name, or the Parquet directory (Spark), relative to the catalog directory
    rows: int
    declaration_hash: str
    imported_at: str  # ISO 8601, UTC
    source: str  # what it was imported from (a file name or the kind of database)
    report: dict[str, Any]  # the validation summary (counts only: no row numbers)
    # Set once the version's file is deleted (``saferoom.importer.retention``): when (ISO 8601, UTC), by whom
    # ("server" or "datasets gc") and why. The entry stays: ``history`` and jobs' recorded versions still name it.
    collected_at: str | None = None
    collected_by: str | None = None
    collected_reason: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def write_arrow(
    directory: Path, name: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch], lease: Lease
) -> tuple[str, str]:
    """Write ``batches`` as a new immutable Arrow IPC version of ``name``; returns (file name, content hash).

    ``batches`` may raise half-way (the data was refused): the temporary file is removed and nothing appears.
    The version is in ``lease`` from the moment it has its name (the caller holds it until it has published).
    The version's statistics (``catalog.statistics``) are computed on the way and written beside it, bound to
    its hash, before anything points at it.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the same file once linked under its name: leased from its first moment
    found = statistics.Statistics(schema)
    leased = False
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in statistics.tracked(batches, found):
                writer.write_batch(batch)
        digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            for block in iter(lambda: f.read(8 * 2**20), b""):
                digest.update(block)
            os.fsync(f.fileno())
        version = digest.hexdigest()
        final = f"{name}-{version[:16]}.arrow"
        os.chmod(tmp, 0o444)
        leased = _name_leased(Path(tmp), fd, directory / final, lease)
        # Only now, with the version leased: a collector deleting an earlier copy of the same content is done.
        _write_atomic(directory / statistics.sidecar(final), statistics.to_text(version, found.result()))
        os.unlink(tmp)
        fsync_dir(directory)
        return final, version
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        if not leased:
            os.close(fd)


def _name_leased(tmp: Path, fd: int, final: Path, lease: Lease) -> bool:
    """Give the new version ``tmp`` (open as ``fd``, locked shared) the name ``final``, and lease it; when the same
    content is already there under that name, lease that file instead (a name never changes its file). Returns
    whether ``fd`` went to ``lease``."""
    while True:
        try:
            if tmp.is_dir():
                os.rename(tmp, final)  # refused if ``final`` is there (not empty)
            else:
                os.link(tmp, final)  # refused if ``final`` is there
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            try:
                lease.hold(final)
                return False
            except FileNotFoundError:
                continue  # a collector deleted it meanwhile: ours takes the name
        lease.adopt(final, fd)
        return True


def write_parquet(
    directory: Path,
    name: str,
    schema: pa.Schema,
    batches: Iterator[pa.RecordBatch],
    partition_by: str | None,
    lease: Lease,
) -> tuple[str, str]:
    """Write ``batches`` as a new immutable partitioned-Parquet version (for Spark); returns (dir, hash). The
    version is in ``lease`` from the moment it has its name, as with ``write_arrow``."""
    root = directory / PARQUET_DIR
    root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    leased = False
    try:
        ds.write_dataset(
            pa.RecordBatchReader.from_batches(schema, batches),
            tmp,
            format="parquet",
            partitioning=[partition_by] if partition_by else None,
            partitioning_flavor="hive" if partition_by else None,
            max_rows_per_file=ROWS_PER_FILE,
            max_rows_per_group=min(ROWS_PER_FILE, 1_000_000),
            existing_data_behavior="overwrite_or_ignore",
        )
        digest = hashlib.sha256()
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(tmp)).encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(8 * 2**20), b""):
                    digest.update(block)
                os.fsync(f.fileno())
        version = digest.hexdigest()
        final = root / parquet_name(name, version)
        leased = _name_leased(tmp, fd, final, lease)
        if not leased:  # the same content again: keep the one already there
            shutil.rmtree(tmp)
        fsync_dir(root)
        return f"{PARQUET_DIR}/{final.name}", version
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if not leased:
            os.close(fd)


def publish(directory: Path, info: DatasetInfo, version: Version, catalog_name: str | None = None) -> Manifest:
    """Make ``version`` the current one of ``info.name`` in ``directory``'s catalog (one atomic switch)."""
    with locked(directory):
        path = directory / MANIFEST_NAME
        if path.exists():
            manifest = Manifest.load(directory)
        else:
            manifest = Manifest(name=catalog_name or directory.resolve().name, datasets={})
        datasets = dict(manifest.datasets)
        datasets[info.name] = info
        manifest = replace(manifest, datasets=datasets)
        entries = read_entries(directory)
        entries.setdefault(info.name, []).append(version.to_data())
        write_entries(directory, entries)
        _write_atomic(path, json.dumps(manifest.to_data(), indent=2, ensure_ascii=False) + "\n")
        return manifest


def history(directory: Path, name: str) -> list[Version]:
    """Every version ``name`` has had in ``directory``, oldest first."""
    return [Version(**entry) for entry in read_entries(directory).get(name, [])]


def collected(directory: Path) -> list[Version]:
    """Every collected version of every dataset in ``directory`` (by dataset, oldest first)."""
    return [
        Version(**entry)
        for _, listed in sorted(read_entries(directory).items())
        for entry in listed
        if entry.get("collected_at")
    ]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def read_entries(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """``versions.json`` as stored: each dataset's versions as plain data, oldest first."""
    try:
        data = json.loads((directory / HISTORY_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    entries: dict[str, list[dict[str, Any]]] = data["datasets"]
    return entries


def write_entries(directory: Path, entries: dict[str, list[dict[str, Any]]]) -> None:
    """Replace ``versions.json`` atomically (the caller holds ``locked``)."""
    _write_atomic(directory / HISTORY_NAME, json.dumps({"format": 1, "datasets": entries}, indent=2) + "\n")


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """The catalog lock: one process at a time changes a catalog directory's pointer and history (an import
    publishing, a collection deleting)."""
    with open(directory / LOCK_NAME, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_dir(directory: Path) -> None:
    """Make a rename, link or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
