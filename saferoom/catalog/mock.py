"""The declared-domain fallback of mock data: the same schema, values drawn only from the declared public domain.

Nothing here ever reads a real row: the functions take the manifest's description of a dataset and nothing
else, so mock data can be handed to anyone. It is what a dataset's mock data is until an operator publishes
differentially private synthetic data of it (``saferoom.mock``), labelled "declared-domain fallback".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from saferoom.catalog.catalog import schema_of
from saferoom.catalog.manifest import Column, DatasetInfo, Manifest

__all__ = ["DEFAULT_MOCK_ROWS", "ipc_bytes", "ipc_pieces", "mock_ipc_bytes", "mock_table", "write_mock_catalog"]

DEFAULT_MOCK_ROWS = 10_000


def _column(rng: np.random.Generator, column: Column, rows: int) -> pa.Array:
    lo = column.min if column.min is not None else 0.0
    hi = column.max if column.max is not None else max(lo + 1.0, float(rows))
    if column.categories:
        indices = rng.integers(0, len(column.categories), size=rows).astype(np.int32)
        return pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(column.categories, pa.string()))
    if column.type == "int64":
        if column.name.endswith("_id") and column.min is None:
            return pa.array(np.arange(1, rows + 1, dtype=np.int64))
        return pa.array(rng.integers(int(lo), int(hi) + 1, size=rows, dtype=np.int64))
    if column.type == "float64":
        return pa.array(rng.uniform(lo, hi, size=rows))
    if column.type == "date32":
        return pa.array(rng.integers(int(lo), int(hi) + 1, size=rows).astype(np.int32), pa.date32())
    if column.type == "timestamp":  # whole seconds within the bounds
        return pa.array(rng.integers(int(lo), int(hi) + 1, size=rows, dtype=np.int64), pa.timestamp("s"))
    if column.type == "bool":
        return pa.array(rng.random(rows) < 0.5)
    return pa.array([f"{column.name[:40]}-{i + 1}" for i in range(rows)], pa.string())  # within TEXT_BYTES


def mock_table(info: DatasetInfo, rows: int | None = None, seed: int = 0) -> pa.Table:
    """A synthetic table with ``info``'s schema; values uniform over each column's declared domain."""
    rows = max(1, min(info.rows, DEFAULT_MOCK_ROWS) if rows is None else rows)
    rng = np.random.default_rng([seed, len(info.name), *info.name.encode("utf-8")])
    arrays = [_column(rng, c, rows) for c in info.columns]
    return pa.Table.from_arrays(arrays, schema=schema_of(info))


def mock_ipc_bytes(info: DatasetInfo, rows: int | None = None, seed: int = 0) -> bytes:
    """A mock table as an Arrow IPC stream, for download."""
    return ipc_bytes(mock_table(info, rows, seed))


def ipc_pieces(schema: pa.Schema, tables: Iterable[pa.Table], size: int) -> Iterator[bytes]:
    """One Arrow IPC stream of ``tables``, in pieces of ``size`` bytes (the last may be shorter), each yielded as
    soon as it is written: the stream is never whole in memory, and ``tables`` may be made as they are read."""
    pending = _Pending()
    with pa.ipc.new_stream(pa.PythonFile(pending, mode="w"), schema) as writer:
        for table in tables:
            writer.write_table(table)
            yield from pending.take(size)
    yield from pending.take(size, everything=True)


class _Pending:
    """A write-only file that keeps what was written until it is taken (``pa.PythonFile`` writes to it)."""

    closed = False

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self, size: int, everything: bool = False) -> Iterator[bytes]:
        while len(self._buffer) >= size or (everything and self._buffer):
            piece = bytes(self._buffer[:size])
            del self._buffer[:size]
            yield piece


def ipc_bytes(table: pa.Table) -> bytes:
    """A table as an Arrow IPC stream, for download."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def write_mock_catalog(manifest: Manifest, out: Path, rows: int | None = None, seed: int = 0) -> Manifest:
    """A complete mock catalog directory (same names, schemas, policies) for local development."""
    out.mkdir(parents=True, exist_ok=True)
    datasets = {}
    for name, info in manifest.datasets.items():
        table = mock_table(info, rows, seed)
        with pa.OSFile(str(out / info.file), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        # Mock data of a Spark dataset is a local Arrow file too: dev runs need no cluster.
        datasets[name] = replace(
            info, rows=table.num_rows, description=f"MOCK DATA. {info.description}", engine="arrow", location=None
        )
    mock = Manifest(name=f"{manifest.name} (mock)", datasets=datasets, seed=seed)
    mock.save(out)
    return mock
