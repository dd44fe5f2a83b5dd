"""Benchmark: the engine's time per row of each plan node kind on its worst shape (``engine.cost``'s constants).

    python bench/bench_node_costs.py [--rows 2000000] [--repeats 3]

Runs single nodes through the embedded engine (``ArrowEngine``, in this process, Arrow's threads on) over
random tables of ``--rows`` rows, and prints the slowest of ``--repeats`` runs of each shape in nanoseconds per
unit (a row, a row and expression call, a byte, a row and sort pass). ``engine.cost`` compiles these figures in,
times ``TIME_SAFETY`` for slower and shared machines; the shapes are the worst the model's facts allow: random
keys (no locality), every row its own group within the group bound, nulls absent (no shortcut), a filter that
keeps half the rows at random. Numbers only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow as pa

from saferoom.engine import plan
from saferoom.engine.arrow import ArrowEngine
from saferoom.engine.plan import AggExpr, Call, Col, Lit


def _table(rows: int, groups: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = pa.array([f"category-{i:04d}" for i in range(40)])
    return pa.table(
        {
            "k": rng.integers(0, groups, rows),
            "a": rng.integers(0, 1000, rows),
            "x": rng.random(rows) * 1000,
            "y": rng.random(rows) * 1000,
            "lat": 52.3 + rng.random(rows) * 0.2,
            "lon": 4.8 + rng.random(rows) * 0.2,
            "d": pa.array(rng.integers(0, 20000, rows).astype("int32")).cast(pa.int32()).cast(pa.date32()),
            "s": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 40, rows).astype("int32")), words),
        }
    )


def passes_of(rows: int) -> int:
    return max(1, rows.bit_length())


def _slowest(run: Callable[[], object], repeats: int) -> float:
    worst = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        worst = max(worst, time.perf_counter() - start)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.rows
    tables: dict[str, pa.Table] = {}
    engine = ArrowEngine(lambda name: tables[name])

    def per(node: plan.Node, units: float) -> float:
        engine.execute(node)  # warm
        return _slowest(lambda: engine.execute(node), args.repeats) / units * 1e9

    tables["t"] = _table(n, n)
    width = sum(c.nbytes for c in tables["t"].columns) / n
    scan = plan.Scan("t", tuple(tables["t"].column_names))
    print(f"{n:,} rows, {width:.0f} bytes a row; ns per unit, slowest of {args.repeats}")
    print(f"  scan                     {per(scan, n):8.2f} per row")
    half = Call("lt", (Col("a"), Lit(500)))
    print(f"  filter (half, random)    {per(plan.Filter(scan, half), n * width):8.3f} per byte")
    calls = {
        "add": Call("add", (Col("x"), Col("y"))),
        "div": Call("div", (Col("x"), Col("y"))),
        "log": Call("log", (Col("x"),)),
        "sin": Call("sin", (Col("x"),)),
        "pow": Call("pow", (Col("x"), Col("y"))),
        "cast_str": Call("cast_str", (Col("x"),)),
        "cast_int": Call("cast_int", (Col("x"),)),
        "grid_cell": Call("grid_cell", (Col("lat"), Col("lon"), Lit(500))),
        "distance_m": Call("distance_m", (Col("lat"), Col("lon"), Lit(52.4), Lit(4.9))),
        "histogram": Call("histogram", (Col("x"), Lit(0.0), Lit(1000.0), Lit(500))),
        "is_in": Call("is_in", (Col("a"), *(Lit(i) for i in range(0, 2000, 2)))),
        "date_trunc": Call("date_trunc", (Col("d"), Lit("month"))),
        "year": Call("year", (Col("d"),)),
        "eq(category)": Call("eq", (Col("s"), Lit("category-0007"))),
        "round": Call("round", (Col("x"), Lit(2))),
        "mod": Call("mod", (Col("a"), Lit(7))),
        "cast_str(date)": Call("cast_str", (Col("d"),)),
        "cast_float": Call("cast_float", (Col("a"),)),
        "month": Call("month", (Col("d"),)),
        "add_days": Call("add_days", (Col("d"), Col("a"))),
        "days_between": Call("days_between", (Col("d"), Col("d"))),
        "cell_lat": Call("cell_lat", (Col("a"), Lit(500))),
        "case(10)": Call(
            "case", (*(x for i in range(10) for x in (Call("lt", (Col("a"), Lit(i * 100))), Lit(i))), Lit(-1))
        ),
        "between": Call("between", (Col("x"), Lit(100.0), Lit(900.0))),
    }
    for name, expr in calls.items():
        print(f"  project {name:<16} {per(plan.Project(scan, (('v', expr),)), n):8.2f} per row")
    for groups in (8, 1_000, 100_000, 1_000_000, n):
        tables["g"] = _table(n, groups, seed=2)
        g = plan.Scan("g", ("k", "x"))
        counted = plan.Aggregate(g, ("k",), (("n", AggExpr("count")), ("s", AggExpr("sum", Col("x")))))
        median = plan.Aggregate(g, ("k",), (("m", AggExpr("median", Col("x"))),))
        print(
            f"  group-by {groups:>9,} groups {per(counted, n):8.2f} per row (count, sum); "
            f"exact median {per(median, n):8.2f} per row"
        )
    # Distinct counts, every value distinct (their worst case; all equal costs 2 ns a row): without keys, integers
    # are sorted (per row and pass) and floats hashed; with keys, hashed.
    distinct = np.random.default_rng(4).permutation(n).astype(np.int64) * 7_919
    tables["u"] = pa.table({"i": distinct, "f": distinct * 0.37, "k": np.arange(n) % 8, "every": np.arange(n)})
    tables["w"] = pa.table(
        {"t": pa.array([("x" * 59) + chr(33 + int(v) % 90) for v in distinct]), "k": np.arange(n) % 8}
    )
    u = plan.Scan("u", ("i", "f", "k", "every"))

    def distinct_of(column: str, keys: tuple[str, ...] = ()) -> plan.Aggregate:
        return plan.Aggregate(u, keys, (("n", AggExpr("count_distinct", Col(column))),))

    print(f"  distinct count, int      {per(distinct_of('i'), n * passes_of(n)):8.3f} per row and pass (sorted)")
    print(f"  distinct count, float    {per(distinct_of('f'), n):8.2f} per row (hashed)")
    print(f"  distinct count, 8 groups {per(distinct_of('i', ('k',)), n):8.2f} per row (hashed)")
    print(f"  distinct count, {n:,} groups {per(distinct_of('i', ('every',)), n):8.2f} per row (hashed)")
    w = plan.Scan("w", ("t", "k"))
    for keys in ((), ("k",)):
        extremes = plan.Aggregate(w, keys, (("lo", AggExpr("min", Col("t"))),))
        print(f"  min of 60-byte text, {len(keys)} keys {per(extremes, n):8.2f} per row")
    gs = plan.Scan("t", ("s", "k", "x"))
    twokeys = plan.Aggregate(gs, ("s", "k"), (("n", AggExpr("count")),))
    print(f"  group-by (category, id)  {per(twokeys, n):8.2f} per row")
    for right in (1_000, 100_000, n):
        tables["r"] = pa.table({"k": np.random.default_rng(3).permutation(right), "z": np.arange(right)})
        join = plan.Join(plan.Scan("t", ("k", "a", "x", "s")), plan.Scan("r", ("k", "z")), ("k",), "inner")
        print(f"  join, right {right:>9,} rows {per(join, n + right):8.2f} per input row")
    passes = max(1, n.bit_length())
    sort = plan.Sort(plan.Scan("t", ("x", "a", "s")), (("x", False),))
    print(f"  sort (float key)         {per(sort, n * passes):8.3f} per row and pass ({passes} passes)")
    sort_s = plan.Sort(plan.Scan("t", ("s", "a")), (("s", False), ("a", True)))
    print(f"  sort (category, int)     {per(sort_s, n * passes * 2):8.3f} per row and pass")
    bound = plan.Bound(plan.Scan("t", ("k", "a", "x")), "k", 1)
    print(f"  bound                    {per(bound, n * passes):8.3f} per row and pass")
    union = plan.Union((plan.Scan("t", ("a", "x", "s")), plan.Scan("t", ("a", "x", "s"))))
    print(f"  union (decodes)          {per(union, 2 * n):8.2f} per row")
    threshold = plan.Threshold(plan.Scan("t", ("a", "x")), "a", 500, "t")
    print(f"  threshold                {per(threshold, n):8.2f} per row")


if __name__ == "__main__":
    main()
