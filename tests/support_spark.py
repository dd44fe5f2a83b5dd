"""Comparing what the two engines return: the tolerances of the differential tests in one place.

Integers, strings, booleans, dates and the positions of nulls must be equal; floats within 1e-9 relative
(Java's and C's libm may differ in the last bit, and sums are added in another order).
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

REL = 1e-9


def rows(table: pa.Table) -> list[tuple[Any, ...]]:
    decoded = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return [tuple(r.values()) for r in pa.table(decoded, names=table.column_names).to_pylist()]


def _key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, round(v, 6) if isinstance(v, float) else v) for v in row)


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL, abs_tol=1e-9)
    return bool(a == b and type(a) is type(b))


def assert_same(arrow: pa.Table, spark: pa.Table, ordered: bool = False) -> None:
    assert spark.column_names == arrow.column_names
    for name in arrow.column_names:  # same logical types (dictionary-encoded categories are plain strings)
        at, st = arrow.schema.field(name).type, spark.schema.field(name).type
        assert (at.value_type if pa.types.is_dictionary(at) else at) == st, name
    a, s = rows(arrow), rows(spark)
    assert len(a) == len(s)
    if not ordered:
        a, s = sorted(a, key=_key), sorted(s, key=_key)
    for ra, rs in zip(a, s, strict=True):
        assert all(same_value(x, y) for x, y in zip(ra, rs, strict=True)), (ra, rs)
