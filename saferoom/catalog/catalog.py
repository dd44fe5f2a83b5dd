"""The served datasets: Arrow IPC files memory-mapped read-only, checked against the manifest.

An open catalog holds a lease (``catalog.leases``) on every imported version it maps, so that no collector
deletes one while this process may still read it; ``close()`` (or dropping the catalog) gives the lease back.
(A table still in use after that reads on: on Linux a mapping keeps a deleted file's inode until it is unmapped.
What the lease guards is the version's name, for whoever opens it by name, and the disk space is freed once the
last mapping goes.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from saferoom.catalog import statistics
from saferoom.catalog.leases import Lease
from saferoom.catalog.manifest import TEXT_BYTES, DatasetInfo, Manifest
from saferoom.catalog.statistics import ColumnStatistics
from saferoom.errors import InvalidRequest

__all__ = ["ARROW_TYPES", "Catalog", "schema_of"]

ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date32": pa.date32(),
    # Wall-clock time to the second without a time zone. A file with another unit or a time zone is refused
    # when the catalog opens, never converted: conversion (exact, or refused) is the importer's.
    "timestamp": pa.timestamp("s"),
}
CATEGORY_TYPE = pa.dictionary(pa.int32(), pa.string())
_LEASE_ATTEMPTS = 5  # manifests read in turn, each of whose versions was collected before it was leased


def schema_of(info: DatasetInfo) -> pa.Schema:
    """The Arrow schema of a dataset: categorical string columns are dictionary-encoded."""
    return pa.schema(
        [
            pa.field(c.name, CATEGORY_TYPE if c.type == "string" and c.categories else ARROW_TYPES[c.type])
            for c in info.columns
        ]
    )


def _check_categories(name: str, info: DatasetInfo, table: pa.Table) -> None:
    """Refuse a file whose dictionaries hold a value its declared categories do not: the cost model bounds a
    group-by on a category by their count, and the release rules take them as the public set of values. The
    value itself is not named (it may be personal)."""
    for column in info.columns:
        if not column.categories or column.type != "string":
            continue
        declared = pa.array(column.categories, pa.string())
        seen: set[int] = set()
        for chunk in table.column(column.name).chunks:
            dictionary = chunk.dictionary
            address = dictionary.buffers()[1].address if dictionary.buffers()[1] is not None else 0
            if address in seen:
                continue  # the same dictionary, shared by the file's record batches
            seen.add(address)
            values = dictionary.drop_null()
            undeclared = len(values) - int(pc.sum(pc.is_in(values, value_set=declared)).as_py() or 0)
            if undeclared:
                raise InvalidRequest(
                    f"dataset {name!r}: column {column.name!r} holds {undeclared} value(s) that are not among its "
                    f"{len(column.categories)} declared categories"
                )


def _check_text(name: str, info: DatasetInfo, table: pa.Table) -> None:
    """Refuse a file with a text value (no declared categories) longer than ``TEXT_BYTES``: the cost model counts
    every such value at that width. Neither the value nor its length is named (they may be personal)."""
    for column in info.columns:
        if column.type != "string" or column.categories:
            continue
        longest = pc.max(pc.binary_length(table.column(column.name))).as_py()
        if longest is not None and longest > TEXT_BYTES:
            raise InvalidRequest(
                f"dataset {name!r}: column {column.name!r} holds text longer than {TEXT_BYTES} bytes, the most a "
                "value without declared categories may hold"
            )


def _mismatch(found: pa.Schema, expected: pa.Schema) -> str:
    """How a file's schema differs from the manifest's: the first column of another type, where there is one."""
    if found.names == expected.names:
        for field, declared in zip(found, expected, strict=True):
            if field.type != declared.type:
                return (
                    f"file schema does not match the manifest: column {field.name!r} is {field.type} in the file, "
                    f"{declared.type} in the manifest"
                )
    return (
        f"file schema does not match the manifest (expected {expected.names} "
        f"with types {[str(t) for t in expected.types]})"
    )


def _leased(directory: Path) -> tuple[Manifest, Lease]:
    """The manifest, and a lease on the versions it names: taken before they are mapped, so that from then on no
    collector deletes them. A version collected between reading the manifest and leasing it means a newer
    manifest is there: read again."""
    for attempt in range(_LEASE_ATTEMPTS):
        manifest = Manifest.load(directory)
        lease = Lease()
        try:
            lease.hold_manifest(directory, manifest, engines=("arrow",))
            return manifest, lease
        except InvalidRequest:
            lease.close()
            if attempt + 1 == _LEASE_ATTEMPTS or Manifest.load(directory) == manifest:
                raise
    raise AssertionError("unreachable")


class Catalog:
    """A data directory opened for serving: every dataset memory-mapped (zero copy, shared by forks)."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        tables: dict[str, pa.Table],
        mapped: int,
        stats: dict[str, dict[str, ColumnStatistics]] | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self._tables: dict[str, pa.Table] | None = tables
        self._statistics = stats or {}
        self._mapped = mapped
        self._lease = lease or Lease()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, directory: Path) -> Catalog:
        """Map every dataset of ``directory``; refuses files whose schema differs from the manifest.

        Datasets on the Spark engine are not here: the cluster reads them from their location. Each file's
        stored statistics are kept only if they were computed on the very bytes mapped here.
        """
        manifest, lease = _leased(directory)
        tables: dict[str, pa.Table] = {}
        stats: dict[str, dict[str, ColumnStatistics]] = {}
        mapped = 0
        for name, info in manifest.datasets.items():
            if info.engine != "arrow":
                continue
            path = directory / info.file
            try:
                source = pa.memory_map(str(path), "r")
                table = pa.ipc.open_file(source).read_all()
            except (OSError, pa.ArrowInvalid) as exc:
                lease.close()
                raise InvalidRequest(f"dataset {name!r}: cannot read {info.file}: {exc}") from None
            expected = schema_of(info)
            if not table.schema.equals(expected):
                lease.close()
                raise InvalidRequest(f"dataset {name!r}: {_mismatch(table.schema, expected)}")
            try:
                _check_categories(name, info, table)
                _check_text(name, info, table)
            except InvalidRequest:
                lease.close()
                raise
            tables[name] = table
            mapped += source.size()
            source.seek(0)
            stats[name] = statistics.load(path, source.read_buffer(source.size()))
        return cls(directory, manifest, tables, mapped, stats, lease)

    def table(self, name: str) -> pa.Table:
        """A dataset's memory-mapped table."""
        info = self.manifest.dataset(name)  # DatasetNotFound for unknown names
        with self._lock:
            if self._tables is None:
                raise InvalidRequest("the catalog is closed")
            if info.engine != "arrow":
                raise InvalidRequest(f"dataset {name!r} is on the Spark cluster, not in the data directory")
            return self._tables[name]

    def statistics(self, name: str) -> dict[str, ColumnStatistics]:
        """A dataset's stored statistics, by column (personal: for the engine only; empty when it has none)."""
        return self._statistics.get(name, {})

    def info(self, name: str) -> DatasetInfo:
        return self.manifest.dataset(name)

    def names(self) -> list[str]:
        return list(self.manifest.datasets)

    def mapped_bytes(self) -> int:
        """Bytes of Arrow files mapped into memory."""
        return self._mapped

    def close(self) -> None:
        """Drop the tables (the mappings go with the last reference) and the lease on their versions (idempotent)."""
        with self._lock:
            self._tables = None
        self._lease.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
