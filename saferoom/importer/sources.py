"""Where an owner's data comes from: files (CSV, Parquet, JSON Lines, Arrow IPC) and SQL databases (ADBC).

Every source is read as a stream of record batches, so memory stays bounded whatever the size: Parquet, Arrow
and SQL sources by pyarrow's (or the ADBC driver's) own reader, CSV and JSON Lines in blocks of whole lines, one
at a time (``saferoom.importer.lines``). A file's kind comes from its suffix; a database from its URI
(``sqlite:///path/db.sqlite``, ``postgresql://user@host:port/db``) with a ``query`` or a ``table``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from saferoom.errors import InvalidRequest
from saferoom.importer.lines import UnreadableText, csv_batches, jsonl_batches, line_blocks

__all__ = ["BATCH_ROWS", "Source", "SourceError", "SourceKind", "open_source"]

BATCH_ROWS = 256 * 1024
BLOCK_BYTES = 16 * 2**20  # CSV / JSON Lines read block (a batch): bounded memory per batch
_Names = tuple[str, ...]
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class SourceError(InvalidRequest):
    """A source that cannot be read (missing, empty, truncated, not of its kind)."""


class SourceKind(StrEnum):
    """What a source is."""

    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"
    ARROW = "arrow"
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


_SUFFIXES = {
    ".csv": SourceKind.CSV,
    ".parquet": SourceKind.PARQUET,
    ".pq": SourceKind.PARQUET,
    ".jsonl": SourceKind.JSONL,
    ".ndjson": SourceKind.JSONL,
    ".arrow": SourceKind.ARROW,
    ".arrows": SourceKind.ARROW,
    ".ipc": SourceKind.ARROW,
    ".feather": SourceKind.ARROW,
}


@dataclass
class Source:
    """An open source: its batches, and how far through it the reader is (for the progress bar)."""

    kind: SourceKind
    label: str  # what the owner named (without credentials)
    batches: Iterator[pa.RecordBatch]
    total: int | None  # in ``unit``s, when known up front
    unit: str  # "bytes" or "rows"
    _position: Any
    _stack: ExitStack

    def position(self) -> int:
        return int(self._position())

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(
    source: str,
    *,
    query: str | None = None,
    table: str | None = None,
    string_columns: tuple[str, ...] = (),
    timestamp_columns: tuple[str, ...] = (),
    block_bytes: int = BLOCK_BYTES,
) -> Source:
    """Open ``source`` for streaming; raises ``SourceError`` for what cannot be read.

    ``string_columns`` are read as text from CSV files, whatever they look like, so that the importer (not the
    CSV reader's type inference) decides what a value is and can count and locate the ones that are wrong.
    ``timestamp_columns`` are read as text from CSV and JSON Lines files: the JSON reader would take a date
    alone for a midnight and move a time with an offset ("+01:00") to UTC without a word. In a JSON Lines block
    where no line has one of either (and the file's first batch has it), it is null; one the first batch lacks
    is missing, as from a CSV header. ``block_bytes``: how much of a CSV or JSON Lines file is read and parsed at
    once (a batch).
    """
    stack = ExitStack()
    try:
        if source.startswith(("sqlite://", "postgresql://", "postgres://")):
            return _sql(source, query, table, stack)
        if query is not None or table is not None:
            raise SourceError("--query and --table are for SQL sources (sqlite:///path, postgresql://...)")
        path = Path(source)
        kind = _SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise SourceError(f"cannot tell the kind of {path.name!r}: use .csv, .parquet, .jsonl or .arrow")
        if not path.is_file():
            raise SourceError(f"no file {source}")
        size = path.stat().st_size
        if size == 0:
            raise SourceError(f"{path.name} is empty")
        return _FILE_OPENERS[kind](path, size, string_columns, timestamp_columns, block_bytes, stack)
    except SourceError:
        stack.close()
        raise
    except (OSError, pa.ArrowException) as exc:
        stack.close()
        raise SourceError(f"cannot read {Path(source).name}: {_first_line(exc)}") from None


def _csv(path: Path, size: int, strings: _Names, times: _Names, block_bytes: int, stack: ExitStack) -> Source:
    blocks = line_blocks(stack.enter_context(pa.input_stream(str(path))), block_bytes)
    done = [0]
    batches = _guarded(csv_batches(blocks, (*strings, *times), done), path.name)
    return Source(SourceKind.CSV, path.name, batches, size, "bytes", lambda: done[0], stack)


def _jsonl(path: Path, size: int, strings: _Names, times: _Names, block_bytes: int, stack: ExitStack) -> Source:
    blocks = line_blocks(stack.enter_context(pa.input_stream(str(path))), block_bytes)
    done = [0]
    batches = _guarded(jsonl_batches(blocks, (*strings, *times), done, text=times), path.name)
    return Source(SourceKind.JSONL, path.name, batches, size, "bytes", lambda: done[0], stack)


def _parquet(path: Path, size: int, strings: _Names, times: _Names, block_bytes: int, stack: ExitStack) -> Source:
    file = pq.ParquetFile(str(path))
    stack.callback(file.close)
    done = [0]
    return Source(
        SourceKind.PARQUET,
        path.name,
        _counted(_guarded(file.iter_batches(batch_size=BATCH_ROWS), path.name), done),
        file.metadata.num_rows,
        "rows",
        lambda: done[0],
        stack,
    )


def _arrow(path: Path, size: int, strings: _Names, times: _Names, block_bytes: int, stack: ExitStack) -> Source:
    mapped = stack.enter_context(pa.memory_map(str(path), "r"))
    done = [0]
    try:
        reader = pa.ipc.open_file(mapped)
        batches: Iterator[pa.RecordBatch] = (reader.get_batch(i) for i in range(reader.num_record_batches))
        total: int | None = sum(reader.get_record_batch(i).num_rows for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        mapped.seek(0)
        batches, total = iter(pa.ipc.open_stream(mapped)), None
    return Source(
        SourceKind.ARROW, path.name, _counted(_guarded(batches, path.name), done), total, "rows", lambda: done[0], stack
    )


_FILE_OPENERS = {SourceKind.CSV: _csv, SourceKind.JSONL: _jsonl, SourceKind.PARQUET: _parquet, SourceKind.ARROW: _arrow}


def _sql(uri: str, query: str | None, table: str | None, stack: ExitStack) -> Source:
    if (query is None) == (table is None):
        raise SourceError("a SQL source needs exactly one of --query and --table")
    if table is not None:
        if not _TABLE.match(table):
            raise SourceError("--table must be a plain (optionally schema-qualified) table name")
        query = "SELECT * FROM " + ".".join(f'"{part}"' for part in table.split("."))
    kind = SourceKind.SQLITE if uri.startswith("sqlite://") else SourceKind.POSTGRESQL
    try:
        if kind is SourceKind.SQLITE:
            import adbc_driver_sqlite.dbapi as sqlite_dbapi

            path = uri.removeprefix("sqlite://")
            if not Path(path).is_file():  # the driver would create an empty database
                raise SourceError(f"no SQLite database {path}")
            connection: Any = sqlite_dbapi.connect(path)
        else:
            import adbc_driver_postgresql.dbapi as pg_dbapi

            connection = pg_dbapi.connect(uri)
    except ImportError:
        raise SourceError(f"the {kind} source needs the 'import' extra: pip install 'saferoom[import]'") from None
    except SourceError:
        raise
    except Exception as exc:  # the drivers raise their own DB-API errors
        raise SourceError(f"cannot connect to the {kind} database: {_first_line(exc)}") from None
    stack.callback(connection.close)
    cursor = connection.cursor()
    stack.callback(cursor.close)
    label = f"{kind} {table or 'query'}"
    try:
        cursor.execute(query)
        reader = cursor.fetch_record_batch()
    except Exception as exc:
        raise SourceError(f"the {kind} query failed: {_first_line(exc)}") from None
    done = [0]
    return Source(kind, label, _counted(_guarded(reader, label), done), None, "rows", lambda: done[0], stack)


def _guarded(batches: Any, label: str) -> Iterator[pa.RecordBatch]:
    """The batches of a reader; a reader error mid-way (a truncated file, a bad row) becomes a SourceError."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (OSError, pa.ArrowException, UnreadableText) as exc:
            raise SourceError(f"cannot read {label}: {_first_line(exc)}") from None
        except Exception as exc:  # ADBC drivers' own errors
            if type(exc).__module__.startswith("adbc_driver"):
                raise SourceError(f"cannot read {label}: {_first_line(exc)}") from None
            raise
        yield batch


def _counted(batches: Iterator[pa.RecordBatch], done: list[int]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        done[0] += batch.num_rows
        yield batch


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
