"""Which privacy units repeat, where one row per unit is declared: exact, vectorised and in bounded memory.

An integer unit whose declared bounds span at most ``MAX_BITMAP_UNITS`` values is tracked in a bitmap over them
(``UnitBitmap``: one byte per possible unit), and a repeat is known as soon as its row is read.

Any other unit (a string such as an 18-character unified social credit code, an integer without bounds, a date)
is spilled (``UnitSpill``): each usable row's unit and row number go to one of ``PARTITIONS`` files, chosen by a
64-bit hash of the unit, so that equal units always land in the same file. Once every row has been read, each
file in turn is sorted and a row whose unit equals an earlier row's is a repeat. The hash routes and orders rows;
it never decides: integers, dates, times and booleans are compared as the numbers they are, and strings whose
hashes are equal are compared byte for byte, so a hash collision can neither make nor hide a repeat. Memory is
one partition at a time (about 1/64 of the units); disk is about 16 bytes per numeric unit and 38 per
18-character string.

The spill holds personal data (units and their row numbers): it lives in a private temporary directory that
``close`` removes.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["MAX_BITMAP_UNITS", "PARTITIONS", "Repeats", "UnitBitmap", "UnitSpill"]

MAX_BITMAP_UNITS = 1 << 28  # a bounded integer unit is tracked in a bitmap (1 byte per possible unit) up to this
PARTITION_BITS = 6
PARTITIONS = 1 << PARTITION_BITS
_STRINGS_AT_ONCE = 1 << 16  # strings hashed together (the temporary arrays hold 8 bytes per character)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Repeats:
    """The rows whose unit an earlier row already had."""

    count: int
    first_rows: list[int]  # the first few row numbers, ascending
    rows: np.ndarray | None  # every such row, as a bitmap over row numbers (bit r of byte r // 8), when asked for


class UnitBitmap:
    """Units seen, as one byte per unit the declared bounds allow."""

    def __init__(self, low: int, span: int) -> None:
        self._low = low
        self._seen = np.zeros(span, dtype=bool)

    @staticmethod
    def fits(low: float | None, high: float | None) -> bool:
        """Whether declared bounds ``low``..``high`` are narrow enough for a bitmap."""
        return low is not None and high is not None and 0 < int(high) - int(low) + 1 <= MAX_BITMAP_UNITS

    def see(self, units: pa.Array, present: np.ndarray) -> np.ndarray:
        """Mark the ``present`` ``units`` seen; returns which of them an earlier row (or an earlier one in this
        batch) had."""
        index = units.fill_null(self._low).to_numpy(zero_copy_only=False).astype(np.int64) - self._low
        present = present & (index >= 0) & (index < len(self._seen))
        rows = np.flatnonzero(present)
        keys = index[rows]
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        repeat = np.zeros(len(keys), dtype=bool)
        repeat[order[1:]] = sorted_keys[1:] == sorted_keys[:-1]
        repeat |= self._seen[keys]
        self._seen[keys] = True
        duplicate = np.zeros(len(units), dtype=bool)
        duplicate[rows[repeat]] = True
        return duplicate


class UnitSpill:
    """Units of any type, spilled to hash partitions and checked for repeats once every row has been added."""

    def __init__(self, unit_type: pa.DataType, directory: Path | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=".units.", dir=directory))  # private (0700)
        self._strings = pa.types.is_string(unit_type)
        self._float = pa.types.is_floating(unit_type)
        fields = [pa.field("key", pa.uint64()), pa.field("row", pa.int64())]
        self._schema = pa.schema([*fields, pa.field("unit", pa.string())] if self._strings else fields)
        self._writers: dict[int, tuple[pa.NativeFile, Any]] = {}

    def add(self, units: pa.Array, present: np.ndarray, rows: np.ndarray) -> None:
        """Spill the ``present`` ``units`` with their ``rows`` (row numbers)."""
        if self._float:  # NaN is no unit that can repeat (NaN != NaN)
            present = present & ~np.isnan(units.fill_null(0.0).to_numpy(zero_copy_only=False))
        if not present.any():
            return
        values = units.filter(pa.array(present))
        keys = _string_keys(values) if self._strings else _number_keys(values)
        partition = (_mix(keys) >> np.uint64(64 - PARTITION_BITS)).astype(np.uint8)
        order = np.argsort(partition, kind="stable")  # a radix sort of bytes
        columns = [pa.array(keys[order]), pa.array(rows[present][order])]
        if self._strings:
            columns.append(values.take(pa.array(order)))
        batch = pa.RecordBatch.from_arrays(columns, schema=self._schema)
        counts = np.bincount(partition, minlength=PARTITIONS)
        starts = np.concatenate([[0], np.cumsum(counts)])
        for p in np.flatnonzero(counts):
            self._writer(int(p)).write_batch(batch.slice(int(starts[p]), int(counts[p])))

    def repeats(self, shown: int, bitmap_rows: int | None = None) -> Repeats:
        """Every row whose unit an earlier row had: how many, the first ``shown``, and with ``bitmap_rows`` (one
        more than the largest row number) all of them as a bitmap."""
        self._close_writers()
        count = 0
        first = np.zeros(0, dtype=np.int64)
        bitmap = None if bitmap_rows is None else np.zeros(bitmap_rows // 8 + 1, dtype=np.uint8)
        for p in range(PARTITIONS):
            path = self._path(p)
            if not path.exists():
                continue
            with pa.memory_map(str(path)) as mapped:
                rows = self._repeated_rows(pa.ipc.open_stream(mapped).read_all())
            count += len(rows)
            first = np.sort(np.concatenate([first, np.sort(rows)[:shown]]))[:shown]
            if bitmap is not None:
                np.bitwise_or.at(bitmap, rows >> 3, (1 << (rows & 7)).astype(np.uint8))
        return Repeats(count, [int(r) for r in first], bitmap)

    def _repeated_rows(self, table: pa.Table) -> np.ndarray:
        keys = table.column("key").to_numpy()
        order = np.argsort(keys)
        same = keys[order][1:] == keys[order][:-1]
        shared = np.zeros(len(order), dtype=bool)  # rows whose key another row has (few, unless units repeat)
        shared[1:] = same
        shared[:-1] |= same
        if not shared.any():
            return np.zeros(0, dtype=np.int64)
        candidates = table.take(pa.array(order[shared]))
        rows = candidates.column("row").to_numpy()
        if not self._strings:  # the key is the unit itself
            by_key = np.lexsort((rows, candidates.column("key").to_numpy()))
            sorted_keys = candidates.column("key").to_numpy()[by_key]
            repeated: np.ndarray = rows[by_key][1:][sorted_keys[1:] == sorted_keys[:-1]]
            return repeated
        # Strings with the same hash: compare the strings themselves (a collision is not a repeat).
        by_unit = candidates.take(pc.sort_indices(candidates, sort_keys=[("unit", "ascending"), ("row", "ascending")]))
        units = by_unit.column("unit")
        equal = pc.equal(units.slice(1), units.slice(0, len(units) - 1)).to_numpy(zero_copy_only=False)
        repeated = by_unit.column("row").to_numpy()[1:][equal.astype(bool)]
        return repeated

    def _path(self, partition: int) -> Path:
        return self.directory / f"{partition:02d}.arrows"

    def _writer(self, partition: int) -> Any:
        if partition not in self._writers:
            sink = pa.OSFile(str(self._path(partition)), "wb")
            self._writers[partition] = (sink, pa.ipc.new_stream(sink, self._schema))
        return self._writers[partition][1]

    def _close_writers(self) -> None:
        for sink, writer in self._writers.values():
            writer.close()
            sink.close()
        self._writers.clear()

    def close(self) -> None:
        """Remove the spill (idempotent)."""
        for sink, _ in self._writers.values():
            sink.close()
        self._writers.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every bit of the result depends on every bit of ``x``."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def _number_keys(values: pa.Array) -> np.ndarray:
    """Integers, dates, timestamps, booleans and floats as 64-bit keys equal exactly when the values are."""
    if pa.types.is_floating(values.type):
        numbers = values.to_numpy(zero_copy_only=False) + 0.0  # -0.0 is 0.0
    else:
        if pa.types.is_date32(values.type):
            values = values.cast(pa.int32())  # its day number
        numbers = values.cast(pa.int64()).to_numpy()  # a timestamp[s] as its seconds, and a bool as 0 or 1
    keys: np.ndarray = np.ascontiguousarray(numbers).view(np.uint64)
    return keys


def _string_keys(values: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string's UTF-8 bytes: ``mix(sum(b[j] * M**(n-1-j)) ^ mix(n))`` for bytes b of length
    n, the same whichever of the two ways below computes it."""
    _, offset_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets).astype(np.int64)
    sums = np.zeros(len(values), dtype=np.uint64)
    if len(values) and (lengths == lengths[0]).all():  # all of one length (codes): a column at a time
        width = int(lengths[0])
        matrix = data[offsets[0] : offsets[0] + width * len(values)].reshape(len(values), width)
        for j in range(width):
            sums = sums * _MULTIPLIER + matrix[:, j]
    else:
        for start in range(0, len(values), _STRINGS_AT_ONCE):
            sums[start : start + _STRINGS_AT_ONCE] = _polynomial(data, offsets[start : start + _STRINGS_AT_ONCE + 1])
    return _mix(sums ^ _mix(lengths.astype(np.uint64)))


def _polynomial(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``sum(b[j] * M**(n-1-j))`` of each string between consecutive ``offsets`` of ``data``."""
    lengths = np.diff(offsets).astype(np.int64)
    sums = np.zeros(len(lengths), dtype=np.uint64)
    chunk = data[offsets[0] : offsets[-1]]
    if not len(chunk):
        return sums
    starts = (offsets[:-1] - offsets[0]).astype(np.int64)
    from_end = np.repeat(starts + lengths - 1, lengths) - np.arange(len(chunk))  # n-1-j of each byte
    powers = np.ones(int(lengths.max()), dtype=np.uint64)
    powers[1:] = np.cumprod(np.full(len(powers) - 1, _MULTIPLIER, dtype=np.uint64))
    terms = chunk.astype(np.uint64) * powers[from_end]
    filled = lengths > 0
    sums[filled] = np.add.reduceat(terms, starts[filled])
    return sums
