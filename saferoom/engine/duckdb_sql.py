"""The DuckDB lowering of the plan language's functions: one SQL translation per registry entry.

Each lowering takes its arguments as already-lowered SQL (``Arg``: the SQL text, the logical type the value
really has, and the literal value when the argument is a literal) and returns the SQL of the result and its
logical type. The semantics are the registry's (``engine.functions``) and the Arrow kernels'
(``engine.expressions``), value for value, where DuckDB's own differ:

    integer + - * neg abs   DuckDB raises on overflow: computed in HUGEINT (never overflows for two int64) and
                            wrapped to int64, as Arrow's unchecked kernels and Spark's non-ANSI mode do
    NaN                     DuckDB orders NaN above every number and NaN = NaN is true; IEEE (Arrow) says NaN
                            equals nothing and is not ordered: every float comparison tests NaN first
    x / 0, x mod 0          null (DuckDB gives infinity / NaN)
    log(x <= 0), log(NaN)   null
    casts                   the same gates as the Arrow kernels (INT_TEXT / FLOAT_TEXT, trunc and range);
                            TRY_CAST where a value might not convert, so no value makes a query fail
    cast_str of a float     Arrow's formatting ("1", not DuckDB's "1.0"): the Arrow kernel itself, run as a
                            vectorised Arrow function inside DuckDB (``ARROW_FUNCTIONS``)
    dates                   carried as INTEGER days since 1970-01-01 (what Arrow's date32 holds: DuckDB would
                            read its extremes as +-infinity); every date function is null outside years 1..9999
    timestamps              carried as BIGINT seconds since 1970-01-01 00:00:00 (Arrow's timestamp[s]), made a
                            TIMESTAMP (microseconds) only inside a function, within years 1..9999

Literals are never spliced into SQL as text that could change its meaning: numbers are formatted by Python
(``repr`` of an int or float, cast explicitly), strings become named parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from saferoom.engine.expressions import (
    COL_OFFSET,
    DAY_MAX,
    DAY_MIN,
    EARTH_RADIUS_M,
    FLOAT_TEXT,
    INT_TEXT,
    KERNELS,
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    ROW_FACTOR,
    ROW_OFFSET,
    TS_MAX,
    TS_MIN,
    bounds_of,
    date_of,
    date_unit_of,
    digits_of,
    histogram_of,
    meters_of,
    timestamp_of,
)
from saferoom.engine.functions import check_engine
from saferoom.errors import InvalidPlan

__all__ = ["ARROW_FUNCTIONS", "LOWERINGS", "Arg", "Params", "float_sql", "int_sql", "sql_type"]

NUMERIC = frozenset({"int64", "float64"})
_SQL_TYPES = {"int64": "BIGINT", "float64": "DOUBLE", "string": "VARCHAR", "bool": "BOOLEAN", "date32": "INTEGER",
              "timestamp": "BIGINT"}  # fmt: skip
_MASK = "18446744073709551615::HUGEINT"
_HALF = "9223372036854775808::HUGEINT"
_NULL_DOUBLE = "CAST(NULL AS DOUBLE)"


def sql_type(logical: str) -> str:
    """The SQL type a logical type is carried in (dates as INTEGER days, timestamps as BIGINT seconds)."""
    return _SQL_TYPES.get(logical, "VARCHAR")


def int_sql(value: int) -> str:
    return f"CAST({int(value)} AS BIGINT)"


def float_sql(value: float) -> str:
    if math.isnan(value):
        return "CAST('nan' AS DOUBLE)"
    if math.isinf(value):
        return "CAST('inf' AS DOUBLE)" if value > 0 else "CAST('-inf' AS DOUBLE)"
    return f"CAST('{float(value)!r}' AS DOUBLE)"


class Params:
    """Named parameters of one statement (string literals), so no literal is ever SQL text."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"


@dataclass(frozen=True)
class Arg:
    """A lowered argument: its SQL, the logical type of its values, and its value when it is a literal."""

    sql: str
    type: str
    literal: bool = False
    value: Any = None


Lowering = Callable[[list[Arg]], tuple[str, str]]


def _f(a: Arg) -> str:
    """A number as DOUBLE (an int64 beyond 2**53 rounds, as Arrow's unchecked cast)."""
    if a.type == "float64":
        return a.sql
    if a.type not in ("int64", "null"):
        raise InvalidPlan(f"expected a number, got {a.type}")
    return f"CAST({a.sql} AS DOUBLE)"


