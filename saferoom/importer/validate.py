"""Checking every row of a source against its declaration, batch by batch, before anything is published.

Each batch is converted to the declared types (a value that does not convert is a *wrong type*), then checked:
nulls where none may be, NaN where none may be, values outside the public bounds, strings outside the declared
categories, a null or repeated privacy unit where one row per unit is declared. What is wrong is counted per
column and kind, with the first few row numbers (1-based, data rows: a CSV header is not counted). The report
is for the owner only: it holds row numbers of personal data and is never sent to a researcher. How repeated
units are found, in bounded memory whatever their type, is ``saferoom.importer.units``.

By default any problem refuses the import. ``clamp`` moves out-of-bounds numbers to the bound; ``drop_invalid``
drops every row with a remaining problem; both are counted in the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.catalog.catalog import ARROW_TYPES, CATEGORY_TYPE, schema_of
from saferoom.catalog.manifest import TEXT_BYTES, Column, DatasetInfo, timestamp_seconds
from saferoom.errors import InvalidRequest
from saferoom.importer.units import UnitBitmap, UnitSpill

__all__ = ["ImportRefused", "Issue", "ValidationReport", "Validator"]

ROWS_SHOWN = 5


class Issue:
    """The kinds of problem a row can have (a column's count and first rows are kept per kind)."""

    WRONG_TYPE = "wrong type"
    NULL = "null"
    NAN = "NaN"
    BELOW_MIN = "below min"
    ABOVE_MAX = "above max"
    UNKNOWN_CATEGORY = "unknown category"
    TOO_LONG = f"text over {TEXT_BYTES} bytes"
    NULL_UNIT = "null unit"
    DUPLICATE_UNIT = "duplicate unit"


@dataclass
class ValidationReport:
    """What the rows held that the declaration does not allow, and what was done about it."""

    rows_read: int = 0
    rows_written: int = 0
    problems: dict[tuple[str, str], int] = field(default_factory=dict)  # (column, issue) -> rows
    examples: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # first row numbers
    clamped: dict[str, int] = field(default_factory=dict)  # column -> values moved to a bound
    dropped: int = 0

    def note(self, column: str, issue: str, rows: np.ndarray, count: int | None = None) -> None:
        """Record ``rows`` (absolute row numbers) as having ``issue`` in ``column``; ``count`` when ``rows`` are
        only the first of them."""
        count = len(rows) if count is None else count
        if not count:
            return
        key = (column, issue)
        self.problems[key] = self.problems.get(key, 0) + count
        shown = self.examples.setdefault(key, [])
        if len(shown) < ROWS_SHOWN:
            shown.extend(int(r) for r in rows[: ROWS_SHOWN - len(shown)])

    def lines(self) -> list[str]:
        """The report as lines for the owner's terminal."""
        out = []
        for (column, issue), count in sorted(self.problems.items()):
            rows = ", ".join(str(r) for r in self.examples.get((column, issue), []))
            out.append(f"{column}: {count} row(s) with {issue} (rows {rows}{', ...' if count > ROWS_SHOWN else ''})")
        for column, count in self.clamped.items():
            out.append(f"{column}: {count} value(s) clamped to the declared bounds")
        if self.dropped:
            out.append(f"{self.dropped} invalid row(s) dropped")
        return out

    def to_data(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "problems": {f"{c}: {i}": n for (c, i), n in sorted(self.problems.items())},
            "clamped": dict(self.clamped),
            "dropped": self.dropped,
        }


class ImportRefused(InvalidRequest):
    """The data does not match its declaration: nothing was published (the report says what and where)."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class Validator:
    """Converts and checks the batches of one source against one declaration (``close`` removes what it spilled
    to ``spill_dir``: the units of a unit that no bitmap holds, and with ``drop_invalid`` the rows themselves)."""

    def __init__(
        self,
        info: DatasetInfo,
        ignore: tuple[str, ...],
        clamp: bool,
        drop_invalid: bool,
        spill_dir: Path | None = None,
    ) -> None:
        self.info = info
        self.ignore = ignore
        self.clamp = clamp
        self.drop_invalid = drop_invalid
        self.report = ValidationReport()
        self.schema = schema_of(info)
        self._categories = {
            c.name: pa.array(c.categories, pa.string()) for c in info.columns if c.categories is not None
        }
        self._bitmap: UnitBitmap | None = None
        self._spill: UnitSpill | None = None
        self._staged: Path | None = None  # drop_invalid with a spilled unit: the rows, until repeats are known
        if info.privacy_unit is not None and info.one_row_per_unit:
            unit = info.column(info.privacy_unit)
            if unit.type == "int64" and UnitBitmap.fits(unit.min, unit.max):
                assert unit.min is not None and unit.max is not None
                self._bitmap = UnitBitmap(int(unit.min), int(unit.max) - int(unit.min) + 1)
            else:
                self._spill = UnitSpill(ARROW_TYPES[unit.type], spill_dir)
                if drop_invalid:
                    self._staged = self._spill.directory / "rows.arrows"
        self._stage_writer: tuple[pa.NativeFile, Any] | None = None

    def close(self) -> None:
        """Remove what was spilled (idempotent)."""
        self._close_stage()
        if self._spill is not None:
            self._spill.close()

    def __enter__(self) -> Validator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_columns(self, names: list[str]) -> None:
        """The source's columns must be exactly the declared ones plus the ignored ones."""
        declared = [c.name for c in self.info.columns]
        missing = [n for n in declared if n not in names]
        extra = [n for n in names if n not in declared and n not in self.ignore]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"declared but not in the data: {', '.join(missing)}")
            if extra:
                parts.append(f"in the data but not declared (declare them or list them in ignore): {', '.join(extra)}")
            raise ImportRefused("the declaration does not match the data: " + "; ".join(parts))

    def batches(self, source: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The validated batches in the catalog's schema (checking every one; raises ``ImportRefused`` at the end
        if a problem was left unhandled, so a caller writes to a temporary file only)."""
        first = True
        names: list[str] = []
        for batch in source:
            if first or batch.schema.names != names:  # a block of a text file may have other columns
                names = batch.schema.names
                self.check_columns(names)
                first = False
            if batch.num_rows == 0:
                continue
            out, rows = self._check(batch)
            if out.num_rows:
                if self._staged is None:
                    yield out
                else:
                    self._stage(out, rows)
        if first or self.report.rows_read == 0:
            raise ImportRefused("the source has no rows")
        if self._spill is not None:
            yield from self._spilled_repeats()
        if self.report.problems and not self.drop_invalid:
            raise ImportRefused(
                f"{sum(self.report.problems.values())} problem(s) in the data: nothing was published "
                "(fix the data or the declaration, or pass --clamp / --drop-invalid)",
                self.report,
            )

    def _check(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, np.ndarray]:
        """The batch converted and checked, and the row numbers of the rows it kept."""
        start = self.report.rows_read
        n = batch.num_rows
        self.report.rows_read += n
        rows = np.arange(start + 1, start + n + 1)
        bad = np.zeros(n, dtype=bool)
        columns: list[pa.Array] = []
        for column in self.info.columns:
            values, wrong = _convert(batch.column(column.name), column)
            self.report.note(column.name, Issue.WRONG_TYPE, rows[wrong])
            bad |= wrong
            values, problems = self._domain(column, values, ~wrong)
            for issue, mask in problems:
                self.report.note(column.name, issue, rows[mask])
                bad |= mask
            columns.append(values)
        if self.info.privacy_unit is not None and (self._bitmap is not None or self._spill is not None):
            units = columns[[c.name for c in self.info.columns].index(self.info.privacy_unit)]
            present = ~bad & ~_mask(units.is_null())  # a repeat of a row refused for another reason is no repeat
            if self._bitmap is not None:
                duplicate = self._bitmap.see(units, present)
                self.report.note(self.info.privacy_unit, Issue.DUPLICATE_UNIT, rows[duplicate])
                bad |= duplicate
            elif self._spill is not None:
                self._spill.add(units, present, rows)  # repeats are known once every row is read
        encoded = [self._encode(c, v) for c, v in zip(self.info.columns, columns, strict=True)]
        out = pa.RecordBatch.from_arrays(encoded, schema=self.schema)
        if bad.any():
            if not self.drop_invalid:
                return out.slice(0, 0), rows[:0]  # refused at the end: nothing more needs writing
            self.report.dropped += int(bad.sum())
            out = out.filter(pa.array(~bad))
            rows = rows[~bad]
        self.report.rows_written += out.num_rows
        return out, rows

    def _stage(self, out: pa.RecordBatch, rows: np.ndarray) -> None:
        """Keep ``out`` on disk, with its row numbers, until the spilled units say which rows repeat one."""
        assert self._staged is not None
        schema = self.schema.append(pa.field("row", pa.int64()))
        if self._stage_writer is None:
            sink = pa.OSFile(str(self._staged), "wb")
            self._stage_writer = (sink, pa.ipc.new_stream(sink, schema))
        self._stage_writer[1].write_batch(pa.RecordBatch.from_arrays([*out.columns, pa.array(rows)], schema=schema))

    def _spilled_repeats(self) -> Iterator[pa.RecordBatch]:
        """Report the rows whose (spilled) unit an earlier row had; with ``drop_invalid``, the staged rows without
        them."""
        assert self._spill is not None and self.info.privacy_unit is not None
        found = self._spill.repeats(ROWS_SHOWN, self.report.rows_read + 1 if self._staged is not None else None)
        self.report.note(self.info.privacy_unit, Issue.DUPLICATE_UNIT, np.array(found.first_rows), found.count)
        if self._staged is None or self._stage_writer is None:
            return
        self._close_stage()
        assert found.rows is not None
        self.report.dropped += found.count
        self.report.rows_written -= found.count
        with pa.memory_map(str(self._staged)) as mapped:
            for staged in pa.ipc.open_stream(mapped):
                rows = staged.column(staged.num_columns - 1).to_numpy()
                keep = (found.rows[rows >> 3] >> (rows & 7)) & 1 == 0
                out = pa.RecordBatch.from_arrays(staged.columns[:-1], schema=self.schema).filter(pa.array(keep))
                if out.num_rows:
                    yield out

    def _close_stage(self) -> None:
        if self._stage_writer is not None:
            sink, writer = self._stage_writer
            writer.close()
            sink.close()
            self._stage_writer = None

    def _domain(self, column: Column, values: pa.Array, typed: np.ndarray) -> tuple[pa.Array, list[Any]]:
        problems: list[tuple[str, np.ndarray]] = []
        null = _mask(values.is_null()) & typed
        if column.name == self.info.privacy_unit:
            problems.append((Issue.NULL_UNIT, null))
        elif not column.may_be_null:
            problems.append((Issue.NULL, null))
        if column.type == "float64" and not column.may_be_nan:
            problems.append((Issue.NAN, _mask(pc.is_nan(values))))
        temporal = column.type in ("date32", "timestamp")
        if (column.type in ("int64", "float64") or temporal) and (column.min is not None or column.max is not None):
            numbers = values.cast(_DAYS_OR_SECONDS[column.type]) if temporal else values
            low = _mask(pc.less(numbers, column.min)) if column.min is not None else np.zeros(len(values), bool)
            high = _mask(pc.greater(numbers, column.max)) if column.max is not None else np.zeros(len(values), bool)
            if self.clamp and (low.any() or high.any()) and not temporal:  # a date or time is not moved
                self.report.clamped[column.name] = self.report.clamped.get(column.name, 0) + int((low | high).sum())
                if column.min is not None:
                    values = pc.if_else(pa.array(low), pa.scalar(column.min).cast(values.type), values)
                if column.max is not None:
                    values = pc.if_else(pa.array(high), pa.scalar(column.max).cast(values.type), values)
            else:
                problems += [(Issue.BELOW_MIN, low), (Issue.ABOVE_MAX, high)]
        if column.categories is not None:
            known = _mask(pc.is_in(values, value_set=self._categories[column.name]))
            problems.append((Issue.UNKNOWN_CATEGORY, ~known & ~_mask(values.is_null())))
        elif column.type == "string":  # the cost model counts every such value at TEXT_BYTES at most
            problems.append((Issue.TOO_LONG, _mask(pc.greater(pc.binary_length(values), TEXT_BYTES))))
        return values, problems

    def _encode(self, column: Column, values: pa.Array) -> pa.Array:
        if column.categories is None:
            return values
        categories = self._categories[column.name]
        indices = pc.index_in(values, value_set=categories).cast(pa.int32())
        return pa.DictionaryArray.from_arrays(indices, categories).cast(CATEGORY_TYPE)


def _mask(values: pa.Array) -> np.ndarray:
    """A boolean array as numpy, nulls as False."""
    mask: np.ndarray = values.fill_null(False).to_numpy(zero_copy_only=False)
    return mask


def _convert(values: pa.Array | pa.ChunkedArray, column: Column) -> tuple[pa.Array, np.ndarray]:
    """``values`` as the column's declared type, and which of them did not convert (they become null)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    target = ARROW_TYPES[column.type]
    if pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    if column.type == "timestamp":
        return _timestamps(values, column.name)
    if values.type == target:
        return values, np.zeros(len(values), dtype=bool)
    try:
        return pc.cast(values, target, safe=True), np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Some value does not convert: find which, one at a time (only batches with a wrong value pay for this).
    converted: list[Any] = []
    wrong = np.zeros(len(values), dtype=bool)
    for i in range(len(values)):
        one = values.slice(i, 1)
        try:
            converted.append(pc.cast(one, target, safe=True)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            converted.append(None)
            wrong[i] = True
    return pa.array(converted, target), wrong


_DAYS_OR_SECONDS = {"date32": pa.int32(), "timestamp": pa.int64()}
_TIMESTAMP = ARROW_TYPES["timestamp"]
_TIMESTAMP_TEXT = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$"
_SECONDS = (timestamp_seconds("0001-01-01 00:00:00"), timestamp_seconds("9999-12-31 23:59:59"))


def _timestamps(values: pa.Array, name: str) -> tuple[pa.Array, np.ndarray]:
    """``values`` as timestamp[s], and which are wrong: text that is not a real "YYYY-MM-DD HH:MM:SS" (or with a
    T; no fraction, no zone), a fraction of a second (dropping it would change the data: cut it in the source if
    meant), a time outside years 1 to 9999. A time zone, or numbers (seconds? milliseconds?), refuse the import:
    a time is never shifted or guessed here."""
    t = values.type
    valid = ~_mask(values.is_null())
    if values.null_count == len(values):  # no value, so no type to judge (SQLite's drivers say int64 then)
        return pa.nulls(len(values), _TIMESTAMP), np.zeros(len(values), dtype=bool)
    if pa.types.is_string(t):
        shaped = _mask(pc.match_substring_regex(values, _TIMESTAMP_TEXT))
        text = pc.if_else(pa.array(shaped), pc.replace_substring(values, "T", " "), pa.scalar(None, pa.string()))
        parsed = pc.strptime(text, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
        # strptime carries a day or second too far into the next (02-30 is 03-01): only a time written back as
        # it was read is that time.
        exact = _mask(pc.equal(pc.strftime(parsed, format="%Y-%m-%d %H:%M:%S"), text))
    elif pa.types.is_timestamp(t) and t.tz is not None:
        raise ImportRefused(
            f"column {name!r} holds times with the time zone {t.tz}: a timestamp column is wall-clock time "
            "without one. Convert it in the source to the local time it means (PostgreSQL: ts AT TIME ZONE "
            "'Asia/Shanghai'; UTC: ts AT TIME ZONE 'UTC'), then import"
        )
    elif pa.types.is_timestamp(t):
        parsed = values.cast(_TIMESTAMP, safe=False)  # whole seconds are exact; a fraction is found below
        exact = _mask(pc.equal(parsed.cast(t), values))
    else:
        raise ImportRefused(
            f"column {name!r} is declared timestamp but the source holds {t}: give times as text "
            "YYYY-MM-DD HH:MM:SS or as a timestamp column (numbers are not taken for seconds or milliseconds since "
            "1970, nor a date for its midnight: convert them in the source, e.g. SQLite datetime(x, 'unixepoch'))"
        )
    seconds = parsed.cast(pa.int64())
    inside = _mask(pc.and_(pc.greater_equal(seconds, _SECONDS[0]), pc.less_equal(seconds, _SECONDS[1])))
    wrong = valid & ~(exact & inside)
    return pc.if_else(pa.array(wrong), pa.scalar(None, _TIMESTAMP), parsed), wrong
