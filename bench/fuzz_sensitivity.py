"""A search for sensitivity violations: random plans, exact DP statistics on neighbouring datasets.

    python bench/fuzz_sensitivity.py --minutes N [--seed S]

Builds random plans the way algorithm code does (``saferoom.api``): filters, derived columns using every function
of the registry (``engine.functions.REGISTRY``, or ``engine.plan.FUNCTIONS`` on older trees) with literals that
make NaN, +-infinity and overflow, group-bys by public categories and by computed keys, joins with public tables,
and the aggregates count/sum/mean/median/quantile. Only plans that ``protect`` accepts count. For every
``NoisyAggregate`` it evaluates the hidden exact statistics on a small dataset D and on its neighbours (one
person removed; one person added with extreme values: NaN, +-inf, the declared bounds and beyond, nulls, the
int64 extremes, more rows than k; one person changed, checked as remove + add) and reports:

    sensitivity   a statistic moved by more than ``DPColumn.sensitivity(k)`` (L1 over the cells for counts,
                  sums and means; for quantiles the per-cell L-inf of the candidates' scores, summed over cells)
    non-finite    a statistic that gets noised is NaN or infinite
    engine        the engine raised on D or on a neighbour (it must be total)

The CI test ``tests/disclosure/test_sensitivity_fuzz.py`` runs the same search for about 20 seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saferoom.api import expressions as api_expr
from saferoom.api.namespace import Context, namespace
from saferoom.api.table import Table
from saferoom.catalog import Catalog, generate_catalog
from saferoom.catalog.manifest import Manifest
from saferoom.disclosure import dp
from saferoom.disclosure.protect import protect
from saferoom.engine import ArrowEngine, plan
from saferoom.errors import SaferoomError

__all__ = [
    "Finding",
    "Fuzzer",
    "Report",
    "function_arities",
    "make_world",
]

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
PERSONS = 300  # persons in D: one evaluation of an exact plan stays at a few milliseconds
PUBLIC_ROWS = 24  # rows kept of each public table (joins multiply rows)
PERSONAL = ("population", "housing_transactions")
PUBLIC = ("bus_stops", "schools", "land_use", "convenience_stores")
NEW_ID = 10_000_019  # the unit id of an added person (no person of D has it)
_EPOCH = dt.date(1970, 1, 1)


def function_arities() -> dict[str, tuple[int, int]]:
    """Name -> (min, max) arity of every plan function: the registry when it exists, else ``plan.FUNCTIONS``."""
    try:
        from saferoom.engine.functions import REGISTRY
    except ImportError:  # an older tree: the arities lived in the plan module
        functions: Any = getattr(plan, "FUNCTIONS", {})
        out: dict[str, tuple[int, int]] = {}
        for name, arity in functions.items():
            out[name] = tuple(arity) if isinstance(arity, tuple | list) else (int(arity), int(arity))  # type: ignore[assignment]
        return out
    return {name: tuple(entry.arity) for name, entry in REGISTRY.items()}  # type: ignore[misc]


# --------------------------------------------------------------------------- the world: D and its catalog


@dataclass
class World:
    """The catalog's manifest and the small tables the fuzzer runs on (dataset name -> table)."""

    manifest: Manifest
    tables: dict[str, pa.Table]

    def unit(self, dataset: str) -> str:
        unit = self.manifest.dataset(dataset).privacy_unit
        assert unit is not None
        return unit

    def k(self, dataset: str) -> int:
        return int(self.manifest.dataset(dataset).policy.max_contributions)


