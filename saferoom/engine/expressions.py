"""The Arrow kernels of the plan language's functions (pyarrow.compute, vectorised, none per row), and
``evaluate``, which computes an expression over a table through the function registry (``engine.functions``).

Semantics are the registry's (its module docstring) and match Spark SQL in non-ANSI mode: division and modulo
by zero give null, integer arithmetic wraps around on overflow, a value that cannot be converted becomes null,
comparisons with null give null. No kernel fails because of the values it meets (null, NaN, +-infinity, the
int64 extremes): an error that depended on data would tell the researcher something about one row (e.g.
whether one person's age times a huge number overflows). Errors raised here name functions and types only.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.engine.plan import Call, Col, Expr, Lit
from saferoom.errors import InvalidPlan

__all__ = [
    "DATE_UNITS",
    "DAY_MAX",
    "DAY_MIN",
    "KERNELS",
    "TIMESTAMP",
    "TIMESTAMP_UNITS",
    "TS_MAX",
    "TS_MIN",
    "Value",
    "bounds_of",
    "date_of",
    "date_unit_of",
    "decode",
    "digits_of",
    "evaluate",
    "histogram_of",
    "materialize",
    "meters_of",
    "timestamp_of",
]

Value: TypeAlias = pa.ChunkedArray | pa.Array | pa.Scalar

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 111_320.0
ROW_OFFSET = 2**20
COL_OFFSET = 2**21
ROW_FACTOR = 2**22
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError, ValueError)


def _type(value: Value) -> pa.DataType:
    return value.type


def decode(value: Value) -> Value:
    """Dictionary-encoded values as plain values (categories are stored encoded; most kernels want plain)."""
    if pa.types.is_dictionary(_type(value)):
        return pc.cast(value, value.type.value_type)
    return value


def materialize(value: Value, length: int) -> pa.ChunkedArray | pa.Array:
    """A column of ``length`` rows: scalars (from literal-only expressions) are broadcast."""
    if isinstance(value, pa.Scalar):
        if not value.is_valid:
            return pa.nulls(length, value.type if value.type != pa.null() else pa.null())
        return pa.repeat(value, length)
    return value


def _is_float(value: Value) -> bool:
    return bool(pa.types.is_floating(_type(value)))


def _to_float(value: Value) -> Value:
    value = decode(value)
    if pa.types.is_floating(_type(value)):
        return value
    if not (pa.types.is_integer(_type(value)) or pa.types.is_null(_type(value))):
        raise InvalidPlan(f"expected a number, got {_type(value)}")
    return pc.cast(value, pa.float64(), safe=False)  # int64 beyond 2**53 rounds: a checked cast would fail on it


def _numeric(*values: Value) -> None:
    for v in values:
        t = _type(v)
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
            raise InvalidPlan(f"arithmetic needs numbers, got {t}")


def _zero_to_null(value: Value) -> Value:
    null = pa.scalar(None, _type(value))
    return pc.if_else(pc.equal(value, pa.scalar(0, _type(value))), null, value)


def _widened(a: Value, b: Value) -> tuple[Value, Value]:
    """An integer beside a float as a float, converted unchecked: Arrow's implicit cast is checked and would
    fail on integers beyond 2**53."""
    ta, tb = _type(a), _type(b)
    if pa.types.is_integer(ta) and pa.types.is_floating(tb):
        return _to_float(a), b
    if pa.types.is_floating(ta) and pa.types.is_integer(tb):
        return a, _to_float(b)
    return a, b


def _arith(name: str) -> Callable[[Value, Value], Value]:
    def apply(a: Value, b: Value) -> Value:
        a, b = _widened(decode(a), decode(b))
        _numeric(a, b)
        return pc.call_function(name, [a, b])  # unchecked: integers wrap around, as Spark's (non-ANSI)

    return apply


def _div(a: Value, b: Value) -> Value:
    a, b = _to_float(a), _to_float(b)
    return pc.divide(a, _zero_to_null(b))


def _mod(a: Value, b: Value) -> Value:
    a, b = decode(a), decode(b)
    _numeric(a, b)
    if _is_float(a) or _is_float(b):
        return _fmod(_to_float(a), _zero_to_null(_to_float(b)))
    b = _zero_to_null(b)
    return pc.subtract(a, pc.multiply(pc.divide(a, b), b))  # integer divide truncates: sign follows dividend


def _fmod(a: Value, b: Value) -> Value:
    """C's fmod, element by element: exact (the quotient is never formed, so 1.5 mod 5e-324 is 0, not -inf) and
    the sign of the dividend, as Java's % on Spark; NaN where either is NaN or infinite, null where either is."""
    if isinstance(a, pa.Scalar) and isinstance(b, pa.Scalar):
        if not (a.is_valid and b.is_valid):
            return pa.scalar(None, pa.float64())
        with np.errstate(all="ignore"):
            return pa.scalar(float(np.fmod(np.float64(a.as_py()), np.float64(b.as_py()))))
    n = len(a) if not isinstance(a, pa.Scalar) else len(b)
    columns = [materialize(v, n) for v in (a, b)]
    missing = np.logical_or(*(pc.is_null(c).to_numpy(zero_copy_only=False) for c in columns))
    values = [pc.fill_null(c, 0.0).to_numpy(zero_copy_only=False) for c in columns]
    with np.errstate(all="ignore"):
        result = np.fmod(values[0], values[1])
    return pa.array(result, pa.float64(), mask=missing)