def _numbers(*args: Arg) -> None:
    for a in args:
        if a.type not in ("int64", "float64", "null"):
            raise InvalidPlan(f"arithmetic needs numbers, got {a.type}")


def wrap(hugeint_sql: str) -> str:
    """A HUGEINT wrapped into int64 (two's complement), as Arrow's unchecked integer kernels compute."""
    return f"CAST((({hugeint_sql}) + {_HALF}) & {_MASK} AS HUGEINT) - {_HALF}"


def wrap64(hugeint_sql: str) -> str:
    return f"CAST({wrap(hugeint_sql)} AS BIGINT)"


def _h(a: Arg) -> str:
    return f"CAST({a.sql} AS HUGEINT)"


def _arith(op: str) -> Lowering:
    def lower(args: list[Arg]) -> tuple[str, str]:
        a, b = args
        _numbers(a, b)
        if "float64" in (a.type, b.type):
            return f"({_f(a)} {op} {_f(b)})", "float64"
        if a.type == "null" and b.type == "null":
            return "CAST(NULL AS BIGINT)", "int64"
        return wrap64(f"{_h(a)} {op} {_h(b)}"), "int64"

    return lower


def _div(args: list[Arg]) -> tuple[str, str]:
    a, b = args
    return f"({_f(a)} / NULLIF({_f(b)}, 0.0))", "float64"


def _mod(args: list[Arg]) -> tuple[str, str]:
    a, b = args
    _numbers(a, b)
    if "float64" in (a.type, b.type):  # C's fmod: sign of the dividend, NaN on NaN or infinity
        return f"({_f(a)} % NULLIF({_f(b)}, 0.0))", "float64"
    # Arrow: a - (a / b) * b with a truncating, unchecked divide (MIN / -1 gives 0 there, so MIN mod -1 = MIN)
    q = f"CASE WHEN {_h(b)} = -1 AND {_h(a)} = -{_HALF} THEN 0::HUGEINT ELSE {_h(a)} // NULLIF({_h(b)}, 0) END"
    return wrap64(f"{_h(a)} - ({q}) * {_h(b)}"), "int64"


def _pow(args: list[Arg]) -> tuple[str, str]:
    a, b = args
    return f"pow({_f(a)}, {_f(b)})", "float64"


def _neg(args: list[Arg]) -> tuple[str, str]:
    (a,) = args
    _numbers(a)
    if a.type == "float64":
        return f"(-{a.sql})", "float64"
    return wrap64(f"-{_h(a)}"), "int64"


def _abs(args: list[Arg]) -> tuple[str, str]:
    (a,) = args
    _numbers(a)
    if a.type == "float64":
        return f"abs({a.sql})", "float64"
    return wrap64(f"abs({_h(a)})"), "int64"


def _unary(fn: str) -> Lowering:
    return lambda args: (f"{fn}({_f(args[0])})", "float64")


def _round(args: list[Arg]) -> tuple[str, str]:
    a = args[0]
    digits = 0 if len(args) < 2 else digits_of(args[1].value)
    _numbers(a)
    if a.type == "int64" and digits >= 0:
        return a.sql, "int64"
    x = _f(a)
    if digits < 0:  # Arrow's kernel scales in its own way for tens, hundreds...: that kernel itself
        return f"saferoom_round({x}, {digits})", "float64"
    # Half away from zero (DuckDB's round, as Arrow's half_towards_infinity); a float of magnitude 2**52 *
    # 10**-digits or more has no digits left below 10**-digits: it is its own rounding. NaN and +-inf stay.
    limit = float_sql(2.0**52 * 10.0**-digits)
    return f"CASE WHEN abs({x}) < {limit} AND NOT isnan({x}) THEN round({x}, {digits}) ELSE {x} END", "float64"


def _log(args: list[Arg]) -> tuple[str, str]:
    x = _f(args[0])
    return f"ln(CASE WHEN {x} > 0.0 AND NOT isnan({x}) THEN {x} END)", "float64"


def _radians(args: list[Arg]) -> tuple[str, str]:
    return f"({_f(args[0])} * {float_sql(math.pi / 180.0)})", "float64"


def _string(t: str) -> bool:
    return t == "string"


