"""Cells of a released table by their keys: one tuple of plain Python values per row (categories decoded)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["MAX_GRID", "Key", "cell_keys"]

Key = tuple[Any, ...]
MAX_GRID = 10_000  # the most key combinations a table over public domains is laid out on


def cell_keys(table: pa.Table, columns: tuple[str, ...]) -> list[Key]:
    """Each row's values of ``columns`` (no columns: one empty key per row)."""
    decoded = [
        pc.cast(table.column(c), table.column(c).type.value_type)
        if pa.types.is_dictionary(table.column(c).type)
        else table.column(c)
        for c in columns
    ]
    return list(zip(*(c.to_pylist() for c in decoded), strict=True)) if columns else [() for _ in range(table.num_rows)]