def _value_type(value: Value) -> pa.DataType:
    t = _type(value)
    return t.value_type if pa.types.is_dictionary(t) else t


def _compare(name: str) -> Callable[[Value, Value], Value]:
    def apply(a: Value, b: Value) -> Value:
        ta, tb = _value_type(a), _value_type(b)
        if (pa.types.is_string(ta) or pa.types.is_large_string(ta)) != (
            pa.types.is_string(tb) or pa.types.is_large_string(tb)
        ) and not (pa.types.is_null(ta) or pa.types.is_null(tb)):
            raise InvalidPlan(f"cannot compare {ta} with {tb}")
        # A dictionary column against a literal: compare the few categories, then map through the indices.
        if isinstance(b, pa.Scalar) and pa.types.is_dictionary(_type(a)):
            return _on_dictionary(a, lambda values: pc.call_function(name, [values, b]))
        if isinstance(a, pa.Scalar) and pa.types.is_dictionary(_type(b)):
            return _on_dictionary(b, lambda values: pc.call_function(name, [a, values]))
        return pc.call_function(name, list(_widened(decode(a), decode(b))))

    return apply


def _on_dictionary(value: Value, fn: Callable[[pa.Array], Value]) -> Value:
    if isinstance(value, pa.ChunkedArray):
        return pa.chunked_array([_on_dictionary(chunk, fn) for chunk in value.chunks], pa.bool_())
    mapped = fn(value.dictionary)
    return pc.take(mapped, value.indices)


def _logical(name: str) -> Callable[[Value, Value], Value]:
    def apply(a: Value, b: Value) -> Value:
        for v in (a, b):
            if not (pa.types.is_boolean(_type(v)) or pa.types.is_null(_type(v))):
                raise InvalidPlan(f"{name}: needs true/false values, got {_type(v)}")
        return pc.call_function(name, [a, b])

    return apply


def _not(a: Value) -> Value:
    if not (pa.types.is_boolean(_type(a)) or pa.types.is_null(_type(a))):
        raise InvalidPlan(f"not: needs true/false values, got {_type(a)}")
    return pc.invert(a)


def _literal(value: Value, what: str) -> Any:
    if not isinstance(value, pa.Scalar):
        raise InvalidPlan(f"{what} must be a literal")
    return value.as_py()


def _is_in(x: Value, *values: Value) -> Value:
    items = [_literal(v, "is_in values") for v in values]
    kinds = {type(i) for i in items if i is not None}
    if len(kinds - {int, float}) > 1 or (kinds & {str} and kinds - {str}):
        raise InvalidPlan("is_in values must all be numbers or all be strings")
    if pa.types.is_dictionary(_type(x)):
        strings = pa.array(items, pa.string()) if kinds <= {str} else pa.array(items)
        found = _on_dictionary(x, lambda d: pc.is_in(d, value_set=strings.cast(d.type)))
        return pc.fill_null(found, None in items)  # a null index: null is in the set only if listed (never null)
    x = decode(x)
    if pa.types.is_integer(_type(x)) and float in kinds:
        x = _to_float(x)  # an integer column against fractional values: compared as floats, as comparisons are
    try:
        if pa.types.is_floating(_type(x)):  # numbers built as floats directly: an int beyond 2**53 rounds
            value_set = pa.array([None if i is None else float(i) + 0.0 for i in items], pa.float64())
            x = pc.add(x, 0.0)  # -0.0 + 0.0 is 0.0: -0.0 equals 0.0 here as in eq (the hash tells them apart)
        elif pa.types.is_integer(_type(x)):
            value_set = pa.array(items, pa.int64())
        else:
            value_set = pa.array(items).cast(_type(x))
    except (*_ARROW_ERRORS, OverflowError):  # the literals' types against the column's: plan, not data
        raise InvalidPlan(f"is_in values do not match the column type {_type(x)}") from None
    return pc.is_in(x, value_set=value_set)


