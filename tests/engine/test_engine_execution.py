"""The Arrow engine: every node, function and aggregate against hand-computed answers."""

from __future__ import annotations

import itertools
import math
import statistics
import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.engine import ArrowEngine, prune_columns
from saferoom.engine.expressions import evaluate
from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Bound,
    Call,
    Col,
    Expr,
    Filter,
    Input,
    Join,
    Limit,
    Lit,
    Project,
    Scan,
    Sort,
    Threshold,
    Union,
    from_json,
    share_subtrees,
    to_json,
)
from saferoom.errors import InvalidPlan

PEOPLE = pa.table(
    {
        "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
        "district": pa.array(["a", "b", "a", "c", "b", "a"]).dictionary_encode(),
        "age": pa.array([10, 25, 40, None, 65, 33], pa.int64()),
        "income": pa.array([0.0, 30_000.0, 55_000.0, 12_000.0, None, 41_000.0]),
        "lat": pa.array([24.45, 24.46, 24.47, 24.50, 24.51, 24.45]),
        "lon": pa.array([118.10, 118.11, 118.12, 118.15, 118.16, 118.10]),
    }
)
STOPS = pa.table({"district": ["a", "b", "d"], "stops": pa.array([3, 1, 7], pa.int64())})
TABLES = {"people": PEOPLE, "stops": STOPS}
ALL = Scan("people", tuple(PEOPLE.column_names))
STOPS_SCAN = Scan("stops", ("district", "stops"))


def run(node):
    return ArrowEngine(TABLES.__getitem__).execute(node)


def values(node, column):
    return run(node).table.column(column).to_pylist()


def call(fn, *args):
    return Call(fn, tuple(a if isinstance(a, Col | Lit | Call) else Lit(a) for a in args))


def test_scan_filter_project() -> None:
    node = Project(Filter(ALL, call("ge", Col("age"), 30)), (("id", Col("id")), ("next", call("add", Col("age"), 1))))
    result = run(node).table
    assert result.to_pydict() == {"id": [3, 5, 6], "next": [41, 66, 34]}


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        ("add", (Col("age"), 1), [11, 26, 41, None, 66, 34]),
        ("sub", (Col("age"), 1.5), [8.5, 23.5, 38.5, None, 63.5, 31.5]),
        ("mul", (Col("age"), 2), [20, 50, 80, None, 130, 66]),
        ("div", (Col("age"), 4), [2.5, 6.25, 10.0, None, 16.25, 8.25]),
        ("div", (Col("age"), 0), [None] * 6),
        ("mod", (Lit(-7), Lit(3)), [-1] * 6),
        ("mod", (Col("age"), 0), [None] * 6),
        ("neg", (Col("age"),), [-10, -25, -40, None, -65, -33]),
        ("abs", (Lit(-2.5),), [2.5] * 6),
        ("floor", (Lit(2.7),), [2.0] * 6),
        ("ceil", (Lit(2.1),), [3.0] * 6),
        ("round", (Lit(2.345), Lit(2)), [2.35] * 6),
        ("round", (Lit(-2.5),), [-3.0] * 6),
        ("sqrt", (Lit(16),), [4.0] * 6),
        ("log", (Lit(0),), [None] * 6),
        ("eq", (Col("district"), "a"), [True, False, True, False, False, True]),
        ("ne", (Col("district"), "a"), [False, True, False, True, True, False]),
        ("lt", (Col("age"), 30), [True, True, False, None, False, False]),
        ("is_null", (Col("age"),), [False, False, False, True, False, False]),
        ("is_in", (Col("district"), "a", "c"), [True, False, True, True, False, True]),
        ("between", (Col("age"), 25, 40), [False, True, True, None, False, True]),
        ("distance_m", (Col("age"), 118.0, 24.0, 118.0), None),
        ("cast_int", (Lit(2.9),), [2] * 6),
        ("cast_str", (Col("age"),), ["10", "25", "40", None, "65", "33"]),
        ("histogram", (Col("age"), 0, 100, 4), [0.0, 25.0, 25.0, None, 50.0, 25.0]),
        ("histogram", (Lit(-50), 0, 100, 4), [0.0] * 6),
        ("histogram", (Lit(500), 0, 100, 4), [75.0] * 6),
    ],
)
def test_functions(fn, args, expected) -> None:
    out = values(Project(ALL, (("x", call(fn, *args)),)), "x")
    if expected is None:  # nulls propagate
        assert out[3] is None
        return
    assert out == pytest.approx(expected) if all(v is not None for v in expected) else out == expected