def _compare(op: str) -> Lowering:
    nan_result = "true" if op == "<>" else "false"

    def lower(args: list[Arg]) -> tuple[str, str]:
        a, b = args
        if _string(a.type) != _string(b.type) and "null" not in (a.type, b.type):
            raise InvalidPlan(f"cannot compare {a.type} with {b.type}")
        if "float64" in (a.type, b.type) and {a.type, b.type} <= NUMERIC | {"null"}:
            x, y = _f(a), _f(b)
            return (
                f"CASE WHEN {x} IS NULL OR {y} IS NULL THEN NULL WHEN isnan({x}) OR isnan({y}) THEN {nan_result} "
                f"ELSE {x} {op} {y} END"
            ), "bool"
        if a.type == "null" or b.type == "null":
            return "CAST(NULL AS BOOLEAN)", "bool"
        if a.type != b.type and not ({a.type, b.type} <= NUMERIC):
            raise InvalidPlan(f"cannot compare {a.type} with {b.type}")
        return f"({a.sql} {op} {b.sql})", "bool"

    return lower


def _logical(op: str) -> Lowering:
    def lower(args: list[Arg]) -> tuple[str, str]:
        for a in args:
            if a.type not in ("bool", "null"):
                raise InvalidPlan(f"{op.lower()}: needs true/false values, got {a.type}")
        return f"(CAST({args[0].sql} AS BOOLEAN) {op} CAST({args[1].sql} AS BOOLEAN))", "bool"

    return lower


def _not(args: list[Arg]) -> tuple[str, str]:
    (a,) = args
    if a.type not in ("bool", "null"):
        raise InvalidPlan(f"not: needs true/false values, got {a.type}")
    return f"(NOT CAST({a.sql} AS BOOLEAN))", "bool"


def _is_null(args: list[Arg]) -> tuple[str, str]:
    return f"({args[0].sql} IS NULL)", "bool"


def _is_in(args: list[Arg], params: Params) -> tuple[str, str]:
    x, items = args[0], [a.value for a in args[1:]]
    if not all(a.literal for a in args[1:]):
        raise InvalidPlan("is_in values must be literals")
    kinds = {type(i) for i in items if i is not None}
    if len(kinds - {int, float}) > 1 or (kinds & {str} and kinds - {str}):
        raise InvalidPlan("is_in values must all be numbers or all be strings")
    present = [i for i in items if i is not None]
    if x.type == "null":
        return ("true" if None in items else "false"), "bool"
    if x.type == "string":
        if kinds - {str}:
            raise InvalidPlan(f"is_in values do not match the column type {x.type}")
        values = [params.add(i) for i in present]
        target = x.sql
    elif x.type in NUMERIC:
        if kinds - {int, float}:
            raise InvalidPlan(f"is_in values do not match the column type {x.type}")
        if x.type == "float64" or float in kinds:  # compared as floats, as comparisons are
            values, target = [float_sql(float(i)) for i in present], _f(x)
        else:
            values, target = [int_sql(i) for i in present], x.sql
    elif x.type == "bool" and kinds <= {bool}:
        values, target = ["true" if i else "false" for i in present], x.sql
    else:
        raise InvalidPlan(f"is_in values do not match the column type {x.type}")
    inside = f"COALESCE({target} IN ({', '.join(values)}), false)" if values else "false"
    if None in items:  # a null is in a set that holds null (Arrow's default)
        inside = f"({inside} OR {x.sql} IS NULL)"
    return inside, "bool"


def _between(args: list[Arg]) -> tuple[str, str]:
    x, lo, hi = args
    ge, _ = _compare(">=")([x, lo])
    le, _ = _compare("<=")([x, hi])
    return f"({ge} AND {le})", "bool"