def _clamp_array(chunk: pa.Array, lo: float, hi: float) -> pa.Array:
    floating = pa.types.is_floating(chunk.type)
    if chunk.null_count == 0 and len(chunk):
        values = chunk.to_numpy(zero_copy_only=False)
        low, high = values.min(), values.max()  # NaN if any value is NaN: then neither test below holds
        if low >= lo and high <= hi:  # the usual case: one cheap pass, nothing to change
            return chunk
        if not (floating and np.isnan(low)):
            return pa.array(np.clip(values, lo, hi), type=chunk.type)
    below, above = pc.less(chunk, lo), pc.greater(chunk, hi)
    clamped = pc.if_else(below, pa.scalar(lo, chunk.type), pc.if_else(above, pa.scalar(hi, chunk.type), chunk))
    if floating:  # NaN is no number within the bounds: it becomes null, so the bounds hold for every value
        clamped = pc.if_else(pc.is_nan(clamped), pa.scalar(None, chunk.type), clamped)
    return clamped


def _clamp(x: Value, lo: Value, hi: Value) -> Value:
    """x limited to [lo, hi]; nulls and NaN are null: the public bounds a catalog declares hold for every value."""
    kind = _type(x)
    low, high = bounds_of(_literal(lo, "clamp: the bounds"), _literal(hi, "clamp: the bounds"))
    if pa.types.is_date32(kind):  # bounds in days since 1970-01-01
        days = pc.cast(pc.cast(x, pa.int32()), pa.int64())
        span = (max(low, -(2.0**31)), min(high, 2.0**31 - 1))
        return pc.cast(pc.cast(_clamp(days, pa.scalar(span[0]), pa.scalar(span[1])), pa.int32()), pa.date32())
    if pa.types.is_timestamp(kind):  # bounds in seconds since 1970-01-01 00:00:00
        seconds = pc.cast(x, pa.int64())
        return pc.cast(_clamp(seconds, pa.scalar(low), pa.scalar(high)), TIMESTAMP)
    if pa.types.is_integer(kind):  # the integers within the bounds (none: null)
        low, high = max(math.ceil(low), -(2**63)), min(math.floor(high), 2**63 - 1)
        if low > high:
            return pa.scalar(None, kind) if isinstance(x, pa.Scalar) else pa.nulls(len(x), kind)
    if isinstance(x, pa.Scalar):
        if not x.is_valid or (pa.types.is_floating(kind) and math.isnan(x.as_py())):
            return pa.scalar(None, kind)
        return pa.scalar(min(max(x.as_py(), low), high), kind)
    chunks = x.chunks if isinstance(x, pa.ChunkedArray) else [x]
    out = [_clamp_array(c, low, high) for c in chunks]
    return pa.chunked_array(out, type=kind) if isinstance(x, pa.ChunkedArray) else out[0]


def _between(x: Value, lo: Value, hi: Value) -> Value:
    return pc.and_kleene(_compare("greater_equal")(x, lo), _compare("less_equal")(x, hi))


def _case(*args: Value) -> Value:
    *pairs, otherwise = args
    result = decode(otherwise)
    for i in range(len(pairs) - 2, -1, -2):
        cond, value = pairs[i], decode(pairs[i + 1])
        if not (pa.types.is_boolean(_type(cond)) or pa.types.is_null(_type(cond))):
            raise InvalidPlan(f"when: the condition must be true/false, got {_type(cond)}")
        cond = pc.fill_null(cond, False) if not isinstance(cond, pa.Scalar) else pa.scalar(bool(cond.as_py()))
        value, result = _unify(value, result)
        result = pc.if_else(cond, value, result)
    return result


def _unify(a: Value, b: Value) -> tuple[Value, Value]:
    ta, tb = _type(a), _type(b)
    if ta == tb or pa.types.is_null(ta) or pa.types.is_null(tb):
        if pa.types.is_null(ta) and not pa.types.is_null(tb):
            return pc.cast(a, tb), b
        if pa.types.is_null(tb) and not pa.types.is_null(ta):
            return a, pc.cast(b, ta)
        return a, b
    if (pa.types.is_integer(ta) or pa.types.is_floating(ta)) and (pa.types.is_integer(tb) or pa.types.is_floating(tb)):
        return _to_float(a), _to_float(b)
    raise InvalidPlan(f"when/otherwise values have different types: {ta} and {tb}")


def _unary_float(fn: Callable[[Value], Value]) -> Callable[[Value], Value]:
    return lambda a: fn(_to_float(a))