def test_logic_is_kleene() -> None:
    t = call("and", call("lt", Col("age"), 30), call("gt", Col("income"), 1.0))
    assert values(Project(ALL, (("x", t),)), "x") == [False, True, False, None, False, False]
    assert values(Project(ALL, (("x", call("not", call("eq", Col("district"), "a"))),)), "x") == [
        False, True, False, True, True, False,
    ]  # fmt: skip


def test_case_when_otherwise() -> None:
    expr = call("case", call("lt", Col("age"), 18), "child", call("ge", Col("age"), 65), "senior", "adult")
    assert values(Project(ALL, (("x", expr),)), "x") == ["child", "adult", "adult", "adult", "senior", "adult"]


def test_grid_cells_round_trip_and_distance() -> None:
    node = Project(
        ALL,
        (
            ("cell", call("grid_cell", Col("lat"), Col("lon"), 500)),
            ("clat", call("cell_lat", call("grid_cell", Col("lat"), Col("lon"), 500), 500)),
            ("clon", call("cell_lon", call("grid_cell", Col("lat"), Col("lon"), 500), 500)),
            ("lat", Col("lat")),
            ("lon", Col("lon")),
        ),
    )
    table = run(node).table.to_pydict()
    assert table["cell"][0] == table["cell"][5]  # same point, same cell
    assert len(set(table["cell"])) == 5
    for lat, lon, clat, clon in zip(table["lat"], table["lon"], table["clat"], table["clon"], strict=True):
        assert abs(lat - clat) * 110_574 <= 250 + 1e-6
        assert abs(lon - clon) * 111_320 * math.cos(math.radians(lat)) <= 260
    d = values(Project(ALL, (("d", call("distance_m", 24.0, 118.0, 25.0, 118.0)),)), "d")[0]
    assert d == pytest.approx(111_195, rel=1e-3)


def test_aggregates_match_numpy() -> None:
    node = Aggregate(
        ALL,
        ("district",),
        (
            ("n", AggExpr("count")),
            ("n_age", AggExpr("count", Col("age"))),
            ("d_age", AggExpr("count_distinct", Col("age"))),
            ("sum", AggExpr("sum", Col("income"))),
            ("mean", AggExpr("mean", Col("income"))),
            ("std", AggExpr("std", Col("income"))),
            ("median", AggExpr("median", Col("income"))),
            ("q90", AggExpr("quantile", Col("income"), 0.9)),
            ("min", AggExpr("min", Col("age"))),
            ("max", AggExpr("max", Col("age"))),
        ),
    )
    rows = {r["district"]: r for r in run(Sort(node, (("district", False),))).table.to_pylist()}
    a = [0.0, 55_000.0, 41_000.0]
    assert rows["a"]["n"] == 3 and rows["a"]["n_age"] == 3 and rows["a"]["d_age"] == 3
    assert rows["a"]["sum"] == sum(a) and rows["a"]["mean"] == pytest.approx(statistics.mean(a))
    assert rows["a"]["std"] == pytest.approx(statistics.stdev(a))
    assert rows["a"]["median"] == statistics.median(a)
    assert rows["a"]["q90"] == pytest.approx(float(np.quantile(a, 0.9)))
    assert (rows["a"]["min"], rows["a"]["max"]) == (10, 40)
    assert rows["b"]["median"] == 30_000.0  # nulls ignored
    assert rows["c"]["n_age"] == 0 and rows["c"]["std"] is None


