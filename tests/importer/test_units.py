"""importer.units: repeated privacy units found exactly, whatever the unit's type, from a spill on disk."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from saferoom.catalog.catalog import ARROW_TYPES
from saferoom.importer.units import UnitSpill, _string_keys


def test_a_string_hashes_the_same_whichever_batch_it_is_in() -> None:
    words = ["91350200MA2XYZ0001", "", "é", "企业", "91350200MA2XYZ0002", "a" * 300]
    one_by_one = [int(_string_keys(pa.array([w]))[0]) for w in words]
    together = _string_keys(pa.array(["x", *words]).slice(1)).tolist()  # mixed lengths, and an offset
    fixed = _string_keys(pa.array([words[0], words[4]])).tolist()  # all of one length
    assert together == one_by_one and fixed == [one_by_one[0], one_by_one[4]]
    assert len(set(one_by_one)) == len(words)


def _repeats(tmp_path: Path, batches: list[pa.Array]) -> tuple[int, list[int]]:
    spill = UnitSpill(batches[0].type, tmp_path)
    try:
        start = 1
        for units in batches:
            spill.add(units, np.ones(len(units), dtype=bool), np.arange(start, start + len(units)))
            start += len(units)
        found = spill.repeats(5)
        return found.count, found.first_rows
    finally:
        spill.close()
        assert list(tmp_path.iterdir()) == []


def test_dates_floats_and_booleans_repeat_by_value(tmp_path: Path) -> None:
    day = dt.date(2020, 1, 1)
    assert _repeats(tmp_path, [pa.array([day, dt.date(2020, 1, 2)]), pa.array([day])]) == (1, [3])
    assert _repeats(tmp_path, [pa.array([0.0, float("nan"), 1.5]), pa.array([-0.0, float("nan")])]) == (1, [4])
    assert _repeats(tmp_path, [pa.array([True, False, True, True])]) == (2, [3, 4])


def test_timestamps_repeat_by_their_second(tmp_path: Path) -> None:
    t = ARROW_TYPES["timestamp"]
    eight = dt.datetime(2020, 1, 1, 8, 0, 0)
    first = pa.array([eight, dt.datetime(2020, 1, 1, 8, 0, 1)], t)
    assert _repeats(tmp_path, [first, pa.array([dt.datetime(2021, 1, 1, 8, 0, 0), eight], t)]) == (1, [4])


def test_only_the_rows_asked_for_are_spilled(tmp_path: Path) -> None:
    spill = UnitSpill(pa.string(), tmp_path)
    try:
        units = pa.array(["a", "b", "a", "a"])
        spill.add(units, np.array([True, True, False, True]), np.array([1, 2, 3, 4]))
        found = spill.repeats(5, bitmap_rows=5)
        assert (found.count, found.first_rows) == (1, [4])
        assert found.rows is not None and np.unpackbits(found.rows, bitorder="little")[:5].tolist() == [0, 0, 0, 0, 1]
    finally:
        spill.close()