def _clamp(args: list[Arg]) -> tuple[str, str]:
    x, lo, hi = args
    if not (lo.literal and hi.literal):
        raise InvalidPlan("clamp: the bounds must be literal finite numbers with low <= high")
    low, high = bounds_of(lo.value, hi.value)
    if x.type == "date32":
        span_lo, span_hi = math.ceil(max(low, -(2.0**31))), math.floor(min(high, 2.0**31 - 1))
        if span_lo > span_hi:
            return "CAST(NULL AS INTEGER)", "date32"
        return (
            f"CAST(CASE WHEN {x.sql} < {span_lo} THEN {span_lo} WHEN {x.sql} > {span_hi} THEN {span_hi} "
            f"ELSE {x.sql} END AS INTEGER)"
        ), "date32"
    if x.type == "timestamp":
        slo, shi = math.ceil(max(low, -(2.0**63))), math.floor(min(high, 2.0**63 - 1024))
        if slo > shi:
            return "CAST(NULL AS BIGINT)", "timestamp"
        a, b = int_sql(slo), int_sql(shi)
        return f"CASE WHEN {x.sql} < {a} THEN {a} WHEN {x.sql} > {b} THEN {b} ELSE {x.sql} END", "timestamp"
    _numbers(x)
    if x.type in ("int64", "null"):  # the integers within the bounds (none: null)
        ilo, ihi = max(math.ceil(low), -(2**63)), min(math.floor(high), 2**63 - 1)
        if ilo > ihi:
            return "CAST(NULL AS BIGINT)", "int64"
        a, b, v = int_sql(ilo), int_sql(ihi), f"CAST({x.sql} AS BIGINT)"
        return f"CASE WHEN {v} < {a} THEN {a} WHEN {v} > {b} THEN {b} ELSE {v} END", "int64"
    a, b = float_sql(float(low)), float_sql(float(high))  # NaN becomes null: the bounds hold for every value
    return (
        f"CASE WHEN isnan({x.sql}) THEN {_NULL_DOUBLE} WHEN {x.sql} < {a} THEN {a} WHEN {x.sql} > {b} THEN {b} "
        f"ELSE {x.sql} END"
    ), "float64"


def unify(a: Arg, b: Arg, what: str) -> tuple[str, str, str]:
    """Two values that meet in one column (when/otherwise, union): their SQL and common type."""
    if a.type == b.type:
        return a.sql, b.sql, a.type
    if a.type == "null":
        return f"CAST({a.sql} AS {sql_type(b.type)})", b.sql, b.type
    if b.type == "null":
        return a.sql, f"CAST({b.sql} AS {sql_type(a.type)})", a.type
    if {a.type, b.type} <= NUMERIC:
        return _f(a), _f(b), "float64"
    raise InvalidPlan(f"{what} values have different types: {a.type} and {b.type}")


def _case(args: list[Arg]) -> tuple[str, str]:
    *pairs, otherwise = args
    result = otherwise
    conditions = pairs[0::2]
    values = pairs[1::2]
    for cond in conditions:
        if cond.type not in ("bool", "null"):
            raise InvalidPlan(f"when: the condition must be true/false, got {cond.type}")
    # The common type of every value, as Arrow's pairwise unification from the last pair up reaches.
    common = result
    for value in reversed(values):
        _, _, t = unify(value, common, "when/otherwise")
        common = Arg("NULL", t)
    target = common.type

    def as_target(v: Arg) -> str:
        if v.type == target:
            return v.sql
        if target == "float64" and v.type in ("int64", "null"):
            return _f(v)
        return f"CAST({v.sql} AS {sql_type(target)})"

    whens = " ".join(
        f"WHEN CAST({c.sql} AS BOOLEAN) THEN {as_target(v)}" for c, v in zip(conditions, values, strict=True)
    )
    return f"CASE {whens} ELSE {as_target(result)} END", target


def _in_years(a: Arg, low: int, high: int) -> str:
    """A date's days or a timestamp's seconds (BIGINT), null outside years 1 to 9999 (``low``..``high``)."""
    if a.type == "null":
        return "CAST(NULL AS BIGINT)"
    return f"CASE WHEN {a.sql} BETWEEN {low} AND {high} THEN CAST({a.sql} AS BIGINT) END"


def _days(a: Arg) -> str:
    return _in_years(a, DAY_MIN, DAY_MAX)


def _seconds(a: Arg) -> str:
    return _in_years(a, TS_MIN, TS_MAX)


def _as_date(days_sql: str) -> str:
    return f"(DATE '1970-01-01' + CAST({days_sql} AS INTEGER))"


def _as_timestamp(seconds_sql: str) -> str:
    return f"make_timestamp(CAST({seconds_sql} AS BIGINT) * 1000000)"


def _temporal(a: Arg) -> str:
    """A date or timestamp as DuckDB's own DATE or TIMESTAMP, null outside years 1 to 9999."""
    return _as_timestamp(_seconds(a)) if a.type == "timestamp" else _as_date(_days(a))