def test_exact_quantiles_for_many_groups_match_numpy() -> None:
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 2_000, 50_000)
    vals = rng.lognormal(10, 1, 50_000)
    table = pa.table({"g": groups, "v": vals})
    node = Aggregate(Scan("t", ("g", "v")), ("g",), (("m", AggExpr("median", Col("v"))),))
    result = ArrowEngine(lambda _: table).execute(node).table.to_pydict()
    for g, m in list(zip(result["g"], result["m"], strict=True))[:50]:
        assert m == pytest.approx(float(np.median(vals[groups == g])))


def test_global_aggregate_on_empty_input() -> None:
    node = Aggregate(
        Filter(ALL, Lit(False)),
        (),
        (("n", AggExpr("count")), ("mean", AggExpr("mean", Col("income"))), ("med", AggExpr("median", Col("age")))),
    )
    assert run(node).table.to_pylist() == [{"n": 0, "mean": None, "med": None}]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("inner", {"a": 3, "b": 1}),
        ("left", {"a": 3, "b": 1, "c": None}),
        ("right", {"a": 3, "b": 1, "d": 7}),
        ("full", {"a": 3, "b": 1, "c": None, "d": 7}),
    ],
)
def test_joins_with_dictionary_keys(how: str, expected: dict) -> None:
    per = Aggregate(ALL, ("district",), (("n", AggExpr("count")),))
    node = Join(per, Scan("stops", ("district", "stops")), ("district",), how)
    table = run(node).table.to_pylist()
    assert {r["district"]: r["stops"] for r in table} == expected


def test_join_name_clash_and_key_type_mismatch() -> None:
    with pytest.raises(InvalidPlan, match="both sides"):
        run(Join(ALL, Scan("people", ("id", "age")), ("id",)))
    bad = Project(Scan("stops", ("stops",)), (("district", Col("stops")),))
    with pytest.raises(InvalidPlan, match="join key"):
        run(Join(Scan("people", ("district",)), bad, ("district",)))


def test_sort_nulls_last_multi_key_and_limit() -> None:
    node = Limit(Sort(Scan("people", ("id", "district", "age")), (("district", True), ("age", False))), 4)
    assert values(node, "id") == [4, 2, 5, 1]


def test_union_promotes_and_checks_names() -> None:
    left = Project(Scan("people", ("id",)), (("v", Col("id")),))
    right = Project(Scan("people", ("income",)), (("v", Col("income")),))
    assert run(Union((left, right))).table.schema.field("v").type == pa.float64()
    with pytest.raises(InvalidPlan, match="same column names"):
        run(Union((left, Scan("people", ("id",)))))


def test_threshold_counts_drops() -> None:
    per = Aggregate(ALL, ("district",), (("n", AggExpr("count")),))
    result = run(Threshold(per, "n", 2, "cells"))
    assert sorted(result.table.column("district").to_pylist()) == ["a", "b"]
    assert result.dropped == {"cells": 1}


@pytest.mark.parametrize("n", [1, 2, 5])
def test_bound_keeps_the_first_n_rows_of_each_unit_in_input_order(n: int) -> None:
    rows = pa.table({"unit": [3, 1, 3, 3, None, 1, None, 2, 3], "seq": list(range(9))})
    kept = ArrowEngine({"t": rows}.__getitem__).execute(Bound(Scan("t", ("unit", "seq")), "unit", n)).table
    expected = [s for s, u in enumerate(rows["unit"].to_pylist()) if rows["unit"][:s].to_pylist().count(u) < n]
    assert kept["seq"].to_pylist() == expected  # nulls count as one unit: rows without a person are bounded too
    strings = pa.table({"unit": ["a", "b", "a", "a"]})
    bounded = ArrowEngine({"s": strings}.__getitem__).execute(Bound(Scan("s", ("unit",)), "unit", 1)).table
    assert bounded["unit"].to_pylist() == ["a", "b"]