def _round(a: Value, ndigits: Value | None = None) -> Value:
    digits = 0 if ndigits is None else digits_of(_literal(ndigits, "round: ndigits"))
    a = decode(a)
    _numeric(a)
    if pa.types.is_integer(_type(a)) and digits >= 0:
        return a
    # Half away from zero, like Spark's round (HALF_UP). A float of magnitude 2**52 * 10**-digits or more has
    # no digits left below 10**-digits: it is its own rounding (and Arrow's kernel would overflow on it).
    x = _to_float(a)
    small = pc.less(pc.abs(x), 2.0**52 * 10.0**-digits)  # NaN and +-inf: false, kept as they are
    safe = pc.if_else(small, x, pa.scalar(0.0))
    return pc.if_else(small, pc.round(safe, ndigits=digits, round_mode="half_towards_infinity"), x)


def _log(a: Value) -> Value:
    a = _to_float(a)
    return pc.ln(pc.if_else(pc.greater(a, 0.0), a, pa.scalar(None, pa.float64())))


# Text that converts to a number (after trimming spaces); anything else converts to null. An integer may carry
# a fraction, which is truncated ("5.7" -> 5), as Spark's cast does.
INT_TEXT = r"^[+-]?[0-9]{1,18}(\.[0-9]*)?$"
FLOAT_TEXT = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def _cast(target: pa.DataType) -> Callable[[Value], Value]:
    """Convert; a value that does not convert (text that is not a number, a float beyond int64) becomes null."""

    def apply(a: Value) -> Value:
        a = decode(a)
        null = pa.scalar(None, _type(a))
        if target in (pa.int64(), pa.float64()) and pa.types.is_string(_type(a)):
            text = pc.utf8_trim(a, " ")
            if target == pa.int64():
                valid = pc.match_substring_regex(text, INT_TEXT)
                text = pc.replace_substring_regex(pc.replace_substring_regex(text, r"\.[0-9]*$", ""), r"^\+", "")
            else:
                valid = pc.match_substring_regex(text, FLOAT_TEXT)
            a = pc.if_else(valid, text, null)
        elif pa.types.is_date32(_type(a)):
            if target == pa.int64():
                return _days(a)  # days since 1970-01-01
            a = _to_date(_days(a))  # as text: null outside years 1 to 9999, like every date function
        elif pa.types.is_timestamp(_type(a)):
            if target == pa.int64():
                return _seconds(a)  # seconds since 1970-01-01 00:00:00
            a = _to_timestamp(_seconds(a))  # as text "YYYY-MM-DD HH:MM:SS", null outside years 1 to 9999
        elif target == pa.int64() and _is_float(a):
            a = pc.trunc(a)
            inside = pc.and_(pc.greater_equal(a, -(2.0**63)), pc.less(a, 2.0**63))  # NaN: false
            a = pc.if_else(inside, a, null)
        try:
            # Unchecked where every value converts (integers to floats round; text and floats were gated above).
            return pc.cast(a, target, safe=target == pa.int64() and not pa.types.is_integer(_type(a)))
        except _ARROW_ERRORS:  # only a type can make it fail (the values were gated above)
            raise InvalidPlan(f"cannot convert {_type(a)} to {target}") from None

    return apply


def meters_of(meters: Any) -> float:
    """A grid's cell size from its literal (both engines and the registry check it the same way)."""
    if isinstance(meters, bool) or not isinstance(meters, int | float) or not 10 <= meters <= 1_000_000:
        raise InvalidPlan("meters must be a literal number between 10 and 1,000,000")
    return float(meters)


def histogram_of(start: Any, stop: Any, bins: Any) -> tuple[float, float, int]:
    """A histogram's (start, stop, bins) from its literals: finite edges, start < stop, a finite bin width."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, stop)) or not start < stop:
        raise InvalidPlan("histogram: start and stop must be numbers with start < stop")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 10_000:
        raise InvalidPlan("histogram: bins must be an integer between 1 and 10,000")
    if not math.isfinite((float(stop) - float(start)) / bins):
        raise InvalidPlan("histogram: the bins are wider than the largest number")
    return float(start), float(stop), bins


def digits_of(ndigits: Any) -> int:
    """round's number of digits from its literal."""
    if isinstance(ndigits, bool) or not isinstance(ndigits, int) or not -15 <= ndigits <= 15:
        raise InvalidPlan("round: ndigits must be an integer literal between -15 and 15")
    return ndigits