def _cast_int(args: list[Arg]) -> tuple[str, str]:
    (a,) = args
    if a.type == "string":
        text = f"trim({a.sql}, ' ')"
        digits = f"regexp_replace(regexp_replace({text}, '\\.[0-9]*$', ''), '^\\+', '')"
        return f"CASE WHEN regexp_full_match({text}, '{INT_TEXT}') THEN TRY_CAST({digits} AS BIGINT) END", "int64"
    if a.type == "date32":
        return _days(a), "int64"
    if a.type == "timestamp":
        return _seconds(a), "int64"
    if a.type == "float64":  # NaN, infinity and values beyond int64 become null
        return f"CASE WHEN isnan({a.sql}) THEN NULL ELSE TRY_CAST(trunc({a.sql}) AS BIGINT) END", "int64"
    if a.type in ("int64", "bool", "null"):
        return f"CAST({a.sql} AS BIGINT)", "int64"
    raise InvalidPlan(f"cannot convert {a.type} to int64")


def _cast_float(args: list[Arg]) -> tuple[str, str]:
    (a,) = args
    if a.type == "string":
        text = f"trim({a.sql}, ' ')"
        return f"CASE WHEN regexp_full_match({text}, '{FLOAT_TEXT}') THEN TRY_CAST({text} AS DOUBLE) END", "float64"
    if a.type in ("int64", "float64", "bool", "null"):
        return f"CAST({a.sql} AS DOUBLE)", "float64"
    raise InvalidPlan(f"cannot convert {a.type} to double")


def _cast_str(args: list[Arg]) -> tuple[str, str]:
    (a,) = args
    if a.type == "float64":
        return f"saferoom_float_str({a.sql})", "string"
    if a.type in ("date32", "timestamp"):
        return f"CAST({_temporal(a)} AS VARCHAR)", "string"
    if a.type == "bool":
        return f"CASE WHEN {a.sql} THEN 'true' WHEN NOT {a.sql} THEN 'false' END", "string"
    return f"CAST({a.sql} AS VARCHAR)", "string"


def _meters(a: Arg) -> float:
    if not a.literal:
        raise InvalidPlan("meters must be a literal number between 10 and 1,000,000")
    return meters_of(a.value)


def _lon_scale(row: str, meters: float) -> str:
    ref_lat = f"((({row}) + 0.5) * {float_sql(meters)} / {float_sql(M_PER_DEG_LAT)})"
    return f"(cos({ref_lat} * {float_sql(math.pi / 180.0)}) * {float_sql(M_PER_DEG_LON)})"


def _grid_cell(args: list[Arg]) -> tuple[str, str]:
    lat, lon, m = args
    meters = _meters(m)
    mm = float_sql(meters)
    row = f"floor({_f(lat)} * {float_sql(M_PER_DEG_LAT)} / {mm})"
    col = f"floor({_f(lon)} * {_lon_scale(row, meters)} / {mm})"
    cell = f"(({row} + {float_sql(ROW_OFFSET)}) * {float_sql(ROW_FACTOR)} + ({col} + {float_sql(COL_OFFSET)}))"
    return _cast_int([Arg(cell, "float64")])


def _cell_parts(cell: Arg) -> tuple[str, str]:
    if cell.type not in ("int64", "null"):
        raise InvalidPlan(f"a grid cell is an integer, got {cell.type}")
    c = f"CAST({cell.sql} AS BIGINT)"
    row = f"CAST({c} // {ROW_FACTOR} - {ROW_OFFSET} AS DOUBLE)"
    col = f"CAST({c} - ({c} // {ROW_FACTOR}) * {ROW_FACTOR} - {COL_OFFSET} AS DOUBLE)"
    return row, col


def _cell_lat(args: list[Arg]) -> tuple[str, str]:
    meters = _meters(args[1])
    row, _ = _cell_parts(args[0])
    return f"(({row} + 0.5) * {float_sql(meters)} / {float_sql(M_PER_DEG_LAT)})", "float64"


def _cell_lon(args: list[Arg]) -> tuple[str, str]:
    meters = _meters(args[1])
    row, col = _cell_parts(args[0])
    return f"(({col} + 0.5) * {float_sql(meters)} / {_lon_scale(row, meters)})", "float64"


def _distance_m(args: list[Arg]) -> tuple[str, str]:
    lat1, lon1, lat2, lon2 = (_f(a) for a in args)
    rad = float_sql(math.pi / 180.0)
    p1, p2 = f"({lat1} * {rad})", f"({lat2} * {rad})"
    dlat = f"({p2} - {p1})"
    dlon = f"(({lon2} - {lon1}) * {rad})"
    a = f"(pow(sin({dlat} / 2.0), 2.0) + (cos({p1}) * cos({p2})) * pow(sin({dlon} / 2.0), 2.0))"
    # Arrow's min_element_wise takes a number over NaN: a NaN haversine term becomes 1.0
    capped = f"CASE WHEN {a} IS NULL THEN NULL WHEN isnan({a}) OR {a} > 1.0 THEN 1.0 ELSE {a} END"
    return f"(asin(sqrt({capped})) * {float_sql(2.0 * EARTH_RADIUS_M)})", "float64"