def test_input_nodes_read_the_supplied_table_and_nothing_else() -> None:
    supplied = pa.table({"district": ["a", "b"], "n": [12, 30]})
    node = Join(Input("dp1", (("district", "string"), ("n", "int64"))), STOPS_SCAN, ("district",))
    engine = ArrowEngine(TABLES.__getitem__, {"dp1": supplied})
    assert engine.execute(node).table.to_pydict() == {"district": ["a", "b"], "n": [12, 30], "stops": [3, 1]}
    with pytest.raises(InvalidPlan, match="no table was supplied"):
        ArrowEngine(TABLES.__getitem__).execute(node)


def test_release_nodes_round_trip_through_json_and_reject_bad_fields() -> None:
    node = Bound(Join(Input("dp1", (("district", "string"),)), STOPS_SCAN, ("district",)), "district", 2)
    assert from_json(to_json(node)) == node
    for bad in (
        '{"node": "bound", "input": {"node": "input", "label": "x", "columns": []}, "column": "u", "n": 0}',
        '{"node": "input", "label": "x", "columns": [["a"]]}',
        '{"node": "input", "label": "", "columns": []}',
    ):
        with pytest.raises(InvalidPlan):
            from_json(bad)


def test_prune_columns_narrows_scans() -> None:
    node = Aggregate(Filter(ALL, call("ge", Col("age"), 18)), ("district",), (("n", AggExpr("count")),))
    (pruned,) = prune_columns(node)
    assert pruned.input.input.columns == ("district", "age")


def test_shared_subtree_is_executed_once_for_all_outputs() -> None:
    per = lambda: Aggregate(ALL, ("district",), (("n", AggExpr("count")),))  # noqa: E731
    plans = share_subtrees({"x": Threshold(per(), "n", 2, "c1"), "y": Limit(Threshold(per(), "n", 2, "c1"), 1)})
    assert plans["x"] is plans["y"].input
    calls = []

    def source(name):
        calls.append(name)
        return TABLES[name]

    results = ArrowEngine(source).execute_all([plans["x"], plans["y"]])
    assert calls == ["people"]
    assert results[0].dropped == results[1].dropped == {"c1": 1}


def test_no_expression_fails_because_of_the_values_it_meets() -> None:
    table = pa.table({"a": pa.array([2**62, 1], pa.int64()), "f": [1e300, float("nan")], "t": ["12", "x1"]})
    node = Project(
        Scan("t", ("a", "f", "t")),
        (
            ("wrap", call("mul", Col("a"), 4)),
            ("neg", call("neg", Lit(-(2**63)))),
            ("big", call("cast_int", Col("f"))),
            ("text", call("cast_int", Col("t"))),
            ("real", call("cast_float", Col("t"))),
        ),
    )
    out = ArrowEngine({"t": table}.__getitem__).execute(node).table.to_pydict()
    assert out["wrap"] == [0, 4]  # wraps around as Spark's non-ANSI arithmetic does
    assert out["neg"] == [-(2**63)] * 2
    assert out["big"] == [None, None] and out["text"] == [12, None] and out["real"] == [12.0, None]


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        (Project(ALL, (("x", call("add", Col("district"), 1)),)), "needs numbers"),
        (Project(ALL, (("x", call("gt", Col("district"), 1)),)), "cannot compare"),
        (Project(ALL, (("x", call("add", Col("nope"), 1)),)), "unknown column"),
        (Project(ALL, (("x", call("grid_cell", Col("lat"), Col("lon"), Col("age"))),)), "literal"),
        (Filter(ALL, Col("age")), "true/false"),
        (Aggregate(ALL, ("district",), (("s", AggExpr("sum", Col("district"))),)), "numeric"),
    ],
)
def test_plan_errors_are_clear_and_sanitised(node, fragment: str) -> None:
    with pytest.raises(InvalidPlan) as info:
        run(node)
    assert fragment in str(info.value)
    assert "/work" not in str(info.value) and ".py" not in str(info.value) and "0x" not in str(info.value)