def bounds_of(low: Any, high: Any) -> tuple[float, float]:
    """clamp's bounds from its literals: finite numbers, low <= high."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
    if not numbers or not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise InvalidPlan("clamp: the bounds must be literal finite numbers with low <= high")
    return low, high


def _meters(value: Value) -> float:
    return meters_of(_literal(value, "meters"))


def _grid_row(lat: Value, meters: float) -> Value:
    return pc.floor(pc.divide(pc.multiply(_to_float(lat), M_PER_DEG_LAT), meters))


def _lon_scale(row: Value, meters: float) -> Value:
    ref_lat = pc.divide(pc.multiply(pc.add(row, 0.5), meters), M_PER_DEG_LAT)
    return pc.multiply(pc.cos(pc.multiply(ref_lat, math.pi / 180.0)), M_PER_DEG_LON)


def _grid_cell(lat: Value, lon: Value, meters_value: Value) -> Value:
    meters = _meters(meters_value)
    row = _grid_row(lat, meters)
    col = pc.floor(pc.divide(pc.multiply(_to_float(lon), _lon_scale(row, meters)), meters))
    cell = pc.add(pc.multiply(pc.add(row, float(ROW_OFFSET)), float(ROW_FACTOR)), pc.add(col, float(COL_OFFSET)))
    return _cast(pa.int64())(cell)  # NaN, infinity and ids beyond int64 (no real coordinates) become null


def _cell_parts(cell: Value) -> tuple[Value, Value]:
    cell = decode(cell)
    if not pa.types.is_integer(_type(cell)):
        raise InvalidPlan(f"a grid cell is an integer, got {_type(cell)}")
    cell = pc.cast(cell, pa.int64())
    row = pc.subtract(pc.divide(cell, ROW_FACTOR), ROW_OFFSET)
    col = pc.subtract(pc.subtract(cell, pc.multiply(pc.divide(cell, ROW_FACTOR), ROW_FACTOR)), COL_OFFSET)
    return pc.cast(row, pa.float64()), pc.cast(col, pa.float64())


def _cell_lat(cell: Value, meters_value: Value) -> Value:
    meters = _meters(meters_value)
    row, _ = _cell_parts(cell)
    return pc.divide(pc.multiply(pc.add(row, 0.5), meters), M_PER_DEG_LAT)


def _cell_lon(cell: Value, meters_value: Value) -> Value:
    meters = _meters(meters_value)
    row, col = _cell_parts(cell)
    return pc.divide(pc.multiply(pc.add(col, 0.5), meters), _lon_scale(row, meters))


def _distance_m(lat1: Value, lon1: Value, lat2: Value, lon2: Value) -> Value:
    rad = math.pi / 180.0
    p1, p2 = pc.multiply(_to_float(lat1), rad), pc.multiply(_to_float(lat2), rad)
    dlat = pc.subtract(p2, p1)
    dlon = pc.multiply(pc.subtract(_to_float(lon2), _to_float(lon1)), rad)
    a = pc.add(
        pc.power(pc.sin(pc.divide(dlat, 2.0)), 2.0),
        pc.multiply(pc.multiply(pc.cos(p1), pc.cos(p2)), pc.power(pc.sin(pc.divide(dlon, 2.0)), 2.0)),
    )
    a = pc.min_element_wise(a, 1.0, skip_nulls=False)
    return pc.multiply(pc.asin(pc.sqrt(a)), 2.0 * EARTH_RADIUS_M)


def _histogram(x: Value, start_v: Value, stop_v: Value, bins_v: Value) -> Value:
    start, stop, bins = histogram_of(
        *(_literal(v, "histogram: start, stop and bins") for v in (start_v, stop_v, bins_v))
    )
    width = (float(stop) - float(start)) / bins
    values = _to_float(x)
    if isinstance(values, pa.Scalar):
        return _histogram_of(pa.array([values.as_py()], pa.float64()), float(start), width, bins)[0]
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([_histogram_of(c, float(start), width, bins) for c in values.chunks], pa.float64())
    return _histogram_of(values, float(start), width, bins)


def _histogram_of(values: pa.Array, start: float, width: float, bins: int) -> pa.Array:
    """Each value's bin's lower edge ``start + i * width``, ``i = floor((x - start) / width)`` clamped to the
    bins (so +-infinity and values beyond the edges fall in the outer bins), null for null and NaN: one numpy pass
    over a float64 chunk in place (nine pyarrow kernels, a column each, cost three times as much). The same IEEE
    operations in the same order as those kernels, so the same bits (``tests/engine/test_engine_execution.py``);
    ``+ 0.0`` turns a bin index of -0.0 (a value just below ``start`` whose quotient rounds to it) into the +0.0
    that Arrow's clamp to [0, bins - 1] gives."""
    x = values.to_numpy(zero_copy_only=False)  # float64: nulls become NaN
    with np.errstate(all="ignore"):  # overflow to infinity and NaN are values here, not errors
        index = np.subtract(x, start)
        np.divide(index, width, out=index)
        np.floor(index, out=index)
        np.clip(index, 0.0, float(bins - 1), out=index)
        np.add(index, 0.0, out=index)
        np.multiply(index, width, out=index)
        np.add(index, start, out=index)
    return pa.array(index, pa.float64(), mask=np.isnan(x))  # NaN (and null) have no bin