def _histogram(args: list[Arg]) -> tuple[str, str]:
    x = args[0]
    if not all(a.literal for a in args[1:]):
        raise InvalidPlan("histogram: start, stop and bins must be literals")
    start, stop, bins = histogram_of(*(a.value for a in args[1:]))
    width = (float(stop) - float(start)) / bins
    xf = _f(x)
    index = f"floor(({xf} - {float_sql(start)}) / {float_sql(width)})"
    last = float_sql(float(bins - 1))
    clipped = f"(CASE WHEN {index} < 0.0 THEN 0.0 WHEN {index} > {last} THEN {last} ELSE {index} END)"
    return (
        f"CASE WHEN isnan({xf}) THEN {_NULL_DOUBLE} ELSE {clipped} * {float_sql(width)} + {float_sql(start)} END"
    ), "float64"


def _date(args: list[Arg]) -> tuple[str, str]:
    if not all(a.literal for a in args):
        raise InvalidPlan("date: its arguments must be literals")
    day = (date_of([a.value for a in args]) - date_of(["1970-01-01"])).days
    return f"CAST({day} AS INTEGER)", "date32"


def _timestamp(args: list[Arg]) -> tuple[str, str]:
    if not all(a.literal for a in args):
        raise InvalidPlan("timestamp: its arguments must be literals")
    moment = timestamp_of([a.value for a in args])
    return int_sql(int((moment - timestamp_of(["1970-01-01 00:00:00"])).total_seconds())), "timestamp"


def _require_date(fn: str, a: Arg, allowed: tuple[str, ...] = ("date32",)) -> None:
    if a.type not in (*allowed, "null"):
        what = {"date32": "a date", "timestamp": "a timestamp"}
        raise InvalidPlan(f"{fn}: needs {' or '.join(what[t] for t in allowed)}, got {a.type}")


_TEMPORAL = ("date32", "timestamp")


def _date_part(fn: str, part: str, allowed: tuple[str, ...] = _TEMPORAL) -> Lowering:
    def lower(args: list[Arg]) -> tuple[str, str]:
        (a,) = args
        _require_date(fn, a, allowed)
        return f"CAST({part}({_temporal(a)}) AS BIGINT)", "int64"

    return lower


def _date_trunc(args: list[Arg]) -> tuple[str, str]:
    a, unit_arg = args
    _require_date("date_trunc", a, _TEMPORAL)
    if not unit_arg.literal:
        raise InvalidPlan("date_trunc: the unit must be a literal")
    unit = date_unit_of(unit_arg.value, timestamp=a.type == "timestamp")
    if a.type == "timestamp":
        return f"(epoch_us(date_trunc('{unit}', {_temporal(a)})) // 1000000)", "timestamp"
    truncated = f"CAST(date_trunc('{unit}', {_as_date(_days(a))}) AS DATE)"
    return f"CAST(date_diff('day', DATE '1970-01-01', {truncated}) AS INTEGER)", "date32"


def _to_date(args: list[Arg]) -> tuple[str, str]:
    (a,) = args
    _require_date("to_date", a, _TEMPORAL)
    if a.type == "timestamp":  # its day, floored (before 1970 too); exact in a double (|seconds| < 2**53)
        return f"CAST(floor(CAST({_seconds(a)} AS DOUBLE) / 86400) AS INTEGER)", "date32"
    return f"CAST({_days(a)} AS INTEGER)", "date32"


def _seconds_between(args: list[Arg]) -> tuple[str, str]:
    start, end = args
    _require_date("seconds_between", start, ("timestamp",))
    _require_date("seconds_between", end, ("timestamp",))
    return f"({_seconds(end)} - {_seconds(start)})", "int64"


def _days_between(args: list[Arg]) -> tuple[str, str]:
    start, end = args
    _require_date("days_between", start)
    _require_date("days_between", end)
    return f"({_days(end)} - {_days(start)})", "int64"


