"""Stored statistics of a dataset version: each numeric column's smallest and largest value, nulls and NaNs.

Computed once, when a version's file is written (``saferoom datasets import``, the generated city), never per
job. The engine uses them to skip work that cannot change a result: a clamp to the declared bounds of a column
whose every value already lies within them (and holds no NaN) returns the column as it is, so the engine reads
the column instead (the same table, bit for bit, one pass less per clamped column).

They are personal (a minimum is one person's value): they live beside the data file (``<file>.stats.json``),
never in the public manifest, and only the engine worker reads them. They are bound to the bytes they describe:
the file records the SHA-256 of the data file, and ``Catalog.open`` hashes the bytes it has mapped and ignores
statistics that do not match (a file swapped or rewritten under the catalog keeps every clamp).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ColumnStatistics", "Statistics", "load", "sidecar", "to_text", "tracked"]

FORMAT = 1
_SUFFIX = ".stats.json"


@dataclass(frozen=True)
class ColumnStatistics:
    """One column of one version: its smallest and largest number (None: it has none), nulls and NaNs."""

    low: float | int | None
    high: float | int | None
    nulls: int
    nans: int

    def within(self, low: float, high: float) -> bool:
        """Whether every value is a number in [low, high] (nulls stay null under a clamp; NaN would not)."""
        if self.nans or self.low is None or self.high is None:
            return False
        return bool(low <= self.low and self.high <= high)


class Statistics:
    """Accumulates the statistics of the int64 and float64 columns of a file's record batches."""

    def __init__(self, schema: pa.Schema) -> None:
        self._columns = [f.name for f in schema if pa.types.is_int64(f.type) or pa.types.is_float64(f.type)]
        self._found: dict[str, ColumnStatistics] = {c: ColumnStatistics(None, None, 0, 0) for c in self._columns}

    def add(self, batch: pa.RecordBatch) -> None:
        for name in self._columns:
            values = batch.column(name)
            nans = 0
            if pa.types.is_floating(values.type):
                nans = int(pc.sum(pc.is_nan(values), min_count=0).as_py() or 0)
            extremes = pc.min_max(values, skip_nulls=True)  # NaN is no minimum or maximum to Arrow
            low, high = extremes["min"].as_py(), extremes["max"].as_py()
            if isinstance(low, float) and math.isnan(low):  # every value NaN
                low = high = None
            seen = self._found[name]
            self._found[name] = ColumnStatistics(
                low if seen.low is None else seen.low if low is None else min(seen.low, low),
                high if seen.high is None else seen.high if high is None else max(seen.high, high),
                seen.nulls + values.null_count,
                seen.nans + nans,
            )

    def result(self) -> dict[str, ColumnStatistics]:
        return dict(self._found)


def tracked(batches: Iterable[pa.RecordBatch], statistics: Statistics) -> Iterator[pa.RecordBatch]:
    """``batches`` as they are, each added to ``statistics`` on its way to the file."""
    for batch in batches:
        statistics.add(batch)
        yield batch


def sidecar(file: str) -> str:
    """The name of the statistics file of a data file."""
    return f"{file}{_SUFFIX}"


def to_text(sha256: str, columns: Mapping[str, ColumnStatistics]) -> str:
    """The statistics file's content: the data file's SHA-256 and each column's statistics."""
    data = {
        "format": FORMAT,
        "sha256": sha256,
        "columns": {name: [s.low, s.high, s.nulls, s.nans] for name, s in columns.items()},
    }
    return json.dumps(data, indent=1) + "\n"  # +-infinity as JSON's Infinity (read only by this module)


def load(path: Path, mapped: pa.Buffer) -> dict[str, ColumnStatistics]:
    """The statistics of the data file at ``path`` whose bytes are ``mapped``: empty when there are none, they
    are malformed, or they were computed on other bytes."""
    try:
        data = json.loads((path.parent / sidecar(path.name)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    try:
        if data["format"] != FORMAT or not isinstance(data["sha256"], str):
            return {}
        columns = {str(name): _column(entry) for name, entry in data["columns"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}
    if hashlib.sha256(memoryview(mapped)).hexdigest() != data["sha256"]:
        return {}
    return columns


def _column(entry: Any) -> ColumnStatistics:
    low, high, nulls, nans = entry
    for bound in (low, high):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float) or bound != bound):
            raise ValueError("not a number")
    if type(nulls) is not int or type(nans) is not int or nulls < 0 or nans < 0:
        raise ValueError("not a count")
    return ColumnStatistics(low, high, nulls, nans)
