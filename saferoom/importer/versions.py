"""Immutable dataset versions in a catalog directory, and the one pointer to the current version of each.

A version is a file (Arrow IPC) or directory (partitioned Parquet, for Spark) named after the SHA-256 of its
content, written beside ``catalog.json`` under a temporary name, fsynced and renamed into place: nothing
half-written is ever visible under a version's name. ``catalog.json`` is the pointer: it is rewritten the same
way (temporary file, fsync, atomic rename, fsync of the directory), so a reader sees the old catalog or the new
one, never a mixture. ``versions.json`` keeps every version each dataset has had (``saferoom datasets
history``). Old versions stay on disk: a running job or a researcher's mock may still refer to them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
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
from saferoom.catalog.manifest import MANIFEST_NAME, DatasetInfo, Manifest

__all__ = ["HISTORY_NAME", "Version", "history", "now", "publish", "write_arrow", "write_parquet"]

HISTORY_NAME = "versions.json"
LOCK_NAME = ".catalog.lock"
PARQUET_DIR = "parquet"
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

    def to_data(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def write_arrow(directory: Path, name: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> tuple[str, str]:
    """Write ``batches`` as a new immutable Arrow IPC version of ``name``; returns (file name, content hash).

    ``batches`` may raise half-way (the data was refused): the temporary file is removed and nothing appears.
    The version's statistics (``catalog.statistics``) are computed on the way and written beside it, bound to
    its hash, before anything points at it.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    found = statistics.Statistics(schema)
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
        _write_atomic(directory / statistics.sidecar(final), statistics.to_text(version, found.result()))
        os.replace(tmp, directory / final)
        os.chmod(directory / final, 0o444)
        _fsync_dir(directory)
        return final, version
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_parquet(
    directory: Path, name: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch], partition_by: str | None
) -> tuple[str, str]:
    """Write ``batches`` as a new immutable partitioned-Parquet version (for Spark); returns (dir, hash)."""
    root = directory / PARQUET_DIR
    root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
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
        final = root / f"{name}-{version[:16]}"
        if final.exists():  # the same content again: keep the one already there
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        return f"{PARQUET_DIR}/{final.name}", version
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(directory: Path, info: DatasetInfo, version: Version, catalog_name: str | None = None) -> Manifest:
    """Make ``version`` the current one of ``info.name`` in ``directory``'s catalog (one atomic switch)."""
    with _locked(directory):
        path = directory / MANIFEST_NAME
        if path.exists():
            manifest = Manifest.load(directory)
        else:
            manifest = Manifest(name=catalog_name or directory.resolve().name, datasets={})
        datasets = dict(manifest.datasets)
        datasets[info.name] = info
        manifest = replace(manifest, datasets=datasets)
        entries = _read_history(directory)
        entries.setdefault(info.name, []).append(version.to_data())
        _write_atomic(directory / HISTORY_NAME, json.dumps({"format": 1, "datasets": entries}, indent=2) + "\n")
        _write_atomic(path, json.dumps(manifest.to_data(), indent=2, ensure_ascii=False) + "\n")
        return manifest


def history(directory: Path, name: str) -> list[Version]:
    """Every version ``name`` has had in ``directory``, oldest first."""
    return [Version(**entry) for entry in _read_history(directory).get(name, [])]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _read_history(directory: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        data = json.loads((directory / HISTORY_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    entries: dict[str, list[dict[str, Any]]] = data["datasets"]
    return entries


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One importer at a time changes a catalog directory's pointer and history."""
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
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
