"""CSV and JSON Lines files, read in blocks of whole lines, one block at a time, each block parsed on its own.

pyarrow's streaming readers read ahead on a background thread, up to 32 blocks whatever the consumer does (an
internal constant, ARROW-12090): on a 100M-row CSV file that held about 1 GiB at once. Here the file is cut at
line breaks into blocks of about ``block_bytes``, and a block is read only once the previous one has been taken,
so what the reader holds is a few blocks, set by this module. Each block infers its own types for columns not
read as text, so two batches of one file may differ in types (the importer converts each batch on its own).

A JSON Lines block in which one column holds values of different JSON types (``{"age": 30}``, then ``{"age":
"forty"}``) cannot be read by pyarrow's JSON reader at all. Such a block is read again in pieces of
``PIECE_BYTES``; a piece that still fails is read line by line with the json module, each column that mixes
types as text (a number as written, ``true``/``false``, an object or array as its JSON text), so that the
importer counts the values that do not convert, per column and with their row numbers, as it does for CSV.

The first batch of a JSON Lines file names its columns, as a CSV file's header does: a declared column that no
line of it has is missing from the file (the importer refuses it as such), and one it has that no line of a
later block has is null there. Timestamp columns (``text``) are read as text, by the JSON reader as by the json
module: the reader alone would take a date for its midnight and move a time with an offset ("+01:00") to UTC
without a word, and the importer, not the reader, judges what a time is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson

__all__ = ["PIECE_BYTES", "UnreadableText", "csv_batches", "jsonl_batches", "line_blocks"]

PIECE_BYTES = 64 * 2**10  # a JSON Lines block pyarrow cannot read is read again in pieces of this size
_EXACT_FLOAT = 2**53


class UnreadableText(ValueError):
    """A block of a text file that cannot be parsed; the message says from which data row."""


def line_blocks(file: pa.NativeFile, block_bytes: int) -> Iterator[pa.Buffer]:
    """``file`` in blocks of about ``block_bytes`` that end at a line break (the last one may not); a line longer
    than a block makes its block longer. Nothing is read before the previous block has been taken."""
    carry = b""
    while True:
        data = file.read(block_bytes)
        if not data:
            if carry:
                yield pa.py_buffer(carry)
            return
        buffer = carry + data if carry else data
        cut = max(buffer.rfind(b"\n"), buffer.rfind(b"\r")) + 1
        carry = buffer[cut:]
        if cut:
            yield pa.py_buffer(buffer).slice(0, cut)


def csv_batches(blocks: Iterator[pa.Buffer], strings: tuple[str, ...], done: list[int]) -> Iterator[pa.RecordBatch]:
    """Each block parsed as CSV with the header's column names (the first block holds the header), ``strings``
    as text; ``done[0]`` counts the bytes handed over."""
    convert = pacsv.ConvertOptions(
        # Only an empty field is null: "NA" or "nan" are values, for the importer to judge.
        column_types=dict.fromkeys(strings, pa.string()),
        strings_can_be_null=True,
        null_values=[""],
    )
    names: list[str] | None = None
    rows = 0
    for block in blocks:
        try:
            table = pacsv.read_csv(
                pa.BufferReader(block), read_options=pacsv.ReadOptions(column_names=names), convert_options=convert
            )
        except pa.ArrowInvalid as exc:
            raise UnreadableText(f"in the data rows from {rows + 1:,}: {_first_line(exc)}") from None
        if names is None:
            names = table.column_names
        done[0] += block.size
        rows += table.num_rows
        yield from table.combine_chunks().to_batches()


def jsonl_batches(
    blocks: Iterator[pa.Buffer], columns: tuple[str, ...], done: list[int], text: tuple[str, ...] = ()
) -> Iterator[pa.RecordBatch]:
    """Each block parsed as JSON Lines (one object per line, blank lines skipped), ``text`` columns as text; a
    column of ``columns`` that the first batch has and no line of a later block has is null there (a missing key
    is a null), one the first batch lacks stays missing. ``done[0]`` counts the bytes handed over."""
    rows = 0
    names: set[str] | None = None  # the file's columns: the first batch's
    for block in blocks:
        done[0] += block.size
        for batch in _json_block(block, rows + 1, split=True, text=text, names=names):
            if names is None:
                names = set(batch.schema.names)
            rows += batch.num_rows
            missing = [c for c in columns if c in names and c not in batch.schema.names]
            for name in missing:
                batch = batch.append_column(name, pa.nulls(batch.num_rows))
            yield batch


def _json_block(
    block: pa.Buffer, first_row: int, split: bool, text: tuple[str, ...], names: set[str] | None
) -> Iterator[pa.RecordBatch]:
    try:
        table = _read_json(block, text, names)
    except pa.ArrowInvalid:
        if not split or block.size <= PIECE_BYTES:
            yield _json_as_text(block, first_row, text)
            return
        for piece in line_blocks(pa.BufferReader(block), PIECE_BYTES):
            for batch in _json_block(piece, first_row, False, text, names):
                first_row += batch.num_rows
                names = set(batch.schema.names) if names is None else names
                yield batch
        return
    yield from table.combine_chunks().to_batches()


def _read_json(block: pa.Buffer, text: tuple[str, ...], names: set[str] | None) -> pa.Table:
    """``block`` read by pyarrow, the ``text`` columns among the file's ``names`` as text. In the first batch
    (``names`` None: not known yet) a text column is text only where the block has it, so that one it lacks stays
    missing (an explicit schema would add it as nulls): which it has is read from the block first."""
    if names is None:
        table = pajson.read_json(pa.BufferReader(block))
        present = [name for name in text if name in table.schema.names]
        if all(table.schema.field(name).type in (pa.string(), pa.null()) for name in present):
            return table
    else:
        present = [name for name in text if name in names]
        if not present:
            return pajson.read_json(pa.BufferReader(block))
    options = pajson.ParseOptions(explicit_schema=pa.schema([(name, pa.string()) for name in present]))
    return pajson.read_json(pa.BufferReader(block), parse_options=options)


def _json_as_text(block: pa.Buffer, first_row: int, text: tuple[str, ...] = ()) -> pa.RecordBatch:
    """A block read line by line: each column as pyarrow reads a list of its values, or as text if they mix
    JSON types or it is one of ``text``."""
    records: list[dict[str, Any]] = []
    for line in block.to_pybytes().splitlines():
        if not line.strip():
            continue
        row = first_row + len(records)
        try:
            record = json.loads(line)
        except ValueError:
            raise UnreadableText(f"data row {row:,} is not JSON") from None
        if not isinstance(record, dict):
            raise UnreadableText(f"data row {row:,} is not a JSON object")
        records.append(record)
    names = list(dict.fromkeys(name for record in records for name in record))
    arrays = []
    for name in names:
        values = [record.get(name) for record in records]
        if name in text:
            arrays.append(pa.array([_text(v) for v in values], pa.string()))
            continue
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays.append(pa.array([_text(v) for v in values], pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _text(value: Any) -> str | None:
    """A JSON value as the importer would read it from text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOAT:
        return str(int(value))  # 30.0 converts to an integer, as it does from a JSON number
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
