"""The plan language's functions: one registry, one entry per function, and nothing else defines one.

An entry states everything the rest of saferoom needs to know about a function:

    arity        how many arguments (min, max)
    literals     which argument positions must be literal values (grid sizes, histogram edges, ...)
    type rule    argument types -> result type; raises InvalidPlan when ill-typed (``engine.schema``)
    domain rule  argument value domains -> result domain (``Domain``: bounds, may be null / NaN / infinite);
                 the release rewrite reads it to know what a computed column can hold (``disclosure``)
    arrow        the Arrow kernel (``engine.expressions``)
    spark        the Spark Connect translation, registered by ``engine.spark`` under the same name and checked
                 against this registry when that module loads (it imports pyspark lazily; this module may not)
    api          the global name algorithm code calls it by, or None when operators/methods build it
                 (``+``, ``&``, ``.clip()``, ``.cast()``, ``when()``...)

Every function is total: no value it meets (null, NaN, +-infinity, the largest and smallest int64, empty
input) makes it fail, on either engine; what cannot be computed becomes null (division by zero, log of x <= 0,
a float beyond int64 cast to int, text that is not a number) and integer arithmetic wraps around (Spark's
non-ANSI semantics). An error that depends on data would tell the researcher a bit about one row.

Semantics (Spark equivalents in brackets where they differ in name):
    add sub mul div mod neg abs pow            arithmetic; div is true division, mod's sign follows the dividend
    floor ceil round sqrt log exp sin cos radians   round: half away from zero; log of x <= 0 is null;
                                               sqrt of a negative number is NaN
    eq ne lt le gt ge                          comparison (null in -> null out)
    and or not                                 Kleene logic
    is_null                                    true where null
    is_in(x, v1, v2, ...)                      x equals one of the literal values
    between(x, lo, hi)                         lo <= x <= hi
    case(c1, v1, c2, v2, ..., otherwise)       first true condition wins [when/otherwise]
    cast_int cast_float cast_str               type conversion (cast_int truncates towards zero)
    clamp(x, lo, hi)                           x limited to the literal bounds [lo, hi]; NaN becomes null, so
                                               the bounds hold for every value the engine can produce
    grid_cell(lat, lon, meters)                int64 id of the grid cell containing the point (see below);
                                               null where the point is not a finite coordinate
    cell_lat(cell, meters) cell_lon(cell, meters)   centre of a grid cell
    distance_m(lat1, lon1, lat2, lon2)         haversine distance in metres (earth radius 6_371_008.8 m)
    histogram(x, start, stop, bins)            lower edge of x's bin among ``bins`` equal-width bins over
                                               [start, stop); values outside (and +-inf) fall into the
                                               first/last bin; NaN becomes null

    date("2024-01-31") date(2024, 1, 31)       a date literal (years 1 to 9999)
    year month day weekday                     parts of a date as integers; weekday 1 = Monday .. 7 = Sunday
    date_trunc(x, unit)                        the first day of x's year, quarter, month or week (Monday);
                                               of a timestamp, also its day, hour or minute (a timestamp)
    days_between(start, end)                   end - start in days
    add_days(x, n)                             the date n days after x
    timestamp("2024-01-31 08:30:00")           a timestamp literal: wall-clock time to the second, no time zone
    timestamp(2024, 1, 31, 8, 30, 0)           (hour, minute, second default to 0)
    hour minute second                         parts of a timestamp as integers (year..weekday work on both)
    to_date(x)                                 the day of a timestamp (a date stays itself)
    seconds_between(start, end)                end - start in seconds
                                               Every date and time function is null for a value outside years 1
                                               to 9999 (the types hold more; no engine computes them); cast_int of
                                               a date is its days since 1970-01-01, of a timestamp its seconds

Grid cells (``meters`` a literal >= 10): row = floor(lat * 110574 / m); ref_lat = (row + 0.5) * m / 110574;
col = floor(lon * 111320 * cos(radians(ref_lat)) / m); id = (row + 2**20) * 2**22 + (col + 2**21).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from saferoom.engine import expressions as _arrow
from saferoom.engine.plan import Call, Col, Expr, Lit
from saferoom.errors import InvalidPlan

__all__ = [
    "REGISTRY",
    "Domain",
    "Function",
    "api_functions",
    "catalog_domain",
    "check_engine",
    "expr_domain",
    "hull",
    "literal_domain",
    "lookup",
    "unknown",
]

NUMERIC = frozenset({"int64", "float64"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_MAX = 1.7976931348623157e308
_ORDERED = {"lt", "le", "gt", "ge"}
_EPOCH = dt.date(1970, 1, 1)
_EPOCH_TIME = dt.datetime(1970, 1, 1)
TEMPORAL = frozenset({"date32", "timestamp"})


# --------------------------------------------------------------------------- value domains


@dataclass(frozen=True)
class Domain:
    """What values a column may hold, known before anything runs (like a DP library's column descriptor).

    ``lower``/``upper`` bound every value that is neither null nor NaN (None: no bound is known); ``null``,
    ``nan`` and ``inf`` say whether nulls, NaN and +-infinity may occur (the last two only for floats). A
    domain that may hold infinity has no finite bounds. ``categories`` is the public set of values of a
    categorical (or true/false) column, when it is known. ``distinct`` bounds how many distinct non-null
    values there can be when that is far fewer than the bounds imply (grid cells: rows x columns of the grid,
    not the span of their ids); a rule of one argument may keep it (a function of one value has at most as
    many distinct results), any other rule must not.
    """

    type: str
    lower: float | None = None
    upper: float | None = None
    null: bool = True
    nan: bool = False
    inf: bool = False
    categories: tuple[Any, ...] | None = None
    distinct: int | None = None

    @property
    def bounded(self) -> bool:
        """Finite bounds hold for every non-null value: no NaN, no infinity."""
        return self.lower is not None and self.upper is not None and not self.nan and not self.inf

    @property
    def interval(self) -> tuple[float, float] | None:
        """The bounds of the non-null, non-NaN values, when both are known."""
        if self.lower is None or self.upper is None:
            return None
        return (self.lower, self.upper)


def _numeric(
    type_: str, lo: float | None, hi: float | None, null: bool, nan: bool = False, inf: bool = False
) -> Domain:
    """A numeric domain, normalised: integer bounds beyond int64 mean wrap-around (no bounds); float bounds that
    overflow mean infinity may occur (no bounds)."""
    if type_ == "int64":
        if lo is None or hi is None or math.isnan(lo) or math.isnan(hi) or lo < INT64_MIN or hi > INT64_MAX:
            return Domain("int64", None, None, null)
        return Domain("int64", float(math.floor(lo)), float(math.ceil(hi)), null)
    if type_ == "null":
        return Domain("null")
    lo = None if lo is None or math.isnan(lo) else lo
    hi = None if hi is None or math.isnan(hi) else hi
    if (lo is not None and not math.isfinite(lo)) or (hi is not None and not math.isfinite(hi)):
        inf = True
    if inf:
        lo = hi = None
    return Domain("float64", lo, hi, null, nan, inf)


def literal_domain(value: Any) -> Domain:
    """The domain of one literal value."""
    if value is None:
        return Domain("null")
    if isinstance(value, bool):
        return Domain("bool", null=False, categories=(value,))
    if isinstance(value, int):
        return Domain("int64", float(value), float(value), null=False)
    if isinstance(value, float):
        return Domain("float64", value, value, null=False)
    return Domain("string", null=False, categories=(value,))


def catalog_domain(type_: str, lower: float | None, upper: float | None, categories: Sequence[str] | None,
                   null: bool = True, nan: bool = False) -> Domain:  # fmt: skip
    """The domain a catalog declaration gives a column (before the release step clamps it)."""
    if type_ in NUMERIC:
        return _numeric(type_, lower, upper, null, nan and type_ == "float64", inf=type_ == "float64" and lower is None)
    if type_ == "bool":
        return Domain("bool", null=null, categories=(False, True))
    if type_ in TEMPORAL and lower is not None and upper is not None:  # days or seconds since 1970-01-01
        return Domain(type_, float(lower), float(upper), null)
    return Domain(type_, null=null, categories=tuple(categories) if categories else None)


def unknown(type_: str) -> Domain:
    """Nothing known: any value of the type, null, and for floats NaN and infinity."""
    if type_ == "float64":
        return Domain("float64", null=True, nan=True, inf=True)
    return Domain(type_)


# --------------------------------------------------------------------------- type rules


def _kind(t: str) -> str:
    return "number" if t in NUMERIC else t


def _require_numeric(fn: str, types: Iterable[str]) -> None:
    for t in types:
        if t not in NUMERIC and t != "null":
            raise InvalidPlan(f"{fn}: needs numbers, got {t}")


def _comparable(fn: str, a: str, b: str) -> None:
    if "null" in (a, b):
        return
    if _kind(a) != _kind(b):
        hints = {
            frozenset({"date32", "string"}): ': write a date as date("2024-01-31")',
            frozenset({"timestamp", "string"}): ': write a time as timestamp("2024-01-31 08:30:00")',
            frozenset({"timestamp", "date32"}): ": compare to_date(x) with a date, or a timestamp with a timestamp",
        }
        hint = hints.get(frozenset({a, b}), "")
        raise InvalidPlan(f"{fn}: cannot compare {a} with {b}{hint}")
    if fn in _ORDERED and a == "bool":
        raise InvalidPlan(f"{fn}: cannot order true/false values")


def unify(what: str, types: Iterable[str]) -> str:
    """The common type of values that meet in one column (when/otherwise, union)."""
    concrete = {t for t in types if t != "null"}
    if not concrete:
        return "null"
    if concrete <= NUMERIC:
        return "float64" if "float64" in concrete else "int64"
    if len(concrete) > 1:
        raise InvalidPlan(f"{what}: values of different types ({', '.join(sorted(concrete))})")
    return concrete.pop()


TypeRule = Callable[[str, list[str]], str]


def _t_arith(fn: str, t: list[str]) -> str:
    _require_numeric(fn, t)
    return "float64" if "float64" in t else "int64"


def _t_float(fn: str, t: list[str]) -> str:
    _require_numeric(fn, t)
    return "float64"


def _t_same(fn: str, t: list[str]) -> str:
    _require_numeric(fn, t)
    return "int64" if t[0] == "int64" else "float64"


def _t_round(fn: str, t: list[str]) -> str:
    _require_numeric(fn, t[:1])
    return "int64" if t[0] == "int64" else "float64"


def _t_compare(fn: str, t: list[str]) -> str:
    _comparable(fn, t[0], t[1])
    return "bool"


def _t_logic(fn: str, t: list[str]) -> str:
    for x in t:
        if x not in ("bool", "null"):
            raise InvalidPlan(f"{fn}: needs true/false values, got {x}")
    return "bool"


def _t_is_in(fn: str, t: list[str]) -> str:
    for x in t[1:]:
        _comparable(fn, t[0], x)
    return "bool"


def _t_between(fn: str, t: list[str]) -> str:
    _comparable(fn, t[0], t[1])
    _comparable(fn, t[0], t[2])
    return "bool"


def _t_case(fn: str, t: list[str]) -> str:
    conditions, values = t[:-1][0::2], [*t[:-1][1::2], t[-1]]
    for x in conditions:
        if x not in ("bool", "null"):
            raise InvalidPlan(f"when: the condition must be true/false, got {x}")
    return unify("when/otherwise", values)


def _t_cast(target: str) -> TypeRule:
    allowed = {
        "int64": NUMERIC | {"string", "bool", "null", "date32", "timestamp"},
        "float64": NUMERIC | {"string", "bool", "null"},
    }

    def rule(fn: str, t: list[str]) -> str:
        if target in allowed and t[0] not in allowed[target]:
            raise InvalidPlan(f"{fn}: cannot convert {t[0]} to a number")
        return target

    return rule


def _t_clamp(fn: str, t: list[str]) -> str:
    """A number, a date (its bounds in days since 1970-01-01) or a timestamp (in seconds)."""
    return t[0] if t[0] in TEMPORAL else _t_same(fn, t[:1])


def _t_grid(fn: str, t: list[str]) -> str:
    _require_numeric(fn, t)
    return "int64"


def _t_cell(fn: str, t: list[str]) -> str:
    if t[0] not in ("int64", "null"):
        raise InvalidPlan(f"{fn}: a grid cell is an integer, got {t[0]}")
    _require_numeric(fn, t[1:])
    return "float64"


def _require(fn: str, types: Iterable[str], allowed: frozenset[str]) -> None:
    for t in types:
        if t not in allowed and t != "null":
            what = " or a timestamp" if "timestamp" in allowed and "date32" in allowed else ""
            name = "a timestamp" if allowed == {"timestamp"} else f"a date{what}"
            raise InvalidPlan(f"{fn}: needs {name}, got {t}")


def _require_date(fn: str, types: Iterable[str]) -> None:
    _require(fn, types, frozenset({"date32"}))


def _t_date_part(fn: str, t: list[str]) -> str:
    """year, month, day, weekday: of a date or a timestamp."""
    _require(fn, t, TEMPORAL)
    return "int64"


def _t_days_between(fn: str, t: list[str]) -> str:
    _require_date(fn, t)
    return "int64"


def _t_time_part(fn: str, t: list[str]) -> str:
    """hour, minute, second, seconds_between: of timestamps."""
    _require(fn, t, frozenset({"timestamp"}))
    return "int64"


def _t_to_date(fn: str, t: list[str]) -> str:
    _require(fn, t, TEMPORAL)
    return "date32"


def _t_date_trunc(fn: str, t: list[str]) -> str:
    _require(fn, t[:1], TEMPORAL)
    return "timestamp" if t[0] == "timestamp" else "date32"


def _t_add_days(fn: str, t: list[str]) -> str:
    _require_date(fn, t[:1])
    if t[1] not in ("int64", "null"):
        raise InvalidPlan(f"{fn}: the number of days must be an integer, got {t[1]}")
    return "date32"


# --------------------------------------------------------------------------- domain rules

DomainRule = Callable[[list[Domain], tuple[Expr, ...], str], Domain]


def _any(ds: Sequence[Domain], attribute: str) -> bool:
    return any(getattr(d, attribute) for d in ds)


def _corners(
    fn: Callable[[float, float], float], a: tuple[float, float], b: tuple[float, float]
) -> tuple[float, float]:
    values = [fn(x, y) for x in a for y in b]
    return (min(values), max(values))


def _arith_domain(op: Callable[[float, float], float], sub: bool = False) -> DomainRule:
    def rule(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
        a, b = ds
        null = a.null or b.null
        if out == "int64":
            if a.interval is None or b.interval is None:
                return Domain("int64", null=null)
            lo, hi = _corners(op, a.interval, b.interval)
            return _numeric("int64", lo, hi, null)
        # inf - inf, inf + -inf, 0 * inf: NaN wherever an operand may be infinite (or NaN)
        nan = _any(ds, "nan") or _any(ds, "inf")
        if a.interval is None or b.interval is None or _any(ds, "inf"):
            return Domain("float64", null=null, nan=nan, inf=True)
        try:
            lo, hi = _corners(op, a.interval, b.interval)
        except OverflowError:
            return Domain("float64", null=null, nan=nan, inf=True)
        return _numeric("float64", lo, hi, null, nan)

    return rule


def _d_div(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    a, b = ds
    nan = _any(ds, "nan") or (a.inf and b.inf)
    null = a.null or b.null or b.interval is None or b.interval[0] <= 0 <= b.interval[1]  # x / 0 is null
    if a.interval is None or b.interval is None or b.inf or a.inf or b.interval[0] <= 0 <= b.interval[1]:
        return Domain("float64", null=null, nan=nan, inf=True)
    try:
        lo, hi = _corners(lambda x, y: x / y, a.interval, b.interval)
    except (OverflowError, ZeroDivisionError):
        return Domain("float64", null=null, nan=nan, inf=True)
    return _numeric("float64", lo, hi, null, nan)


def _d_mod(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    a, b = ds
    null = a.null or b.null or b.interval is None or b.interval[0] <= 0 <= b.interval[1]
    nan = out == "float64" and (_any(ds, "nan") or a.inf)
    if b.interval is None or b.inf:
        return unknown(out) if out == "float64" else Domain("int64", null=True)
    m = max(abs(b.interval[0]), abs(b.interval[1]))
    lo = 0.0 if a.interval is not None and a.interval[0] >= 0 else -m
    hi = 0.0 if a.interval is not None and a.interval[1] <= 0 else m
    return _numeric(out, lo, hi, null, nan)


def _d_pow(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    a, b = ds
    null = a.null or b.null
    finite = a.interval is not None and b.interval is not None and not (a.nan or b.nan or a.inf or b.inf)
    # On a non-negative base x ** y is monotone in each argument: the corners bound it.
    if finite and a.interval and b.interval and (a.interval[0] > 0 or (a.interval[0] >= 0 and b.interval[0] >= 0)):
        try:
            lo, hi = _corners(lambda x, y: float(x) ** y, a.interval, b.interval)
            return _numeric("float64", lo, hi, null)
        except (OverflowError, ZeroDivisionError):
            return Domain("float64", null=null, nan=False, inf=True)
    return Domain("float64", null=null, nan=True, inf=True)  # a negative base to a fractional power: NaN


def _d_neg(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    if a.interval is None:
        return replace(a, categories=None)
    return _numeric(out, -a.interval[1], -a.interval[0], a.null, a.nan, a.inf)


def _d_abs(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    if a.interval is None:
        return _numeric(out, None if out == "int64" else 0.0, None, a.null, a.nan, a.inf)
    lo, hi = a.interval
    low = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
    return _numeric(out, low, max(abs(lo), abs(hi)), a.null, a.nan, a.inf)


def _monotone(fn: Callable[[float], float], lowest: float | None = None) -> DomainRule:
    def rule(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
        (a,) = ds
        if a.interval is None:
            return Domain(out, lowest, None, a.null, a.nan, a.inf) if out == "float64" else Domain(out, null=a.null)
        try:
            return _numeric(out, fn(a.interval[0]), fn(a.interval[1]), a.null, a.nan, a.inf)
        except OverflowError:
            return Domain(out, null=a.null, nan=a.nan, inf=True)

    return rule


def _d_round(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    a = ds[0]
    digits = args[1].value if len(args) > 1 and isinstance(args[1], Lit) else 0
    step = 10.0 ** -int(digits) if isinstance(digits, int) and not isinstance(digits, bool) else 1.0
    if a.interval is None:
        return replace(a, categories=None)
    return _numeric(out, a.interval[0] - step, a.interval[1] + step, a.null, a.nan, a.inf)


def _d_sqrt(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    negative = a.interval is None or a.interval[0] < 0
    upper = math.sqrt(a.interval[1]) if a.interval is not None and a.interval[1] >= 0 else None
    return _numeric("float64", 0.0, upper, a.null, a.nan or negative, a.inf)


def _d_log(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    null = a.null or a.interval is None or a.interval[0] <= 0  # log of x <= 0 is null
    # The log of a positive double lies in [log(5e-324), log(FLOAT_MAX)] = [-744.5, 709.8].
    lo = math.log(a.interval[0]) if a.interval is not None and a.interval[0] > 0 else -745.0
    hi = math.log(a.interval[1]) if a.interval is not None and a.interval[1] > 0 else 710.0
    return _numeric("float64", lo, hi, null, a.nan, a.inf)


def _d_exp(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    if a.interval is None or a.inf:
        return Domain("float64", 0.0, None, a.null, a.nan, inf=True)
    try:
        return _numeric("float64", math.exp(a.interval[0]), math.exp(a.interval[1]), a.null, a.nan)
    except OverflowError:
        return Domain("float64", 0.0, None, a.null, a.nan, inf=True)


def _d_trig(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    return Domain("float64", -1.0, 1.0, a.null, a.nan or a.inf)  # sin(inf) is NaN


def _d_bool(nullable: Callable[[list[Domain]], bool]) -> DomainRule:
    def rule(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
        return Domain("bool", null=nullable(ds), categories=(False, True))

    return rule


def _d_clamp(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    x = ds[0]
    lo, hi = ds[1].interval, ds[2].interval
    if lo is None or hi is None:  # the bounds are literal numbers (checked by the kernels and the API)
        return unknown(out)
    low, high = lo[0], hi[0]
    if x.interval is not None and max(low, x.interval[0]) <= min(high, x.interval[1]):
        low, high = max(low, x.interval[0]), min(high, x.interval[1])
    if out in TEMPORAL:  # the whole days (seconds) within the bounds
        return Domain(out, float(math.ceil(low)), float(math.floor(high)), x.null)
    return _numeric(out, low, high, x.null or x.nan)  # NaN becomes null; +-inf become the bounds


def _d_case(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    return hull([d for i, d in enumerate(ds) if i % 2 == 1 or i == len(ds) - 1], out)


def hull(values: Sequence[Domain], out: str) -> Domain:
    """The smallest domain holding every value of ``values`` (of type ``out``): when/otherwise, unions."""
    present = [d for d in values if d.type != "null"]
    null = any(d.null for d in values)
    if out == "null" or not present:
        return Domain(out)
    if out in NUMERIC:
        intervals = [d.interval for d in present]
        if any(i is None for i in intervals):
            return _numeric(out, None, None, null, _any(present, "nan"), _any(present, "inf") or out == "float64")
        known = [i for i in intervals if i is not None]
        return _numeric(out, min(i[0] for i in known), max(i[1] for i in known), null, _any(present, "nan"),
                        _any(present, "inf"))  # fmt: skip
    categories = None
    if all(d.categories is not None for d in present):
        categories = tuple(dict.fromkeys(c for d in present for c in d.categories or ()))
    return Domain(out, null=null, categories=categories)


def _d_cast_int(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    if a.type == "bool":
        return Domain("int64", 0.0, 1.0, a.null)
    if a.type == "int64":
        return replace(a, categories=None)
    if a.type in TEMPORAL:  # its days (seconds) since 1970-01-01
        (lo, hi), null = _temporal_span(a)
        return _numeric("int64", lo, hi, null)
    if a.type == "float64":  # NaN, infinity and values beyond int64 become null
        unsafe = a.nan or a.inf or a.interval is None or a.interval[0] < INT64_MIN or a.interval[1] >= 2.0**63
        if a.interval is None:
            return Domain("int64", null=True)
        lo = max(float(INT64_MIN), float(math.trunc(a.interval[0])))
        hi = min(float(INT64_MAX), float(math.trunc(a.interval[1])))
        return _numeric("int64", lo, hi, a.null or unsafe)
    return Domain("int64", -1e18, 1e18, null=True)  # text: at most 18 digits, or null


def _d_cast_float(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    if a.type == "bool":
        return Domain("float64", 0.0, 1.0, a.null)
    if a.type in NUMERIC:
        return replace(a, type="float64", categories=None)
    return Domain("float64", null=True, inf=True)  # text: "1e999" is infinity


def _d_cast_str(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (a,) = ds
    return Domain("string", null=a.null)


def _d_grid(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    """Null where the point is not a finite coordinate. Over bounded coordinates, the cells each row of the grid
    the latitudes reach can hold (``expressions._grid_cell``'s formula, row by row with its own cosine, and a
    cell of slack on every side for the floating point): a clamped lat/lon pair has thousands of cells, not one
    per person."""
    lat, lon = ds[0], ds[1]
    meters = args[2].value if isinstance(args[2], Lit) else None
    if not (lat.bounded and lon.bounded and isinstance(meters, int | float)) or isinstance(meters, bool):
        return Domain("int64", null=True)
    assert lat.interval is not None and lon.interval is not None
    m, (west, east) = float(meters), lon.interval
    south, north = (x * _arrow.M_PER_DEG_LAT / m for x in lat.interval)
    # Beyond the id's packing, too many rows to count, or longitudes no real point has: no bounds claimed.
    if not (-_arrow.ROW_OFFSET < south <= north < _arrow.ROW_OFFSET and north - south < _GRID_ROWS):
        return Domain("int64", null=True)
    if not (abs(west) <= _GRID_LON and abs(east) <= _GRID_LON):
        return Domain("int64", null=True)
    lower, upper, cells = _grid_cells(math.floor(south) - 1, math.floor(north) + 1, m, west, east)
    return Domain("int64", float(lower), float(upper), null=True, distinct=cells)


@functools.lru_cache(maxsize=256)
def _grid_cells(first: int, last: int, m: float, west: float, east: float) -> tuple[int, int, int]:
    """The lowest and highest id and the number of cells of grid rows ``first..last`` over longitudes
    ``west..east`` (at most ``_GRID_ROWS`` rows: admission's work per call stays small whatever a plan asks)."""
    cells, lower, upper = 0, _arrow.ROW_FACTOR * (2 * _arrow.ROW_OFFSET + 2), -1
    for row in range(first, last + 1):
        scale = math.cos(math.radians((row + 0.5) * m / _arrow.M_PER_DEG_LAT)) * _arrow.M_PER_DEG_LON / m
        ends = (west * scale, east * scale)
        left, right = math.floor(min(ends)) - 1, math.floor(max(ends)) + 1
        cells += right - left + 1
        base = (row + _arrow.ROW_OFFSET) * _arrow.ROW_FACTOR + _arrow.COL_OFFSET
        lower, upper = min(lower, base + left), max(upper, base + right)
    return lower, upper, cells


_GRID_ROWS = 2_000  # grid rows _d_grid counts cells of (a 100 m grid over 1.8 degrees); more: no claim
_GRID_LON = 1e6  # degrees of longitude beyond which _d_grid claims nothing (keeps every product finite)


def _d_cell(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    return Domain("float64", null=True, nan=True, inf=True)


def _d_distance(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    return Domain("float64", 0.0, math.pi * _arrow.EARTH_RADIUS_M, _any(ds, "null"), _any(ds, "nan") or _any(ds, "inf"))


def _d_histogram(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    x = ds[0]
    start, stop, bins = (a.value if isinstance(a, Lit) else None for a in args[1:])
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, stop, bins)):
        return unknown("float64")
    assert isinstance(start, int | float) and isinstance(stop, int | float) and isinstance(bins, int | float)
    width = (float(stop) - float(start)) / max(1, int(bins))
    return _numeric("float64", float(start), float(start) + width * (int(bins) - 1), x.null or x.nan)


_DAYS = (float(_arrow.DAY_MIN), float(_arrow.DAY_MAX))
_SECONDS = (float(_arrow.TS_MIN), float(_arrow.TS_MAX))
_DAY = 86_400


def _temporal_span(a: Domain) -> tuple[tuple[float, float], bool]:
    """The days (a date) or seconds (a timestamp) ``a``'s values can be, within years 1 to 9999, and whether it
    may be null to a date function (null, or a value outside those years)."""
    span = _SECONDS if a.type == "timestamp" else _DAYS
    interval = a.interval
    if interval is None or interval[0] < span[0] or interval[1] > span[1]:
        return span, True
    return interval, a.null


def _date_days(a: Domain) -> tuple[tuple[float, float], bool]:
    """The days a date (or a timestamp's day) can be, within years 1 to 9999, and whether it may be null."""
    (lo, hi), null = _temporal_span(a)
    if a.type == "timestamp":
        return (float(math.floor(lo / _DAY)), float(math.floor(hi / _DAY))), null
    return (lo, hi), null


def _date_domain(lo: float, hi: float, null: bool, type_: str = "date32") -> Domain:
    span = _SECONDS if type_ == "timestamp" else _DAYS
    if lo > span[0] or hi < span[1]:  # a strict part of the years: bounded within them
        lo, hi = max(lo, span[0]), min(hi, span[1])
    return Domain(type_, lo, hi, null)


def _to_date(days: float) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(days))


def _d_date(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    day = float((_arrow.date_of([a.value if isinstance(a, Lit) else None for a in args]) - _EPOCH).days)
    return Domain("date32", day, day, null=False)


def _d_timestamp(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    moment = _arrow.timestamp_of([a.value if isinstance(a, Lit) else None for a in args])
    second = float((moment - _EPOCH_TIME) // dt.timedelta(seconds=1))
    return Domain("timestamp", second, second, null=False)


def _d_year(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (lo, hi), null = _date_days(ds[0])
    first, last = _to_date(lo).year, _to_date(hi).year  # monotone in the date
    # A few years (a date clamped to its catalog bounds) are a public set of keys, like a category's values.
    years = tuple(range(first, last + 1)) if last - first < 200 else None
    return replace(_numeric("int64", first, last, null), categories=years)


def _d_date_part(lowest: int, highest: int) -> DomainRule:
    def rule(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
        domain = _numeric("int64", lowest, highest, _temporal_span(ds[0])[1])
        return replace(domain, categories=tuple(range(lowest, highest + 1)))  # months, hours...: public

    return rule


def _d_to_date(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (lo, hi), null = _date_days(ds[0])
    return _date_domain(lo, hi, null)


def _d_date_trunc(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (lo, hi), null = _temporal_span(ds[0])
    year = 366 * (_DAY if out == "timestamp" else 1)
    floor = _SECONDS[0] if out == "timestamp" else _DAYS[0]
    return _date_domain(max(floor, lo - year), hi, null, out)  # monotone; a unit is at most a year long


def _d_days_between(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (slo, shi), snull = _temporal_span(ds[0])
    (elo, ehi), enull = _temporal_span(ds[1])
    return _numeric("int64", elo - shi, ehi - slo, snull or enull)


def _d_add_days(ds: list[Domain], args: tuple[Expr, ...], out: str) -> Domain:
    (lo, hi), null = _date_days(ds[0])
    n = ds[1].interval
    if n is None:
        return Domain("date32", null=True)
    low, high = lo + n[0], hi + n[1]
    leaves = low < _DAYS[0] or high > _DAYS[1]  # beyond the years: null
    return _date_domain(max(low, _DAYS[0]), min(high, _DAYS[1]), null or ds[1].null or leaves)


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Function:
    """One function of the plan language (see the module docstring)."""

    name: str
    arity: tuple[int, int]
    type_rule: TypeRule
    domain_rule: DomainRule
    arrow: Callable[..., Any]
    literals: tuple[int, ...] = ()  # argument positions that must be literal values
    all_literal_after: int | None = None  # every argument from this position on must be a literal
    api: str | None = None  # the global name algorithm code calls it by
    check: Callable[[list[Any]], object] | None = None  # validates the literal arguments' values
    check_typed: Callable[[list[str], list[Any]], object] | None = None  # ... knowing the arguments' types

    def result_type(self, types: list[str], args: tuple[Expr, ...]) -> str:
        """The result type for arguments of ``types`` (InvalidPlan when the call is ill-typed)."""
        lo, hi = self.arity
        if not lo <= len(args) <= hi:
            raise InvalidPlan(f"{self.name}: takes {lo} to {hi} arguments")
        for position in self.literals:
            if position < len(args) and not isinstance(args[position], Lit):
                raise InvalidPlan(f"{self.name}: argument {position + 1} must be a literal value")
        if self.all_literal_after is not None and not all(isinstance(a, Lit) for a in args[self.all_literal_after :]):
            raise InvalidPlan(f"{self.name}: the values must be literals")
        values = [a.value if isinstance(a, Lit) else None for a in args]
        if self.check is not None:
            self.check(values)
        result = self.type_rule(self.name, types)
        if self.check_typed is not None:
            self.check_typed(types, values)
        return result


def _entry(name: str, arity: tuple[int, int], types: TypeRule, domain: DomainRule, **options: Any) -> Function:
    return Function(name, arity, types, domain, _arrow.KERNELS[name], **options)


def _digits(values: list[Any]) -> object:
    return len(values) < 2 or _arrow.digits_of(values[1])


def _meters_at(position: int) -> Callable[[list[Any]], object]:
    return lambda values: _arrow.meters_of(values[position])


_NULL_ANY = _d_bool(lambda ds: _any(ds, "null"))
_NEVER_NULL = _d_bool(lambda ds: False)

REGISTRY: Mapping[str, Function] = {
    f.name: f
    for f in (
        _entry("add", (2, 2), _t_arith, _arith_domain(lambda x, y: x + y)),
        _entry("sub", (2, 2), _t_arith, _arith_domain(lambda x, y: x - y)),
        _entry("mul", (2, 2), _t_arith, _arith_domain(lambda x, y: x * y)),
        _entry("div", (2, 2), _t_float, _d_div),
        _entry("mod", (2, 2), _t_arith, _d_mod),
        _entry("pow", (2, 2), _t_float, _d_pow),
        _entry("neg", (1, 1), _t_same, _d_neg),
        _entry("abs", (1, 1), _t_same, _d_abs),
        _entry("floor", (1, 1), _t_float, _monotone(math.floor), api="floor"),
        _entry("ceil", (1, 1), _t_float, _monotone(math.ceil), api="ceil"),
        _entry(
            "round", (1, 2), _t_round, _d_round, literals=(1,), check=lambda v: len(v) < 2 or _arrow.digits_of(v[1])
        ),
        _entry("sqrt", (1, 1), _t_float, _d_sqrt, api="sqrt"),
        _entry("log", (1, 1), _t_float, _d_log, api="log"),
        _entry("exp", (1, 1), _t_float, _d_exp, api="exp"),
        _entry("sin", (1, 1), _t_float, _d_trig),
        _entry("cos", (1, 1), _t_float, _d_trig),
        _entry("radians", (1, 1), _t_float, _monotone(math.radians)),
        _entry("eq", (2, 2), _t_compare, _NULL_ANY),
        _entry("ne", (2, 2), _t_compare, _NULL_ANY),
        _entry("lt", (2, 2), _t_compare, _NULL_ANY),
        _entry("le", (2, 2), _t_compare, _NULL_ANY),
        _entry("gt", (2, 2), _t_compare, _NULL_ANY),
        _entry("ge", (2, 2), _t_compare, _NULL_ANY),
        _entry("and", (2, 2), _t_logic, _NULL_ANY),
        _entry("or", (2, 2), _t_logic, _NULL_ANY),
        _entry("not", (1, 1), _t_logic, _NULL_ANY),
        _entry("is_null", (1, 1), lambda fn, t: "bool", _NEVER_NULL),
        _entry("is_in", (2, 1001), _t_is_in, _NEVER_NULL, all_literal_after=1),
        _entry("between", (3, 3), _t_between, _NULL_ANY),
        _entry("case", (3, 201), _t_case, _d_case),
        _entry("cast_int", (1, 1), _t_cast("int64"), _d_cast_int),
        _entry("cast_float", (1, 1), _t_cast("float64"), _d_cast_float),
        _entry("cast_str", (1, 1), _t_cast("string"), _d_cast_str),
        _entry("clamp", (3, 3), _t_clamp, _d_clamp, literals=(1, 2), check=lambda v: _arrow.bounds_of(v[1], v[2])),
        _entry("grid_cell", (3, 3), _t_grid, _d_grid, literals=(2,), api="grid_cell", check=_meters_at(2)),
        _entry("cell_lat", (2, 2), _t_cell, _d_cell, literals=(1,), api="cell_lat", check=_meters_at(1)),
        _entry("cell_lon", (2, 2), _t_cell, _d_cell, literals=(1,), api="cell_lon", check=_meters_at(1)),
        _entry("distance_m", (4, 4), _t_float, _d_distance, api="distance_m"),
        _entry(
            "histogram",
            (4, 4),
            _t_float,
            _d_histogram,
            literals=(1, 2, 3),
            api="histogram",
            check=lambda v: _arrow.histogram_of(*v[1:]),
        ),
        _entry("date", (1, 3), lambda fn, t: "date32", _d_date, all_literal_after=0, api="date", check=_arrow.date_of),
        _entry("year", (1, 1), _t_date_part, _d_year, api="year"),
        _entry("month", (1, 1), _t_date_part, _d_date_part(1, 12), api="month"),
        _entry("day", (1, 1), _t_date_part, _d_date_part(1, 31), api="day"),
        _entry("weekday", (1, 1), _t_date_part, _d_date_part(1, 7), api="weekday"),
        _entry(
            "date_trunc",
            (2, 2),
            _t_date_trunc,
            _d_date_trunc,
            literals=(1,),
            api="date_trunc",
            check_typed=lambda t, v: _arrow.date_unit_of(v[1], timestamp=t[0] == "timestamp"),
        ),
        _entry("days_between", (2, 2), _t_days_between, _d_days_between, api="days_between"),
        _entry("add_days", (2, 2), _t_add_days, _d_add_days, api="add_days"),
        _entry(
            "timestamp",
            (1, 6),
            lambda fn, t: "timestamp",
            _d_timestamp,
            all_literal_after=0,
            api="timestamp",
            check=_arrow.timestamp_of,
        ),
        _entry("hour", (1, 1), _t_time_part, _d_date_part(0, 23), api="hour"),
        _entry("minute", (1, 1), _t_time_part, _d_date_part(0, 59), api="minute"),
        _entry("second", (1, 1), _t_time_part, _d_date_part(0, 59), api="second"),
        _entry("to_date", (1, 1), _t_to_date, _d_to_date, api="to_date"),
        _entry("seconds_between", (2, 2), _t_time_part, _d_days_between, api="seconds_between"),
    )
}


def lookup(name: object) -> Function:
    """The registry entry of ``name``; InvalidPlan for anything else (hostile plans name functions too)."""
    entry = REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise InvalidPlan(f"unknown function {str(name)[:40]!r}")
    return entry


def api_functions() -> dict[str, Function]:
    """The functions algorithm code calls by a global name."""
    return {f.api: f for f in REGISTRY.values() if f.api is not None}


def check_engine(engine: str, kernels: Iterable[str]) -> None:
    """Refuse an engine whose translations do not cover exactly the registry's functions."""
    have = set(kernels)
    missing, extra = sorted(set(REGISTRY) - have), sorted(have - set(REGISTRY))
    if missing or extra:
        raise RuntimeError(
            f"the {engine} engine does not match the function registry: missing {missing}, extra {extra}"
        )


def expr_domain(expr: Expr, domains: Mapping[str, Domain], types: Mapping[str, str] | None = None) -> Domain:
    """The value domain of ``expr`` over rows whose columns have ``domains`` (a column without one: unknown).

    ``types`` gives the logical type of columns that have no domain; the plan must already type-check.
    """
    if isinstance(expr, Col):
        known = domains.get(expr.name)
        if known is not None:
            return known
        return unknown((types or {}).get(expr.name, "float64"))
    if isinstance(expr, Lit):
        return literal_domain(expr.value)
    assert isinstance(expr, Call)
    entry = lookup(expr.fn)
    parts = [expr_domain(a, domains, types) for a in expr.args]
    out = entry.result_type([d.type for d in parts], expr.args)
    return entry.domain_rule(parts, expr.args, out)