def _histogram_reference(x: pa.ChunkedArray | pa.Array, start: float, stop: float, bins: int) -> pa.ChunkedArray:
    """The histogram as nine pyarrow kernels (the engine's kernel before its one-pass numpy version)."""
    values = pc.cast(x, pa.float64(), safe=False) if pa.types.is_integer(x.type) else x
    width = (stop - start) / bins
    index = pc.floor(pc.divide(pc.subtract(values, start), width))
    index = pc.min_element_wise(pc.max_element_wise(index, 0.0, skip_nulls=False), float(bins - 1), skip_nulls=False)
    edge = pc.add(pc.multiply(index, width), start)
    return pc.if_else(pc.is_nan(values), pa.scalar(None, pa.float64()), edge)


@pytest.mark.parametrize(
    ("start", "stop", "bins"),
    [
        (0.0, 1_000_000.0, 50),
        (-0.0, 1.0, 3),
        (-0.0, 100.0, 10),  # a value just below start whose bin index rounds to -0.0
        (-1e300, 1e300, 10_000),
        (-7.5, 2.5, 7),
        (1e-300, 3e-300, 2),
    ],
)
def test_the_histogram_kernel_gives_the_bits_of_the_kernel_by_kernel_formula(
    start: float, stop: float, bins: int
) -> None:
    rng = np.random.default_rng(bins)
    edges = [0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308, math.inf, -math.inf, math.nan, start, stop, 2.5e-300]
    spread = rng.standard_normal(5_000) * abs(stop - start)
    floats = np.concatenate([np.array(edges), spread, rng.uniform(start, stop, 5_000)])
    mask = np.zeros(len(floats), dtype=bool)
    mask[rng.integers(0, len(floats), 200)] = True
    ints = pa.array(np.concatenate([[2**63 - 1, -(2**63), 2**53 + 1, 0], rng.integers(-(10**6), 10**6, 3_000)]))
    columns = {
        "f": pa.chunked_array(
            [pa.array(floats[:7], mask=mask[:7]), pa.array(floats[7:], mask=mask[7:]), pa.array([], pa.float64())]
        ),
        "i": pa.chunked_array([ints]),
    }
    for name, column in columns.items():
        table = pa.table({name: column})
        binned = Call("histogram", (Col(name), Lit(start), Lit(stop), Lit(bins)))
        got = ArrowEngine({"t": table}.__getitem__).execute(Project(Scan("t", (name,)), (("h", binned),))).table["h"]
        want = _histogram_reference(column, start, stop, bins)
        assert got.type == pa.float64() and len(got) == len(want)
        assert got.is_null().equals(want.is_null()), name
        got_bits, want_bits = (np.asarray(c.fill_null(1.5).to_numpy()).view(np.int64) for c in (got, want))
        assert np.array_equal(got_bits, want_bits), name  # bit for bit, the sign of zero included


def _layouts_table() -> pa.Table:
    """Columns chunked three ways (a file's batches, one chunk, other cuts), nulls and NaN in the condition; one
    dictionary per category column, as in an Arrow file."""
    rng = np.random.default_rng(3)
    n = 1_000
    x = rng.integers(0, 100, n)
    cuts = [0, 1, 250, 251, 700, n]
    f = rng.standard_normal(n)
    f[::37] = np.nan
    return pa.table(
        {
            "x": pa.chunked_array([pa.array(x[a:b]) for a, b in itertools.pairwise(cuts)]),
            "f": pa.chunked_array([pa.array(f, mask=rng.random(n) < 0.1)]),
            "g": pa.chunked_array(
                [pa.array(["a", "b"] * 100).dictionary_encode(), pa.array(["c", "a"] * 400).dictionary_encode()]
            ),
        }
    ).unify_dictionaries()


def _cells(table: pa.Table) -> list[tuple[object, ...]]:
    """Rows in order, floats by their bits (NaN equal to NaN), categories by their values."""
    return [
        tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in row.values()) for row in table.to_pylist()
    ]