def _add_days(args: list[Arg]) -> tuple[str, str]:
    a, n = args
    _require_date("add_days", a)
    if n.type not in ("int64", "null"):
        raise InvalidPlan(f"add_days: the number of days must be an integer, got {n.type}")
    span = DAY_MAX - DAY_MIN
    steps = f"CASE WHEN {n.sql} BETWEEN {-span} AND {span} THEN CAST({n.sql} AS BIGINT) END"
    days = f"({_days(a)} + ({steps}))"
    return f"CAST(CASE WHEN {days} BETWEEN {DAY_MIN} AND {DAY_MAX} THEN {days} END AS INTEGER)", "date32"


# Functions that need the statement's parameters (string literals) take them as a second argument.
ParamLowering = Callable[[list[Arg], Params], tuple[str, str]]


def _plain(lower: Lowering) -> ParamLowering:
    return lambda args, params: lower(args)


LOWERINGS: dict[str, ParamLowering] = {
    "add": _plain(_arith("+")),
    "sub": _plain(_arith("-")),
    "mul": _plain(_arith("*")),
    "div": _plain(_div),
    "mod": _plain(_mod),
    "pow": _plain(_pow),
    "neg": _plain(_neg),
    "abs": _plain(_abs),
    "floor": _plain(_unary("floor")),
    "ceil": _plain(_unary("ceil")),
    "round": _plain(_round),
    "sqrt": _plain(_unary("sqrt")),
    "log": _plain(_log),
    "exp": _plain(_unary("exp")),
    "sin": _plain(_unary("sin")),
    "cos": _plain(_unary("cos")),
    "radians": _plain(_radians),
    "eq": _plain(_compare("=")),
    "ne": _plain(_compare("<>")),
    "lt": _plain(_compare("<")),
    "le": _plain(_compare("<=")),
    "gt": _plain(_compare(">")),
    "ge": _plain(_compare(">=")),
    "and": _plain(_logical("AND")),
    "or": _plain(_logical("OR")),
    "not": _plain(_not),
    "is_null": _plain(_is_null),
    "is_in": _is_in,
    "between": _plain(_between),
    "clamp": _plain(_clamp),
    "case": _plain(_case),
    "cast_int": _plain(_cast_int),
    "cast_float": _plain(_cast_float),
    "cast_str": _plain(_cast_str),
    "grid_cell": _plain(_grid_cell),
    "cell_lat": _plain(_cell_lat),
    "cell_lon": _plain(_cell_lon),
    "distance_m": _plain(_distance_m),
    "histogram": _plain(_histogram),
    "date": _plain(_date),
    "year": _plain(_date_part("year", "year")),
    "month": _plain(_date_part("month", "month")),
    "day": _plain(_date_part("day", "day")),
    "weekday": _plain(_date_part("weekday", "isodow")),
    "date_trunc": _plain(_date_trunc),
    "days_between": _plain(_days_between),
    "add_days": _plain(_add_days),
    "timestamp": _plain(_timestamp),
    "hour": _plain(_date_part("hour", "hour", ("timestamp",))),
    "minute": _plain(_date_part("minute", "minute", ("timestamp",))),
    "second": _plain(_date_part("second", "second", ("timestamp",))),
    "to_date": _plain(_to_date),
    "seconds_between": _plain(_seconds_between),
}
check_engine("DuckDB", LOWERINGS)


def _float_str(values: pa.Array) -> pa.Array:
    result = KERNELS["cast_str"](values)
    assert isinstance(result, pa.Array | pa.ChunkedArray)
    return result.combine_chunks() if isinstance(result, pa.ChunkedArray) else result


def _round_by(values: pa.Array, digits: pa.Array) -> pa.Array:
    result = KERNELS["round"](values, pa.scalar(digits[0].as_py(), pa.int64()))
    assert isinstance(result, pa.Array | pa.ChunkedArray)
    return result.combine_chunks() if isinstance(result, pa.ChunkedArray) else result


# Arrow kernels run inside DuckDB, a vector at a time: (name, function, argument SQL types, result SQL type,
# the registry function whose lowering calls it; registered only for plans that call that one).
ARROW_FUNCTIONS: tuple[tuple[str, Callable[..., pa.Array], list[str], str, str], ...] = (
    ("saferoom_float_str", _float_str, ["DOUBLE"], "VARCHAR", "cast_str"),
    ("saferoom_round", _round_by, ["DOUBLE", "BIGINT"], "DOUBLE", "round"),
)
