"""Calls of every registry function over the values that break engines: nulls, NaN, +-infinity, the int64 and
float extremes, text that looks like a number. Shared by the Arrow and the Spark totality tests."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from saferoom.engine import plan
from saferoom.engine.functions import REGISTRY, Domain, expr_domain
from saferoom.errors import InvalidPlan

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGES: dict[str, list[object]] = {
    "int64": [0, 1, -1, 7, -13, 2**31, INT64_MIN, INT64_MAX, INT64_MIN + 1, None],
    "float64": [0.0, -0.0, 1.5, -2.5, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 2.0**63, 1e-300, None],
    "string": ["", "abc", "12", " 7 ", "1e999", "-1e999", "nan", "inf", "9" * 30, None],
    "bool": [True, False, None],
    # Years 1 to 9999 (what Python and Spark hold); dates beyond them are tested on Arrow alone.
    "date32": [dt.date(1970, 1, 1), dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(2024, 2, 29), None],
    "timestamp": [
        dt.datetime(1970, 1, 1),
        dt.datetime(1, 1, 1),
        dt.datetime(9999, 12, 31, 23, 59, 59),
        dt.datetime(1969, 12, 31, 23, 59, 59),
        dt.datetime(2024, 2, 29, 13, 7, 5),
        None,
    ],
}
_ARROW = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date32": pa.date32(),
    "timestamp": pa.timestamp("s"),
}
EPOCH = dt.date(1970, 1, 1)
EPOCH_TIME = dt.datetime(1970, 1, 1)

# Literal arguments each function needs (positions fixed by the registry), a few valid choices each.
LITERALS: dict[str, list[tuple[object, ...]]] = {
    "round": [(0,), (2,), (-2,), (15,), (-15,)],
    "clamp": [(0, 1), (-1.5, 2.5), (3, 3), (-1e300, 1e300)],
    "grid_cell": [(10,), (500,), (1_000_000,)],
    "cell_lat": [(500,)],
    "cell_lon": [(500,)],
    "histogram": [(0, 100, 10), (-1e300, 1e300, 10_000), (0.5, 0.75, 1)],
    "date": [("2024-02-29",), ("0001-01-01",), (9999, 12, 31), (1970, 1, 1)],
    "date_trunc": [("year",), ("quarter",), ("month",), ("week",), ("day",), ("hour",), ("minute",)],
    "timestamp": [("2024-02-29 13:07:05",), ("0001-01-01T00:00",), (9999, 12, 31, 23, 59, 59), (1969, 12, 31)],
}


@dataclass(frozen=True)
class Case:
    """One call: its expression over columns ``a0, a1, ...`` of ``table``, whose declared domains are given."""

    fn: str
    expr: plan.Expr
    table: pa.Table
    domains: dict[str, Domain]


def _arities(fn: str) -> list[int]:
    lo, hi = REGISTRY[fn].arity
    if fn == "case":
        return [3, 5]
    if fn == "is_in":
        return [3]
    return sorted({lo, hi})


def _literal_positions(fn: str, n: int) -> tuple[int, ...]:
    entry = REGISTRY[fn]
    positions = {p for p in entry.literals if p < n}
    if entry.all_literal_after is not None:
        positions |= set(range(entry.all_literal_after, n))
    return tuple(sorted(positions))


def _is_in_values(t: str) -> tuple[object, ...]:
    values = {"int64": (1, -13), "float64": (1.5, 0.0), "string": ("abc", "12"), "bool": (True, False)}
    return values.get(t, ("2024-02-29", "abc"))  # a date or time among text values: refused by the type rule


def _rows(types: list[str], rng: random.Random, limit: int) -> list[tuple[object, ...]]:
    product = list(itertools.product(*(EDGES[t] for t in types)))
    return product if len(product) <= limit else rng.sample(product, limit)


def _bounded(t: str, rng: random.Random, n: int) -> tuple[list[object], Domain]:
    """``n`` finite values within random bounds (the bounds themselves included), with nulls."""
    if t == "date32":
        first = rng.choice([-719_162, -1, 0, 19_000, 2_932_896 - 4_000])
        last = first + rng.choice([0, 1, 31, 400, 4_000])
        days = [first, last] + [rng.randint(first, last) for _ in range(n - 3)]
        dates: list[object] = [EPOCH + dt.timedelta(days=d) for d in days] + [None]
        return dates, Domain("date32", float(first), float(last), null=True)
    if t == "timestamp":
        start = rng.choice([-62_135_596_800, -1, 0, 1_700_000_000, 253_402_300_799 - 400_000_000])
        end = start + rng.choice([0, 1, 59, 3_600, 86_400 * 400])
        seconds = [start, end] + [rng.randint(start, end) for _ in range(n - 3)]
        times: list[object] = [EPOCH_TIME + dt.timedelta(seconds=x) for x in seconds] + [None]
        return times, Domain("timestamp", float(start), float(end), null=True)
    if t == "int64":
        lo = rng.choice([-(2**40), -1000, -3, 0, 2])
        hi = lo + rng.choice([0, 1, 10, 2**20])
        values: list[object] = [lo, hi] + [rng.randint(lo, hi) for _ in range(n - 3)] + [None]
        return values, Domain("int64", float(lo), float(hi), null=True)
    lo_f = rng.choice([-1e6, -2.5, -0.5, 0.0, 1e-3, 3.0])
    hi_f = lo_f + rng.choice([0.0, 0.25, 1.0, 1e3, 1e9])
    floats: list[object] = [lo_f, hi_f] + [rng.uniform(lo_f, hi_f) for _ in range(n - 3)] + [None]
    return floats, Domain("float64", lo_f, hi_f, null=True)


def cases(seed: int = 7, limit: int = 400) -> Iterator[Case]:
    """Every function, with every argument-type combination its type rule accepts, over edge values (declared
    domains: anything of the type) and over bounded values (declared domains: those bounds)."""
    rng = random.Random(seed)
    for fn in sorted(REGISTRY):
        for n in _arities(fn):
            fixed = _literal_positions(fn, n)
            free = [i for i in range(n) if i not in fixed]
            for types in itertools.product(sorted(EDGES), repeat=len(free)):
                # case's conditions are true/false: the type rule refuses anything else
                if fn == "case" and any(types[free.index(i)] != "bool" for i in range(0, n - 1, 2)):
                    continue
                for literals in _literal_choices(fn, fixed, types, free):
                    yield from _cases_for(fn, n, free, list(types), literals, rng, limit)


def _literal_choices(
    fn: str, fixed: tuple[int, ...], types: tuple[str, ...], free: list[int]
) -> list[dict[int, object]]:
    if not fixed:
        return [{}]
    if fn == "is_in":
        return [dict(zip(fixed, _is_in_values(types[0]), strict=True))]
    return [dict(zip(fixed, choice, strict=True)) for choice in LITERALS[fn] if len(choice) == len(fixed)]


def _call(fn: str, n: int, free: list[int], literals: dict[int, object]) -> plan.Expr:
    args = [plan.Lit(literals[i]) if i in literals else plan.Col(f"a{free.index(i)}") for i in range(n)]  # type: ignore[arg-type]
    return plan.Call(fn, tuple(args))


def _cases_for(
    fn: str, n: int, free: list[int], types: list[str], literals: dict[int, object], rng: random.Random, limit: int
) -> Iterator[Case]:
    expr = _call(fn, n, free, literals)
    schema = {f"a{i}": t for i, t in enumerate(types)}
    any_domains = {c: Domain(t, nan=t == "float64", inf=t == "float64") for c, t in schema.items()}
    try:
        expr_domain(expr, any_domains)
    except InvalidPlan:
        return  # ill-typed: refused before anything runs
    rows = _rows(types, rng, limit)
    columns = {c: pa.array([r[i] for r in rows], _ARROW[t]) for i, (c, t) in enumerate(schema.items())}
    yield Case(fn, expr, pa.table(columns) if columns else pa.table({"x": [0] * len(rows)}), any_domains)
    if types and all(t in ("int64", "float64", "date32", "timestamp") for t in types):
        bounded: dict[str, Domain] = {}
        values: dict[str, pa.Array] = {}
        for c, t in schema.items():
            vals, domain = _bounded(t, rng, 24)
            values[c], bounded[c] = pa.array(vals, _ARROW[t]), domain
        length = max(len(v) for v in values.values())
        table = pa.table({c: pa.array((v.to_pylist() * length)[:length], v.type) for c, v in values.items()})
        yield Case(fn, expr, table, bounded)


def outside(value: object, domain: Domain, slack: float = 1e-9) -> str | None:
    """Why ``value`` is not in ``domain`` (None when it is); float bounds get a relative ``slack`` (libm)."""
    if value is None:
        return None if domain.null else "null, but the domain says never null"
    if isinstance(value, float) and math.isnan(value):
        return None if domain.nan else "NaN, but the domain says never NaN"
    if isinstance(value, float) and math.isinf(value):
        return None if domain.inf else "infinite, but the domain says finite"
    if isinstance(value, dt.datetime):  # a timestamp's bounds are its seconds since 1970-01-01 00:00:00
        value = (value - EPOCH_TIME) // dt.timedelta(seconds=1)
    elif isinstance(value, dt.date):  # a date's bounds are its days since 1970-01-01
        value = (value - EPOCH).days
    if isinstance(value, bool) or not isinstance(value, int | float):
        if domain.categories is not None and value not in domain.categories:
            return f"{value!r} is not among the domain's values {domain.categories}"
        return None
    tolerance = slack * max(1.0, abs(float(value)))
    if domain.lower is not None and value < domain.lower - tolerance:
        return f"{value!r} is below the domain's lower bound {domain.lower!r}"
    if domain.upper is not None and value > domain.upper + tolerance:
        return f"{value!r} is above the domain's upper bound {domain.upper!r}"
    return None


AGGREGATE_TYPES: dict[str, tuple[str, ...]] = {
    "count": ("int64", "float64", "string", "bool", "date32", "timestamp"),
    "count_distinct": ("int64", "float64", "string", "bool", "date32", "timestamp"),
    "sum": ("int64", "float64"),
    "mean": ("int64", "float64"),
    "std": ("int64", "float64"),
    "median": ("int64", "float64"),
    "quantile": ("int64", "float64"),
    "min": ("int64", "float64", "string", "date32", "timestamp"),
    "max": ("int64", "float64", "string", "date32", "timestamp"),
}


def aggregate_tables() -> dict[str, pa.Table]:
    """Tables that break aggregates: every edge value in one group, a group of nulls only, a null key, no rows."""
    out = {}
    for t in sorted(EDGES):
        values = EDGES[t] * 3
        keys = [i % 3 for i in range(len(values))]
        keys[0] = None  # type: ignore[call-overload]
        nulls = [None] * 4
        out[t] = pa.table({"k": pa.array([*keys, 7, 7, 7, 7], pa.int64()), "v": pa.array([*values, *nulls], _ARROW[t])})
        out[f"{t}-empty"] = pa.table({"k": pa.array([], pa.int64()), "v": pa.array([], _ARROW[t])})
    return out


def aggregate_plans(table: pa.Table, value_type: str) -> list[plan.Node]:
    """Every aggregate that applies to ``value_type``, grouped by ``k`` and global."""
    logical = {"int64": "int64", "double": "float64", "string": "string", "bool": "bool", "date32[day]": "date32",
               "timestamp[s]": "timestamp"}  # fmt: skip
    source = plan.Input("t", (("k", "int64"), ("v", logical[str(table.schema.field("v").type)])))
    aggs: list[tuple[str, plan.AggExpr]] = [("rows", plan.AggExpr("count"))]
    for fn, types in sorted(AGGREGATE_TYPES.items()):
        if value_type in types:
            aggs.append((fn, plan.AggExpr(fn, plan.Col("v"), 0.9 if fn == "quantile" else None)))
    return [plan.Aggregate(source, ("k",), tuple(aggs)), plan.Aggregate(source, (), tuple(aggs))]