@pytest.mark.parametrize(
    "predicate",
    [
        Call("gt", (Col("f"), Lit(0.0))),  # null and NaN rows: null drops, NaN > 0 is false
        Call("ge", (Call("add", (Col("x"), Col("x"))), Lit(100))),  # computed into one chunk
        Lit(True),
        Lit(False),
        Lit(None),
    ],
)
def test_a_filter_keeps_the_rows_of_its_mask_whatever_the_columns_chunks(predicate: Expr) -> None:
    table = _layouts_table()
    source = {"t": table}.__getitem__
    kept = Filter(Scan("t", ("x", "f", "g")), predicate)
    mask = evaluate(predicate, table)
    whole = table.combine_chunks()
    if isinstance(mask, pa.Scalar):
        want = whole if mask.as_py() is True else whole.slice(0, 0)
    else:
        want = whole.filter(mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask)
    assert _cells(ArrowEngine(source).execute(kept).table) == _cells(want)
    # Two parents of one filter reading different columns, and the filter itself a root: each gets its columns.
    count = Aggregate(kept, ("g",), (("n", AggExpr("count")),))
    total = Aggregate(kept, (), (("s", AggExpr("sum", Col("x"))),))
    outs = ArrowEngine(source).execute_all([count, total, kept])
    assert _cells(outs[2].table) == _cells(want)
    assert sorted(outs[0].table.to_pylist(), key=str) == sorted(
        want.group_by("g").aggregate([([], "count_all")]).rename_columns(["g", "n"]).to_pylist(), key=str
    )
    assert outs[1].table.column("s").to_pylist() == [pc.sum(want.column("x")).as_py()]


def test_a_filter_shared_by_a_union_and_another_filter_gives_the_union_the_same_columns_on_every_input() -> None:
    # The shared filter is read by the union (needs g) and by a filter on x (needs g and x): it carries both, the
    # union's other input only g; the union takes the columns it needs from each (found by the DuckDB differential).
    table = _layouts_table()
    shared = Filter(Scan("t", ("x", "f", "g")), Call("gt", (Col("f"), Lit(0.0))))
    more = Filter(shared, Call("lt", (Col("x"), Lit(50))))
    plan = Aggregate(Union((shared, more)), ("g",), (("n", AggExpr("count")),))
    counted = {r["g"]: r["n"] for r in ArrowEngine({"t": table}.__getitem__).execute(plan).table.to_pylist()}
    rows = [r for r in table.to_pylist() if r["f"] is not None and r["f"] > 0]
    want = {g: sum(r["g"] == g for r in rows) + sum(r["g"] == g and r["x"] < 50 for r in rows) for g in "abc"}
    assert counted == {g: n for g, n in want.items() if n}


@pytest.mark.parametrize(
    "values",
    [
        pa.chunked_array([pa.array([3, 1, None, 3, 2**63 - 1, -(2**63)]), pa.array([-(2**63), 0], pa.int64())]),
        pa.chunked_array([pa.array([1, 2, 2], pa.int8()), pa.array([], pa.int8())]),
        pa.chunked_array([pa.array([None, None], pa.int64())]),
        pa.chunked_array([], pa.int64()),
        pa.chunked_array([pa.array([-719_162, 2_932_896, None, 0, 0], pa.int32()).view(pa.date32())]),
        pa.chunked_array([pa.array([-(2**40), 2**40, 5, 5, None]).view(pa.timestamp("s"))]),
        pa.chunked_array([pa.array(np.random.default_rng(4).integers(-50, 50, 10_000))] * 3),
    ],
    ids=["int64 extremes", "int8", "all null", "no chunks", "dates", "timestamps", "many repeats"],
)
def test_a_distinct_count_without_keys_by_sorting_equals_the_hashed_count(values: pa.ChunkedArray) -> None:
    table = pa.table({"u": values, "g": pa.array(["a"] * len(values))})
    aggs = (("n", AggExpr("count_distinct", Col("u"))),)
    sorted_count = ArrowEngine({"t": table}.__getitem__).execute(Aggregate(Scan("t", ("u",)), (), aggs)).table
    grouped = ArrowEngine({"t": table}.__getitem__).execute(Aggregate(Scan("t", ("u", "g")), ("g",), aggs)).table
    assert sorted_count.column("n").to_pylist() == [pc.count_distinct(values).as_py()]
    assert grouped.column("n").to_pylist() == ([pc.count_distinct(values).as_py()] if len(values) else [])
