"""``saferoom datasets propose``: a draft declaration from the data, with every data-derived value marked.

Bounds and category lists read from the data disclose it (the largest income in the bounds, a rare category's
existence in the list), so each one is written with a ``# FROM DATA`` comment and listed in ``from_data``;
``load_declaration`` refuses the file until the owner has replaced every one with a public value.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.catalog.manifest import TEXT_BYTES, timestamp_text
from saferoom.importer.declaration import EPOCH, FROM_DATA_MARK
from saferoom.importer.sources import open_source

__all__ = ["MAX_CATEGORIES", "WARNING", "propose_declaration"]

MAX_CATEGORIES = 64  # a string column with at most this many distinct values is proposed as categorical
WARNING = (
    "Every value marked FROM DATA was read from the data: publishing a bound taken from the data discloses its "
    "extremes (the oldest person, the highest income), and a category list discloses that someone has each "
    "category. Replace each with a public value (a legal range, a published code list) before importing."
)
_TYPES = {"int": "int64", "float": "float64", "string": "string", "bool": "bool", "date": "date32"}


@dataclass
class _Seen:
    type: str
    low: Any = None
    high: Any = None
    nulls: bool = False
    nan: bool = False
    values: set[str] | None = field(default_factory=set)
    zone: str | None = None  # a timestamp's time zone, which the import refuses
    long_text: bool = False  # a text value over TEXT_BYTES, which the import refuses without categories
    typed: bool = False  # False while every block had only nulls (then "string")


def propose_declaration(source: str, name: str, *, query: str | None = None, table: str | None = None) -> str:
    """The text of a draft declaration for ``source`` (to be edited by the owner before any import)."""
    seen: dict[str, _Seen] = {}
    rows = 0
    with open_source(source, query=query, table=table) as opened:
        for batch in opened.batches:
            rows += batch.num_rows
            for column_name, values in zip(batch.schema.names, batch.columns, strict=True):
                _observe(seen, column_name, values)
    lines = [
        f"# Draft declaration proposed from {opened.label} ({rows} rows).",
        *(f"# {line}" for line in _wrap(WARNING)),
        f"name = {json.dumps(name)}",
        'description = ""',
        'sensitivity = "personal"  # or "public"',
        'privacy_unit = ""  # the column naming the person (or enterprise, household) each row is about',
        "one_row_per_unit = false",
    ]
    marked = []
    columns = []
    for column_name, s in seen.items():
        columns += ["", "[[columns]]", f"name = {json.dumps(column_name)}", f'type = "{s.type}"', 'description = ""']
        if s.zone is not None:
            columns.append(f"# time zone {s.zone}: convert to wall-clock time in the source (the import refuses it)")
        if s.type in ("int64", "float64", "date32", "timestamp") and s.low is not None:
            for key, value in (("min", s.low), ("max", s.high)):
                if s.type == "date32":
                    value = EPOCH + dt.timedelta(days=value)
                elif s.type == "timestamp":
                    value = timestamp_text(value)
                columns.append(f"{key} = {_toml(value)}  # {FROM_DATA_MARK}: replace with a public bound")
                marked.append(f"columns.{column_name}.{key}")
        if s.type == "string" and s.values:
            listed = ", ".join(json.dumps(v) for v in sorted(s.values))
            columns.append(f"categories = [{listed}]  # {FROM_DATA_MARK}: replace with the public list")
            marked.append(f"columns.{column_name}.categories")
        elif s.type == "string" and s.long_text:
            columns.append(
                f"# text over {TEXT_BYTES} bytes in the data: the import refuses it in a column without categories "
                "(shorten it in the source, or leave the column out)"
            )
        columns.append(f"may_be_null = {'true' if s.nulls else 'false'}")
        if s.type == "float64":
            columns.append(f"may_be_nan = {'true' if s.nan else 'false'}")
    lines.append(f"from_data = [{', '.join(json.dumps(m) for m in marked)}]  # {FROM_DATA_MARK}: empty it once done")
    lines += ["", "[policy]", "min_contributors = 10", "differential_privacy = true", *columns]
    return "\n".join(lines) + "\n"


def _observe(seen: dict[str, _Seen], name: str, values: pa.Array) -> None:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    s = seen.setdefault(name, _Seen("string"))
    s.nulls |= values.null_count > 0
    if pa.types.is_null(values.type):  # a CSV or JSON block where the column is empty: no type to learn
        return
    kind = _kind(values.type)
    if not s.typed:
        s.type, s.typed = kind, True
    elif s.type != kind:  # e.g. int in one block, float in the next: the wider one
        s.type = "float64" if {s.type, kind} == {"int64", "float64"} else "string"
    if kind == "float64":
        s.nan |= bool(pc.any(pc.is_nan(values)).as_py())
    if kind in ("int64", "float64", "date32", "timestamp"):
        numbers = values.cast(pa.date32()).cast(pa.int32()) if kind == "date32" else values
        if kind == "float64":
            numbers = pc.filter(numbers, pc.invert(pc.is_nan(numbers)))
        if kind == "timestamp":
            numbers = values.cast(pa.int64())  # in the column's unit
            s.zone = values.type.tz or s.zone
        bounds = pc.min_max(numbers)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if kind == "timestamp" and low is not None:  # whole seconds around every value
            per_second = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[values.type.unit]
            low, high = low // per_second, -(-high // per_second)
        if low is not None:
            s.low = low if s.low is None else min(s.low, low)
            s.high = high if s.high is None else max(s.high, high)
    elif kind == "string":
        text = values.cast(pa.string())
        s.long_text |= (pc.max(pc.binary_length(text)).as_py() or 0) > TEXT_BYTES
        if s.values is not None:
            s.values.update(v for v in pc.unique(text).to_pylist() if v is not None)
            if len(s.values) > MAX_CATEGORIES:
                s.values = None


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date32"
    return "string"


def _toml(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**53) < value < 2**53:
        return str(value)
    if isinstance(value, float):
        return repr(value) if np.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dt.date):
        return f'"{value.isoformat()}"'
    if isinstance(value, str):  # a time, "YYYY-MM-DD HH:MM:SS"
        return json.dumps(value)
    return str(value)


def _wrap(text: str, width: int = 110) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*lines, current]