# Dates: every function works on the days of years 1 to 9999 (what both engines and Python represent); a date32
# outside them (the type holds +-5.8 million years) is null to every date function, as an impossible value.
DAY_MIN, DAY_MAX = -719_162, 2_932_896  # 0001-01-01 and 9999-12-31, days since 1970-01-01
DATE_UNITS = ("year", "quarter", "month", "week")
# Timestamps: wall-clock date and time to the second, no time zone (Arrow timestamp[s]); likewise within years
# 1 to 9999, as seconds since 1970-01-01 00:00:00.
TIMESTAMP = pa.timestamp("s")
TS_MIN, TS_MAX = DAY_MIN * 86_400, DAY_MAX * 86_400 + 86_399  # 0001-01-01 00:00:00, 9999-12-31 23:59:59
TIMESTAMP_UNITS = (*DATE_UNITS, "day", "hour", "minute")


def date_of(values: list[Any]) -> dt.date:
    """A date literal from ``"YYYY-MM-DD"`` or (year, month, day): both engines and the registry check it so."""
    try:
        if len(values) == 1 and isinstance(values[0], str) and len(values[0]) == 10:
            return dt.date.fromisoformat(values[0])
        if len(values) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return dt.date(*values)
    except (ValueError, OverflowError):
        pass
    raise InvalidPlan('date: give "YYYY-MM-DD" or year, month, day of a real date in years 1 to 9999')


def timestamp_of(values: list[Any]) -> dt.datetime:
    """A timestamp literal from ``"YYYY-MM-DD HH:MM[:SS]"`` (or with a ``T``) or (year, month, day[, hour[,
    minute[, second]]]): to the second, no time zone."""
    try:
        if len(values) == 1 and isinstance(values[0], str) and 16 <= len(values[0]) <= 19:
            text = values[0]
            if text[10] in " T" and text[:10].count("-") == 2 and ("." not in text and "+" not in text[10:]):
                parsed = dt.datetime.fromisoformat(text)
                if parsed.tzinfo is None:
                    return parsed
        if 3 <= len(values) <= 6 and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return dt.datetime(*values)
    except (ValueError, OverflowError):
        pass
    raise InvalidPlan(
        'timestamp: give "YYYY-MM-DD HH:MM:SS" or year, month, day[, hour, minute, second] of a real time in years '
        "1 to 9999 (to the second, no time zone)"
    )


def date_unit_of(unit: Any, timestamp: bool = False) -> str:
    """date_trunc's unit from its literal (a timestamp also truncates to a day, an hour or a minute)."""
    units = TIMESTAMP_UNITS if timestamp else DATE_UNITS
    if unit not in units:
        what = "of a timestamp" if timestamp else f"of a date ({', '.join(TIMESTAMP_UNITS[4:])} for timestamps)"
        raise InvalidPlan(f"date_trunc: the unit {what} must be one of {', '.join(units)}")
    return str(unit)


def _require_date(fn: str, a: Value, timestamp: bool = False) -> None:
    """A date (or, with ``timestamp``, a date or a timestamp) or null."""
    t = _type(a)
    if not (pa.types.is_date32(t) or pa.types.is_null(t) or (timestamp and t == TIMESTAMP)):
        raise InvalidPlan(f"{fn}: needs a date{' or a timestamp' if timestamp else ''}, got {t}")


def _require_timestamp(fn: str, a: Value) -> None:
    if not (_type(a) == TIMESTAMP or pa.types.is_null(_type(a))):
        raise InvalidPlan(f"{fn}: needs a timestamp, got {_type(a)}")


def _days(a: Value) -> Value:
    """A date's days since 1970-01-01 (int64), null outside years 1 to 9999."""
    if pa.types.is_null(_type(a)):
        return pa.scalar(None, pa.int64())
    days = pc.cast(pc.cast(a, pa.int32()), pa.int64())
    inside = pc.and_(pc.greater_equal(days, DAY_MIN), pc.less_equal(days, DAY_MAX))
    return pc.if_else(inside, days, pa.scalar(None, pa.int64()))


def _to_date(days: Value) -> Value:
    """Days (int64, already within years 1 to 9999, or null) as dates."""
    return pc.cast(pc.cast(days, pa.int32()), pa.date32())