def make_world(directory: Path, persons: int = PERSONS) -> World:
    """A generated DP city cut down to ``persons`` persons (housing buyers folded so some buy more than k)."""
    if not (directory / "catalog.json").exists():
        generate_catalog(directory, scale=1_000, seed=7)
    manifest = Manifest.load(directory)
    tables: dict[str, pa.Table] = {}
    with Catalog.open(directory) as catalog:
        for name in manifest.datasets:
            table = catalog.table(name)
            table = pa.Table.from_batches(table.to_batches())  # a copy: the catalog's memory map closes
            if name == "population":
                table = table.slice(0, persons)
            elif name == "housing_transactions":
                # Fold the buyers onto a few ids so that some buyers have 1, 2, 3 or more rows (k = 2).
                buyers = np.arange(table.num_rows) % max(1, table.num_rows // 3) + 1
                index = table.column_names.index("buyer_id")
                table = table.set_column(index, "buyer_id", pa.array(buyers, pa.int64()))
            elif name in PUBLIC:
                table = table.slice(0, PUBLIC_ROWS)
            tables[name] = table.combine_chunks()
    return World(manifest, tables)


# --------------------------------------------------------------------------- neighbours


def _extremes(kind: str, lower: float | None, upper: float | None) -> list[Any]:
    if kind == "float64":
        values: list[Any] = [math.nan, math.inf, -math.inf, None, 0.0, -0.0, 1e308, -1e308, 5e-324]
        if lower is not None and upper is not None:
            values += [lower, upper, lower - 1.0, upper * 10 + 1, -abs(upper) * 10 - 1]
        return values
    if kind == "int64":
        values = [INT64_MAX, INT64_MIN, None, 0, -1]
        if lower is not None and upper is not None:
            values += [int(lower), int(upper), int(lower) - 1, int(upper) + 1]
        return values
    if kind == "date32":
        return [None, 0, -(2**31), 2**31 - 1, 20_000]
    if kind == "bool":
        return [None, True, False]
    return [None, "", "not-a-category", "Siming", "female", "bachelor", "x" * 300]


def _fit(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "float64":
        return float(value)
    if kind == "int64":
        return max(INT64_MIN, min(INT64_MAX, int(value)))
    if kind == "date32":
        return max(-(2**31), min(2**31 - 1, int(value)))
    if kind == "bool":
        return bool(value)
    return str(value)


def _rows_table(world: World, dataset: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = world.tables[dataset].schema
    arrays = []
    for f in schema:
        values = [r[f.name] for r in rows]
        if pa.types.is_dictionary(f.type):
            arrays.append(pa.array(values, pa.string()).dictionary_encode().cast(f.type))
        elif pa.types.is_date32(f.type):
            days = [(v - _EPOCH).days if isinstance(v, dt.date) else v for v in values]
            arrays.append(pa.array(days, pa.int32()).cast(pa.date32()))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.table(arrays, schema=schema)


@dataclass(frozen=True)
class Neighbour:
    """A dataset next to a base one: ``table`` differs from ``base`` by one person's rows."""

    description: str
    base: pa.Table
    table: pa.Table


def neighbours(
    world: World, dataset: str, rng: random.Random, removes: int = 6, adds: int = 14, changes: int = 2
) -> Iterator[Neighbour]:
    """Neighbours of D for ``dataset``: removals, extreme additions, and changes (remove + add)."""
    table = world.tables[dataset]
    unit = world.unit(dataset)
    k = world.k(dataset)
    ids = table.column(unit).to_numpy()
    distinct = sorted(set(int(i) for i in ids))
    counts = {i: int((ids == i).sum()) for i in distinct}
    chosen = rng.sample(distinct, min(removes, len(distinct)))
    if k > 1:  # the person with the most rows (more than k) too
        chosen.append(max(distinct, key=lambda i: counts[i]))
    for person in chosen:
        yield Neighbour(f"remove {unit}={person} ({counts[person]} rows)", table, _without(table, unit, person))
    for description, rows in _added_persons(world, dataset, NEW_ID, rng, adds):
        yield Neighbour(f"add {unit}={NEW_ID}: {description}", table, _with(world, dataset, table, rows))
    for person in rng.sample(distinct, min(changes, len(distinct))):
        base = _without(table, unit, person)
        for description, rows in _added_persons(world, dataset, person, rng, max(2, adds // 3)):
            yield Neighbour(
                f"change {unit}={person} (the add half): {description}", base, _with(world, dataset, base, rows)
            )


def _without(table: pa.Table, unit: str, person: int) -> pa.Table:
    ids = table.column(unit).to_numpy(zero_copy_only=False)
    return table.filter(pa.array(ids != person))


def _with(world: World, dataset: str, table: pa.Table, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.concat_tables([table, _rows_table(world, dataset, rows)]).combine_chunks()


def _added_persons(
    world: World, dataset: str, person: int, rng: random.Random, n: int
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """People to add: every column at one extreme, then random mixes; k > 1 datasets get more rows than k."""
    info = world.manifest.dataset(dataset)
    unit = world.unit(dataset)
    k = world.k(dataset)
    template = world.tables[dataset].slice(0, 1).to_pylist()[0]
    columns = [(c.name, c.type, c.min, c.max) for c in info.columns if c.name != unit]
    per_column = {name: _extremes(kind, lo, hi) for name, kind, lo, hi in columns}
    kinds = {name: kind for name, kind, _, _ in columns}
    rows_each = 1 if k == 1 else k + 2
    for index, label in enumerate(("nan", "+inf", "-inf", "null", "max", "min")):
        row = dict(template, **{unit: person})
        for name, kind, _, _ in columns:
            if kind == "float64":
                row[name] = [math.nan, math.inf, -math.inf, None, 1e308, -1e308][index]
            elif kind in ("int64", "date32"):
                row[name] = [None, INT64_MAX, INT64_MIN, None, INT64_MAX, INT64_MIN][index]
            elif index == 3:
                row[name] = None
            row[name] = _fit(row[name], kind)
        yield f"every column {label}, {rows_each} row(s)", [row] * rows_each
    for _ in range(max(0, n - 6)):
        rows = []
        for _ in range(rows_each):
            row = dict(template, **{unit: person})
            for name, values in per_column.items():
                if rng.random() < 0.7:
                    row[name] = _fit(rng.choice(values), kinds[name])
            rows.append(row)
        shown = {name: rows[0][name] for name in per_column if rows[0][name] != template.get(name)}
        yield f"{rows_each} row(s) like {_short(shown)}", rows


def _short(values: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return text if len(text) < 300 else text[:300] + "..."


# --------------------------------------------------------------------------- exact statistics


Vector = dict[tuple[Any, ...], float]


def _key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in values)


@dataclass
class Statistics:
    """The exact statistics of one NoisyAggregate on one dataset: column name -> cell key -> value (or, for a
    quantile, cell key -> scores)."""

    values: dict[str, Vector]
    scores: dict[str, dict[tuple[Any, ...], np.ndarray]]
    non_finite: list[str]


def evaluate(agg: dp.NoisyAggregate, tables: dict[str, pa.Table]) -> Statistics:
    """Run ``agg``'s exact plan (and its histograms) on ``tables`` and read what gets noised."""
    engine = ArrowEngine(source=lambda name: tables[name])
    exact = engine.execute(agg.exact).table
    keys = (
        [_key(tuple(r)) for r in zip(*(exact.column(k).to_pylist() for k in agg.keys), strict=True)]
        if agg.keys
        else [()] * exact.num_rows
    )
    values: dict[str, Vector] = {}
    scores: dict[str, dict[tuple[Any, ...], np.ndarray]] = {}
    non_finite: list[str] = []

    def read(name: str, source: str) -> None:
        vector: Vector = {}
        for key, v in zip(keys, exact.column(source).to_pylist(), strict=True):
            x = float(v) if v is not None else 0.0
            if not math.isfinite(x):
                non_finite.append(f"{name} = {x} in cell {key}")
            vector[key] = vector.get(key, 0.0) + x
        values[name] = vector

    read("(cell count)", agg.count)
    for column in agg.columns:
        if column.kind in ("count_values", "sum", "mean"):
            read(column.name, column.source)
        elif column.kind == "quantile":
            histogram = engine.execute(agg.histograms[column.source]).table
            bins: dict[tuple[Any, ...], np.ndarray] = {}
            hkeys = (
                zip(*(histogram.column(k).to_pylist() for k in agg.keys), strict=True)
                if agg.keys
                else iter([()] * histogram.num_rows)
            )
            for key, b, n in zip(
                hkeys, histogram.column("__bin").to_pylist(), histogram.column("__n").to_pylist(), strict=True
            ):
                counts = bins.setdefault(_key(tuple(key)), np.zeros(dp.QUANTILE_BINS, dtype=np.int64))
                counts[min(max(int(b or 0), 0), dp.QUANTILE_BINS - 1)] += int(n)
            scores[column.name] = {key: dp._quantile_scores(c, column.q) for key, c in bins.items()}
    return Statistics(values, scores, non_finite)


def _l1(a: Vector, b: Vector) -> float:
    return sum(abs(a.get(key, 0.0) - b.get(key, 0.0)) for key in set(a) | set(b))


def _score_change(a: dict[tuple[Any, ...], np.ndarray], b: dict[tuple[Any, ...], np.ndarray]) -> float:
    zero = dp._quantile_scores(np.zeros(dp.QUANTILE_BINS, dtype=np.int64), 0.5)
    total = 0.0
    for key in set(a) | set(b):
        total += float(np.max(np.abs(a.get(key, zero).astype(np.float64) - b.get(key, zero).astype(np.float64))))
    return total


# --------------------------------------------------------------------------- random plans


NUMBERS: tuple[Any, ...] = (
    0,
    1,
    -1,
    2,
    3,
    10,
    1000,
    0.5,
    -0.5,
    1.5,
    -1.0,
    0.0,
    24.5,
    118.1,
    1e-300,
    1e300,
    -1e300,
    1.7976931348623157e308,
    1e15,
    INT64_MAX,
    INT64_MIN,
    NEW_ID,
    50_000.0,
    2**53 + 1,
    700.0,
    1000.0,
)
STRINGS = ("Siming", "Huli", "female", "bachelor", "x", "", "1e999", "12", "-3.5")


@dataclass
class Columns:
    """The columns of a table under construction, by logical type."""

    types: dict[str, str]

    def of(self, *kinds: str) -> list[str]:
        return [c for c, t in self.types.items() if t in kinds and not c.startswith("_")]


class PlanMaker:
    """Random expressions and plans over the API, covering every registry function."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.arities = function_arities()
        self.ns: dict[str, Any] = namespace()
        self.ctx = Context(world.manifest, list(world.manifest.datasets))

    # Expressions are built as plan data and wrapped as API expressions (as the operators build them).
    def number(self, cols: Columns, depth: int) -> plan.Expr:
        rng = self.rng
        numeric = cols.of("int64", "float64")
        if depth <= 0 or rng.random() < 0.25:
            if numeric and rng.random() < 0.7:
                return plan.Col(rng.choice(numeric))
            return plan.Lit(rng.choice(NUMBERS))
        fn = rng.choice(self._numeric_functions())
        return self.call(fn, cols, depth - 1)

    def boolean(self, cols: Columns, depth: int) -> plan.Expr:
        rng = self.rng
        choice = rng.random()
        strings = cols.of("string")
        if depth <= 0 or choice < 0.35:
            op = rng.choice(("eq", "ne", "lt", "le", "gt", "ge"))
            return plan.Call(op, (self.number(cols, 1), plan.Lit(rng.choice(NUMBERS))))
        if choice < 0.45 and strings:
            return plan.Call(rng.choice(("eq", "ne")), (plan.Col(rng.choice(strings)), plan.Lit(rng.choice(STRINGS))))
        if choice < 0.5 and cols.of("date32") and "date" in self.arities:
            op = rng.choice(("eq", "ne", "lt", "le", "gt", "ge"))
            return plan.Call(op, (self.date(cols, depth - 1), self.date(cols, depth - 1)))
        for fn in ("and", "or", "not", "is_null", "is_in", "between"):
            if fn in self.arities and rng.random() < 0.3:
                return self.call(fn, cols, depth - 1)
        op = rng.choice(("eq", "ne", "lt", "le", "gt", "ge"))
        return plan.Call(op, (self.number(cols, depth - 1), self.number(cols, depth - 1)))

    def string(self, cols: Columns, depth: int) -> plan.Expr:
        strings = cols.of("string")
        r = self.rng.random()
        if strings and r < 0.5:
            return plan.Col(self.rng.choice(strings))
        if r < 0.75 and "cast_str" in self.arities:
            return plan.Call("cast_str", (self.number(cols, depth - 1),))
        return plan.Call(
            "case",
            (self.boolean(cols, depth - 1), plan.Lit(self.rng.choice(STRINGS)), plan.Lit(self.rng.choice(STRINGS))),
        )

    def date(self, cols: Columns, depth: int) -> plan.Expr:
        """A date: a date column, a literal (the years' extremes among them), or a function of dates."""
        rng = self.rng
        dates = cols.of("date32")
        r = rng.random()
        if dates and (depth <= 0 or r < 0.5):
            return plan.Col(rng.choice(dates))
        if depth <= 0 or r < 0.7 or "date" not in self.arities:
            literal = rng.choice(("2024-02-29", "0001-01-01", "9999-12-31", "2019-06-30", "1970-01-01"))
            return plan.Call("date", (plan.Lit(literal),)) if "date" in self.arities else plan.Lit(0)
        if r < 0.8:
            unit = rng.choice(("year", "quarter", "month", "week"))
            return plan.Call("date_trunc", (self.date(cols, depth - 1), plan.Lit(unit)))
        if r < 0.9 and "to_date" in self.arities:
            return plan.Call("to_date", (self.moment(cols, depth - 1) if rng.random() < 0.5 else self.date(cols, 0),))
        return plan.Call("add_days", (self.date(cols, depth - 1), self.number(cols, depth - 1)))

    def moment(self, cols: Columns, depth: int) -> plan.Expr:
        """A timestamp: a literal (the years' extremes among them), truncated, or clamped (no catalog column is
        a timestamp yet)."""
        rng = self.rng
        r = rng.random()
        if depth <= 0 or r < 0.6 or "timestamp" not in self.arities:
            literal = rng.choice(
                ("2024-02-29 13:07:05", "0001-01-01 00:00:00", "9999-12-31 23:59:59", "1969-12-31 23:59:59")
            )
            return plan.Call("timestamp", (plan.Lit(literal),))
        if r < 0.8:
            unit = rng.choice(("year", "week", "day", "hour", "minute"))
            return plan.Call("date_trunc", (self.moment(cols, depth - 1), plan.Lit(unit)))
        low, high = sorted((rng.choice((-1e12, 0, 1.7e9)), rng.choice((1e12, 0, 1.7e9))))
        return plan.Call("clamp", (self.moment(cols, depth - 1), plan.Lit(low), plan.Lit(high)))

    def _numeric_functions(self) -> list[str]:
        skip = {"eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "is_null", "is_in", "between", "cast_str"}
        skip |= {"date", "date_trunc", "add_days", "to_date"}  # dates, not numbers: made by ``date``
        skip |= {"timestamp"}  # timestamps: made by ``moment``
        return [name for name in self.arities if name not in skip]

    def call(self, fn: str, cols: Columns, depth: int) -> plan.Expr:
        """A call of ``fn`` with arguments that fit it (literals where the function wants them)."""
        rng = self.rng
        lo, hi = self.arities[fn]
        n = rng.randint(lo, min(hi, lo + 4))
        num = lambda: self.number(cols, depth)  # noqa: E731
        if fn in ("year", "month", "day", "weekday"):
            return plan.Call(fn, (self.date(cols, depth) if rng.random() < 0.8 else self.moment(cols, depth),))
        if fn in ("hour", "minute", "second"):
            return plan.Call(fn, (self.moment(cols, depth),))
        if fn == "seconds_between":
            return plan.Call(fn, (self.moment(cols, depth), self.moment(cols, depth)))
        if fn == "cast_int" and rng.random() < 0.1:
            return plan.Call(fn, (self.moment(cols, depth),))
        if fn == "days_between":
            return plan.Call(fn, (self.date(cols, depth), self.date(cols, depth)))
        if fn == "cast_int" and cols.of("date32") and rng.random() < 0.2:
            return plan.Call(fn, (self.date(cols, depth),))
        if fn == "clamp":
            a, b = sorted((rng.choice(NUMBERS[:14]), rng.choice((*NUMBERS[:14], 1e6, -1e6, 1e300))))
            return plan.Call(fn, (num(), plan.Lit(a), plan.Lit(b)))
        if fn == "grid_cell":
            return plan.Call(fn, (num(), num(), plan.Lit(rng.choice((10, 500, 1_000_000, 37.5)))))
        if fn in ("cell_lat", "cell_lon"):
            cell = (
                plan.Call("grid_cell", (num(), num(), plan.Lit(500)))
                if rng.random() < 0.7
                else plan.Call("cast_int", (num(),))
            )
            return plan.Call(fn, (cell, plan.Lit(rng.choice((10, 500, 1_000_000)))))
        if fn == "histogram":
            start = rng.choice((0, -1e300, 0.0, 18, 1e300 - 1e290, -5.0))
            stop = start + rng.choice((1, 100, 1e290, 1e300, 0.5))
            return plan.Call(fn, (num(), plan.Lit(start), plan.Lit(stop), plan.Lit(rng.choice((1, 2, 10, 10_000)))))
        if fn == "round":
            return plan.Call(fn, (num(), plan.Lit(rng.randint(-15, 15))) if rng.random() < 0.7 else (num(),))
        if fn == "case":
            pairs = max(1, (n - 1) // 2)
            args: list[plan.Expr] = []
            for _ in range(pairs):
                args += [self.boolean(cols, depth), num()]
            return plan.Call(fn, (*args, num()))
        if fn == "is_in":
            return plan.Call(fn, (num(), *(plan.Lit(rng.choice(NUMBERS)) for _ in range(max(1, n - 1)))))
        if fn in ("and", "or"):
            return plan.Call(fn, (self.boolean(cols, depth), self.boolean(cols, depth)))
        if fn == "not":
            return plan.Call(fn, (self.boolean(cols, depth),))
        if fn in ("cast_int", "cast_float") and rng.random() < 0.25:
            return plan.Call(fn, (self.string(cols, depth),))
        if fn == "cast_int" and rng.random() < 0.3:
            return plan.Call(
                fn,
                (plan.Call("case", (self.boolean(cols, depth), plan.Lit(rng.choice((1e300, 1e19, 9.3e18))), num())),),
            )
        return plan.Call(fn, tuple(num() for _ in range(n)))

    def expr(self, node: plan.Expr) -> Any:
        return api_expr.Expr(node, 1)

    def aggregated(self, cols: Columns) -> plan.Expr:
        """A value to sum/mean/quantile: usually clipped to public bounds (DP needs them)."""
        rng = self.rng
        value = self.number(cols, rng.choice((0, 1, 1, 2, 2, 3)))
        r = rng.random()
        if r < 0.7:
            a, b = sorted((rng.choice((0, -1, 0.0, 1, -100.0, 18)), rng.choice((1, 10, 100, 1e6, 1e9, 5_000_000))))
            value = plan.Call("clamp", (value, plan.Lit(a), plan.Lit(b)))
        return value

    def table(self) -> tuple[str, Table]:
        """A random plan ending in a DP aggregate (not always one protect accepts)."""
        rng = self.rng
        dataset = rng.choice(PERSONAL)
        t = self.ctx.table(dataset)
        cols = Columns(dict(t.schema))
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            t = t.filter(self.expr(self.boolean(cols, rng.choice((1, 2, 3)))))
        if rng.random() < 0.15:  # a unit's rows twice over: the Bound below must still hold them to k
            t = t.union(t.filter(self.expr(self.boolean(cols, 1))))
        keys: list[str] = []
        if rng.random() < 0.6:
            derived: dict[str, Any] = {}
            for i in range(rng.choice((1, 1, 2))):
                derived[f"d{i}"] = self.expr(self.number(cols, rng.choice((1, 2, 3))))
            r = rng.random()
            if r < 0.25:
                derived["key"] = self.expr(
                    plan.Call(
                        "grid_cell", (plan.Col("lat"), plan.Col("lon"), plan.Lit(rng.choice((500, 5000, 100_000))))
                    )
                )
            elif r < 0.45:
                derived["key"] = self.expr(self.boolean(cols, 1))
            elif r < 0.6:
                derived["key"] = self.expr(self.string(cols, 1))
            elif r < 0.75:
                derived["key"] = self.expr(self.call(rng.choice(("histogram", "cast_int", "round")), cols, 1))
            t = t.with_columns(**derived)
            cols = Columns(dict(t.schema))
            if "key" in derived:
                keys.append("key")
        if rng.random() < 0.3:
            t, cols = self._join(t, cols)
        if rng.random() < 0.6:
            categorical = cols.of("string", "bool")
            if categorical and rng.random() < 0.7:
                keys.append(rng.choice(categorical))
        aggs: dict[str, Any] = {}
        for i in range(rng.choice((1, 1, 2, 3))):
            kind = rng.choice(("count", "count", "sum", "mean", "median", "quantile", "count_x"))
            if kind == "count":
                aggs[f"a{i}"] = self.ns["count"]()
            elif kind == "count_x":
                aggs[f"a{i}"] = self.ns["count"](self.expr(self.number(cols, 1)))
            elif kind == "quantile":
                aggs[f"a{i}"] = self.ns["quantile"](self.expr(self.aggregated(cols)), rng.choice((0.0, 0.1, 0.5, 1.0)))
            else:
                aggs[f"a{i}"] = self.ns[kind](self.expr(self.aggregated(cols)))
        keys = list(dict.fromkeys(k for k in keys if k in cols.types))
        out = t.group_by(*keys).agg(**aggs) if keys else t.agg(**aggs)
        return dataset, out

    def _join(self, t: Table, cols: Columns) -> tuple[Table, Columns]:
        rng = self.rng
        public = rng.choice(PUBLIC)
        p = self.ctx.table(public)
        how = rng.choice(("inner", "left", "right", "inner"))
        if rng.random() < 0.5 and "district" in cols.types:
            other = (
                p.group_by("district").agg(pn=self.ns["count"]())
                if rng.random() < 0.5
                else p.select("district", plat="lat")
            )
            joined = t.join(other, "district", how) if rng.random() < 0.7 else other.join(t, "district", how)
        else:
            m = rng.choice((500, 5000))
            cell = self.expr(plan.Call("grid_cell", (plan.Col("lat"), plan.Col("lon"), plan.Lit(m))))
            t = t.with_columns(cell=cell)
            other = p.select(cell=cell).group_by("cell").agg(pn=self.ns["count"]())
            joined = t.join(other, "cell", how)
        return joined, Columns(dict(joined.schema))


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class Finding:
    """One violation: its class, the plan, the neighbour, and what moved how far."""

    kind: str  # "sensitivity" | "non-finite" | "engine"
    signature: str  # the class: kind, statistic kind and the functions in the plan
    plan_json: str
    dataset: str
    neighbour: str
    column: str
    observed: str
    allowed: str

    def message(self) -> str:
        return (
            f"{self.kind} [{self.signature}] on {self.dataset}\n  neighbour: {self.neighbour}\n"
            f"  column: {self.column}\n  observed: {self.observed}\n  allowed: {self.allowed}\n"
            f"  plan: {self.plan_json}"
        )


@dataclass
class Report:
    """Counts and the smallest finding of each class."""

    generated: int = 0
    accepted: int = 0
    aggregates: int = 0
    neighbours: int = 0
    seconds: float = 0.0
    refused: dict[str, int] = field(default_factory=dict)
    findings: dict[str, Finding] = field(default_factory=dict)
    occurrences: dict[str, int] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        self.occurrences[finding.signature] = self.occurrences.get(finding.signature, 0) + 1
        known = self.findings.get(finding.signature)
        if known is None or len(finding.plan_json) < len(known.plan_json):
            self.findings[finding.signature] = finding

    def summary(self) -> str:
        rate = self.neighbours / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.generated} plans generated, {self.accepted} accepted by protect ({self.aggregates} noisy "
            f"aggregates), {self.neighbours} neighbours checked in {self.seconds:.1f} s "
            f"({self.accepted / max(self.seconds, 1e-9):.1f} plans/s, {rate:.0f} neighbours/s); "
            f"{len(self.findings)} violation classes",
        ]
        for signature, finding in sorted(self.findings.items()):
            lines.append(f"--- {self.occurrences[signature]} x {finding.message()}")
        return "\n".join(lines)


def _normalised(message: str) -> str:
    """An engine error's class: argument types and numbers left out."""
    message = re.sub(r"[(][^)]*[)]", "(...)", message)
    return re.sub(r"(?<![A-Za-z0-9_])-?(nan|inf|[0-9][0-9.e+-]*)(?![A-Za-z])", "N", message)[:120]


def _functions_in(node: plan.Node) -> list[str]:
    names: set[str] = set()
    stack: list[Any] = [plan.to_data(node)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "fn" in item and isinstance(item["fn"], str):
                names.add(item["fn"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return sorted(names)


class Fuzzer:
    """The search: plans from ``PlanMaker`` (after the hand-written ``seeds``), checked over neighbours."""

    def __init__(
        self, world: World, seed: int, seeds: list[tuple[str, Callable[[Context, dict[str, Any]], Table]]] | None = None
    ) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.maker = PlanMaker(world, self.rng)
        self.seeds = list(seeds or [])
        self.report = Report()

    def run(self, seconds: float) -> Report:
        start = time.perf_counter()
        queue = list(self.seeds)
        while time.perf_counter() - start < seconds:
            if queue:
                _, build = queue.pop(0)
                try:
                    table = build(self.maker.ctx, self.maker.ns)
                except SaferoomError as exc:
                    self._refused(type(exc).__name__)
                    continue
                dataset = next((d for d in PERSONAL if d in _datasets_of(table._node)), PERSONAL[0])
            else:
                try:
                    dataset, table = self.maker.table()
                except SaferoomError as exc:
                    self.report.generated += 1
                    self._refused(type(exc).__name__)
                    continue
            self.check(dataset, table._node)
        self.report.seconds = time.perf_counter() - start
        return self.report

    def _refused(self, why: str) -> None:
        self.report.refused[why] = self.report.refused.get(why, 0) + 1

    def check(self, dataset: str, node: plan.Node) -> None:
        """Protect ``node``; check each of its noisy aggregates over the neighbours of ``dataset``."""
        self.report.generated += 1
        try:
            protected = protect({"out": node}, self.world.manifest)["out"]
        except SaferoomError as exc:
            self._refused(type(exc).__name__)
            return
        if not protected.noisy:
            self._refused("no noisy aggregate")
            return
        self.report.accepted += 1
        plan_json = plan.to_json(node)
        functions = ",".join(_functions_in(node))
        for agg in protected.noisy.values():
            self.report.aggregates += 1
            self._check_aggregate(agg, plan_json, functions)

    def _check_aggregate(self, agg: dp.NoisyAggregate, plan_json: str, functions: str) -> None:
        dataset = agg.dataset
        k = agg.contributions
        kinds = {c.name: c for c in agg.columns}

        def finding(kind: str, column: str, neighbour: str, observed: str, allowed: str) -> None:
            if kind == "engine":  # the class: the function and types the message names, and whether D fails too
                where = "on D too (plan-dependent)" if neighbour == "D" else "on a neighbour only (data-dependent)"
                signature = f"engine {where}: {_normalised(observed)}"
            else:
                stat = kinds[column].kind if column in kinds else "cell count"
                signature = f"{kind}/{stat}/{dataset}" + ("/join" if '"join"' in plan_json else "")
            self.report.add(Finding(kind, signature, plan_json, dataset, neighbour, column, observed, allowed))

        bases: dict[int, Statistics | None] = {}

        def on(table: pa.Table, description: str) -> Statistics | None:
            try:
                stats = evaluate(agg, {**self.world.tables, dataset: table})
            except Exception as exc:  # the engine must be total: any exception is a finding
                finding("engine", "(engine)", description, f"{type(exc).__name__}: {str(exc)[:300]}", "no error")
                return None
            for problem in stats.non_finite:
                finding("non-finite", problem.split(" = ")[0], description, problem, "a finite number")
            return stats

        d = self.world.tables[dataset]
        bases[id(d)] = on(d, "D")
        if bases[id(d)] is None:  # fails on D itself: a plan-dependent error, no neighbour tells more
            return
        for neighbour in neighbours(self.world, dataset, self.rng):
            self.report.neighbours += 1
            if id(neighbour.base) not in bases:
                bases[id(neighbour.base)] = on(neighbour.base, neighbour.description.split(" (the add half)")[0])
            base = bases[id(neighbour.base)]
            other = on(neighbour.table, neighbour.description)
            if base is None or other is None:
                continue
            for name, vector in base.values.items():
                allowed = float(k) if name == "(cell count)" else kinds[name].sensitivity(k)
                moved = _l1(vector, other.values[name])
                if not moved <= allowed * (1 + 1e-9) + 1e-9:
                    finding(
                        "sensitivity",
                        name,
                        neighbour.description,
                        f"L1 change {moved:g}",
                        f"sensitivity {allowed:g} (k = {k})",
                    )
            for name, scores in base.scores.items():
                allowed = kinds[name].sensitivity(k)
                moved = _score_change(scores, other.scores[name])
                if not moved <= allowed:
                    finding(
                        "sensitivity",
                        name,
                        neighbour.description,
                        f"score change {moved:g} (sum over cells of the L-inf)",
                        f"sensitivity {allowed:g} (k = {k})",
                    )


def _datasets_of(node: plan.Node) -> set[str]:
    return {n.dataset for n in plan.walk(node) if isinstance(n, plan.Scan)}


# --------------------------------------------------------------------------- hand-written seeds: known attacks


def known_attacks() -> list[tuple[str, Callable[[Context, dict[str, Any]], Table]]]:
    """Plans from issue 11 that the search always tries first (NaN bit, 0 * exp(1000), negative powers...)."""

    def nan_bit(ctx: Context, ns: dict[str, Any]) -> Table:
        col, when, sqrt, mean = ns["col"], ns["when"], ns["sqrt"], ns["mean"]
        cond = (col("person_id") == NEW_ID) & (col("income") > 1000.0)
        return ctx.table("population").agg(x=mean(sqrt(when(cond, -1.0).otherwise(0.0)).clip(0, 1)))

    def nan_sum(ctx: Context, ns: dict[str, Any]) -> Table:
        col, when, sqrt, sum_ = ns["col"], ns["when"], ns["sqrt"], ns["sum"]
        cond = col("income") > 1e6
        return (
            ctx.table("population").group_by("district").agg(x=sum_(sqrt(when(cond, -1.0).otherwise(0.0)).clip(0, 1)))
        )

    def zero_times_inf(ctx: Context, ns: dict[str, Any]) -> Table:
        col, when, exp, mean = ns["col"], ns["when"], ns["exp"], ns["mean"]
        value = when(col("age") > 90, 0.0).otherwise(1.0) * exp(when(col("age") > 90, 1000.0).otherwise(0.0))
        return ctx.table("population").agg(x=mean(value.clip(0, 1)))

    def negative_power(ctx: Context, ns: dict[str, Any]) -> Table:
        col, when, quantile = ns["col"], ns["when"], ns["quantile"]
        value = when(col("price") > 1e7, -2.0).otherwise(2.0) ** 0.5
        return ctx.table("housing_transactions").group_by("district").agg(q=quantile(value.clip(0, 2), 0.5))

    def grid_bit(ctx: Context, ns: dict[str, Any]) -> Table:
        col, when, grid_cell, count = ns["col"], ns["when"], ns["grid_cell"], ns["count"]
        cell = grid_cell(when(col("income") > 1e6, 1e300).otherwise(24.5), col("lon"))
        return ctx.table("population").with_columns(cell=cell).group_by("cell").agg(n=count())

    def huge_cast(ctx: Context, ns: dict[str, Any]) -> Table:
        col, when, sum_ = ns["col"], ns["when"], ns["sum"]
        value = when(col("age") > 90, 1e300).otherwise(1.0).cast("int")
        return ctx.table("population").agg(x=sum_(value.clip(0, 10)))

    def housing_joined(ctx: Context, ns: dict[str, Any]) -> Table:
        col, count, mean = ns["col"], ns["count"], ns["mean"]
        schools = ctx.table("schools").select("district", cap="capacity")
        return (
            ctx.table("housing_transactions")
            .join(schools, "district")
            .group_by("district")
            .agg(n=count(), m=mean(col("area_m2")))
        )

    return [
        (f.__name__, f) for f in (nan_bit, nan_sum, zero_times_inf, negative_power, grid_bit, huge_cast, housing_joined)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="print the findings as JSON lines at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saferoom-fuzz-") as tmp:
        world = make_world(Path(tmp) / "city")
        report = Fuzzer(world, args.seed, known_attacks()).run(args.minutes * 60)
    print(report.summary())
    print(f"refused: {json.dumps(report.refused, sort_keys=True)}")
    if args.json:
        for finding in report.findings.values():
            print(json.dumps(finding.__dict__))


if __name__ == "__main__":
    main()