def _seconds(a: Value) -> Value:
    """A timestamp's seconds since 1970-01-01 00:00:00 (int64), null outside years 1 to 9999."""
    if pa.types.is_null(_type(a)):
        return pa.scalar(None, pa.int64())
    seconds = pc.cast(a, pa.int64())
    inside = pc.and_(pc.greater_equal(seconds, TS_MIN), pc.less_equal(seconds, TS_MAX))
    return pc.if_else(inside, seconds, pa.scalar(None, pa.int64()))


def _to_timestamp(seconds: Value) -> Value:
    """Seconds (int64, already within years 1 to 9999, or null) as timestamps."""
    return pc.cast(seconds, TIMESTAMP)


def _in_years(a: Value) -> Value:
    """A date or timestamp, null where it lies outside years 1 to 9999."""
    if pa.types.is_null(_type(a)):
        return a
    if _type(a) == TIMESTAMP:
        return _to_timestamp(_seconds(a))
    return _to_date(_days(a))


def _date_part(fn: str, part: Callable[[Value], Value]) -> Callable[[Value], Value]:
    def kernel(a: Value) -> Value:
        _require_date(fn, a, timestamp=True)
        return pc.cast(part(_in_years(a)), pa.int64())

    return kernel


def _time_part(fn: str, part: Callable[[Value], Value]) -> Callable[[Value], Value]:
    def kernel(a: Value) -> Value:
        _require_timestamp(fn, a)
        return pc.cast(part(_in_years(a)), pa.int64())

    return kernel


def _date(*values: Value) -> Value:
    return pa.scalar(date_of([_literal(v, "date: its arguments") for v in values]), pa.date32())


def _timestamp(*values: Value) -> Value:
    return pa.scalar(timestamp_of([_literal(v, "timestamp: its arguments") for v in values]), TIMESTAMP)


def _date_trunc(a: Value, unit_v: Value) -> Value:
    _require_date("date_trunc", a, timestamp=True)
    unit = date_unit_of(_literal(unit_v, "date_trunc: the unit"), timestamp=_type(a) == TIMESTAMP)
    return pc.floor_temporal(_in_years(a), unit=unit, week_starts_monday=True)  # 0001-01-01 is a Monday


def _to_date_kernel(a: Value) -> Value:
    _require_date("to_date", a, timestamp=True)
    return pc.cast(_in_years(a), pa.date32())  # a timestamp's day (floored, before 1970 too)


def _days_between(start: Value, end: Value) -> Value:
    _require_date("days_between", start)
    _require_date("days_between", end)
    return pc.subtract(_days(end), _days(start))  # within +-3.7 million: never overflows


def _seconds_between(start: Value, end: Value) -> Value:
    _require_timestamp("seconds_between", start)
    _require_timestamp("seconds_between", end)
    return pc.subtract(_seconds(end), _seconds(start))  # within +-3.2e11: never overflows


def _add_days(a: Value, n: Value) -> Value:
    _require_date("add_days", a)
    if not (pa.types.is_integer(_type(n)) or pa.types.is_null(_type(n))):
        raise InvalidPlan(f"add_days: the number of days must be an integer, got {_type(n)}")
    span = DAY_MAX - DAY_MIN
    n = pc.if_else(pc.and_(pc.greater_equal(n, -span), pc.less_equal(n, span)), n, pa.scalar(None, pa.int64()))
    days = pc.add(_days(a), pc.cast(n, pa.int64()))  # both bounded: no overflow
    inside = pc.and_(pc.greater_equal(days, DAY_MIN), pc.less_equal(days, DAY_MAX))
    return _to_date(pc.if_else(inside, days, pa.scalar(None, pa.int64())))


def _numeric_unary(fn: Callable[[Value], Value], a: Value) -> Value:
    a = decode(a)
    _numeric(a)
    return fn(a)


def _sqrt(a: Value) -> Value:
    return pc.sqrt(_to_float(a))


# The Arrow kernel of every function, by registry name (``engine.functions`` builds its entries from these).
KERNELS: dict[str, Callable[..., Value]] = {
    "add": _arith("add"),
    "sub": _arith("subtract"),
    "mul": _arith("multiply"),
    "div": _div,
    "mod": _mod,
    "pow": lambda a, b: pc.power(_to_float(a), _to_float(b)),
    "neg": lambda a: _numeric_unary(pc.negate, a),
    "abs": lambda a: _numeric_unary(pc.abs, a),
    "floor": _unary_float(pc.floor),
    "ceil": _unary_float(pc.ceil),
    "round": _round,
    "sqrt": _sqrt,
    "log": _log,
    "exp": _unary_float(pc.exp),
    "sin": _unary_float(pc.sin),
    "cos": _unary_float(pc.cos),
    "radians": lambda a: pc.multiply(_to_float(a), math.pi / 180.0),
    "eq": _compare("equal"),
    "ne": _compare("not_equal"),
    "lt": _compare("less"),
    "le": _compare("less_equal"),
    "gt": _compare("greater"),
    "ge": _compare("greater_equal"),
    "and": _logical("and_kleene"),
    "or": _logical("or_kleene"),
    "not": _not,
    "is_null": lambda a: pc.is_null(a) if not isinstance(a, pa.Scalar) else pa.scalar(not a.is_valid),
    "is_in": _is_in,
    "between": _between,
    "clamp": _clamp,
    "case": _case,
    "cast_int": _cast(pa.int64()),
    "cast_float": _cast(pa.float64()),
    "cast_str": _cast(pa.string()),
    "grid_cell": _grid_cell,
    "cell_lat": _cell_lat,
    "cell_lon": _cell_lon,
    "distance_m": _distance_m,
    "histogram": _histogram,
    "date": _date,
    "year": _date_part("year", pc.year),
    "month": _date_part("month", pc.month),
    "day": _date_part("day", pc.day),
    "weekday": _date_part("weekday", lambda d: pc.day_of_week(d, count_from_zero=False, week_start=1)),
    "date_trunc": _date_trunc,
    "days_between": _days_between,
    "add_days": _add_days,
    "timestamp": _timestamp,
    "hour": _time_part("hour", pc.hour),
    "minute": _time_part("minute", pc.minute),
    "second": _time_part("second", pc.second),
    "to_date": _to_date_kernel,
    "seconds_between": _seconds_between,
}


MORSEL_ROWS = 1 << 20  # rows an expression is computed over at a time (a memory-mapped file's record batch)


def evaluate(expr: Expr, table: pa.Table) -> Value:
    """The value of ``expr`` for every row of ``table`` (a scalar when it uses no column).

    Computed a morsel at a time (the table's own batches, ``_morsels``), so that each intermediate array of a
    nested expression is a morsel's, not the table's: a distance or a grid cell over 10M rows is a dozen kernels,
    each of which would otherwise allocate, and the kernel fault in and zero, another 80 MB. Every function is
    row by row (``engine.functions``) and its result type a function of its arguments' types, so the morsels'
    results make the same column, in the table's own chunks."""
    morsels = _morsels(expr, table)
    if morsels is None:
        return _evaluate(expr, table)
    parts = [_evaluate(expr, morsel) for morsel in morsels]
    if all(isinstance(part, pa.Scalar) for part in parts):
        return parts[0]  # the expression reads no column
    arrays = [materialize(part, morsel.num_rows) for part, morsel in zip(parts, morsels, strict=True)]
    chunks = [chunk for array in arrays for chunk in (array.chunks if isinstance(array, pa.ChunkedArray) else [array])]
    kinds = {chunk.type for chunk in chunks}
    if len(kinds) != 1:  # pragma: no cover - a kernel whose type followed its values: computed over the whole
        return _evaluate(expr, table)
    return pa.chunked_array(chunks, kinds.pop())


def _morsels(expr: Expr, table: pa.Table) -> list[pa.Table] | None:
    """``table`` as tables of its record batches (zero-copy), or None where computing ``expr`` at once is as good:
    a column or a literal (nothing is computed), a table of one morsel, or one of many small chunks."""
    if not isinstance(expr, Call) or table.num_rows <= MORSEL_ROWS or not table.num_columns:
        return None
    batches = table.to_batches(max_chunksize=MORSEL_ROWS)
    if len(batches) > 2 * -(-table.num_rows // MORSEL_ROWS) + 8:
        return None  # chunks too small for a kernel call each to pay
    return [pa.Table.from_batches([batch], table.schema) for batch in batches]


def _evaluate(expr: Expr, table: pa.Table) -> Value:
    """``evaluate`` over the whole of ``table``."""
    if isinstance(expr, Col):
        try:
            return table.column(expr.name)
        except KeyError:
            raise InvalidPlan(f"unknown column {expr.name!r}") from None
    if isinstance(expr, Lit):
        if isinstance(expr.value, int) and not isinstance(expr.value, bool):
            return pa.scalar(expr.value, pa.int64())
        return pa.scalar(expr.value)
    from saferoom.engine.functions import lookup  # the registry is built from this module's kernels

    fn = lookup(expr.fn).arrow
    args = [_evaluate(a, table) for a in expr.args]
    try:
        return fn(*args)
    except InvalidPlan:
        raise
    except _ARROW_ERRORS:  # never the exception's text: it could quote a value
        kinds = ", ".join(str(_type(a)) for a in args)
        raise InvalidPlan(f"{expr.fn}({kinds}) cannot be computed") from None
