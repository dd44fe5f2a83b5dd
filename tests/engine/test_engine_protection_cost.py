"""What the release rewrite adds to a plan, computed once: each optimisation against the plain path, bit for bit.

The contributor count beside ``count()``, the dominance statistics beside a mean (its sum and count), a subset
check's counts beside the filter they check, a subtree that is both an output and a child of another: each is
computed once, and must give exactly the table the unshared computation gives, on values that are null, NaN,
infinite, at the int64 extremes, and on empty input.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from saferoom.engine import ArrowEngine
from saferoom.engine.optimize import shared_nodes
from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Call,
    Col,
    Expr,
    Filter,
    Join,
    Lit,
    Node,
    Project,
    Scan,
    share_subtrees,
)
from saferoom.errors import InvalidPlan


def _values(n: int, seed: int, extremes: bool = True) -> pa.Table:
    rng = np.random.default_rng(seed)
    f = rng.standard_normal(n) * 1e6
    if n:
        f[rng.integers(0, n, max(1, n // 50))] = np.nan
        f[rng.integers(0, n, max(1, n // 200))] = np.inf
        f[rng.integers(0, n, max(1, n // 200))] = -np.inf
    if extremes:
        f[: min(n, 4)] = [1e308, 1e308, -0.0, 5e-324][: min(n, 4)]
    i = rng.integers(-1000, 1000, n)
    if extremes:
        i[: min(n, 3)] = [2**63 - 1, -(2**63), 2**53 + 1][: min(n, 3)]
    nulls = rng.random(n) < 0.05
    groups = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)]
    return pa.table(
        {
            "f": pa.array(f, mask=nulls),
            "i": pa.array(i, mask=np.roll(nulls, 1)),
            "g": pa.array(groups).dictionary_encode(),
            "age": pa.array(rng.integers(0, 100, n), mask=np.roll(nulls, 2)),
        }
    )


TABLES = {
    "one": _values(5_000, 1),
    # Several chunks: Acero adds their batches in another order on each run (the plain path too), so float
    # sums there are equal to rounding only, and int64 extremes (added as floats by a mean) would not even be.
    "chunked": pa.concat_tables(
        [_values(n, seed, extremes=False) for n, seed in ((3_000, 2), (2_000, 3), (7, 4))]
    ).unify_dictionaries(),
    "tiny": _values(3, 5),
    "empty": _values(0, 6),
    # a group with no value at all: its mean, sum and count of values are null, null and 0
    "nulls": pa.table(
        {
            "f": pa.array([None, None, 1.5], pa.float64()),
            "i": pa.array([None, None, 2], pa.int64()),
            "g": pa.array(["a", "a", "b"]).dictionary_encode(),
            "age": pa.array([None, 3, 30], pa.int64()),
        }
    ),
}


def _bits(value: Any) -> Any:
    """A cell as a comparable value: floats by their bits (NaN, -0.0 and the last bit count)."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    return (type(value).__name__, value)


def _close(a: Any, b: Any) -> bool:
    if a == b or a[0] != "float" or b[0] != "float":
        return bool(a == b)
    x, y = struct.unpack("<d", a[1])[0], struct.unpack("<d", b[1])[0]
    return math.isclose(x, y, rel_tol=1e-12) or (math.isnan(x) and math.isnan(y))


def _rows(table: pa.Table, keys: tuple[str, ...]) -> dict[Any, dict[str, Any]]:
    """Rows by their key (group-by output order is not fixed), each cell by its bits."""
    out = {}
    for row in table.to_pylist():
        out[tuple(row[k] for k in keys)] = {c: _bits(v) for c, v in row.items()}
    return out


def _run(dataset: str, node: Node) -> pa.Table:
    return ArrowEngine(TABLES.__getitem__).execute(node).table


SCAN = {name: Scan(name, ("f", "i", "g", "age")) for name in TABLES}

# What protect writes beside a mean of a magnitude and a count: the contributor count and the dominance
# statistics of the amount, beside the algorithm's own aggregates.
RELEASED_AGGS: tuple[tuple[str, AggExpr], ...] = (
    ("n", AggExpr("count")),
    ("mean_f", AggExpr("mean", Col("f"))),
    ("mean_i", AggExpr("mean", Col("i"))),
    ("mean_f2", AggExpr("mean", Call("mul", (Col("f"), Lit(2.0))))),
    ("__t1", AggExpr("max", Col("f"))),
    ("__s1", AggExpr("sum", Col("f"))),
    ("__l1", AggExpr("min", Col("f"))),
    ("__y1", AggExpr("count", Col("f"))),
    ("__s2", AggExpr("sum", Col("i"))),
    ("__y2", AggExpr("count", Col("i"))),
    ("__s3", AggExpr("sum", Call("mul", (Col("f"), Lit(2.0))))),
    ("__y3", AggExpr("count", Call("mul", (Col("f"), Lit(2.0))))),
    ("median_f", AggExpr("median", Col("f"))),
    ("q_f", AggExpr("quantile", Col("f"), 0.25)),
    ("__c4", AggExpr("count")),
    # min and max of one argument are one min_max aggregate: of an int, a category and a computed float
    ("__t2", AggExpr("max", Col("i"))),
    ("__l2", AggExpr("min", Col("i"))),
    ("min_g", AggExpr("min", Col("g"))),
    ("max_g", AggExpr("max", Col("g"))),
    ("__l3", AggExpr("min", Call("mul", (Col("f"), Lit(2.0))))),
    ("__t3", AggExpr("max", Call("mul", (Col("f"), Lit(2.0))))),
    ("max_age", AggExpr("max", Col("age"))),  # alone: no pair
    ("sum_int_literal", AggExpr("sum", Call("mul", (Col("i"), Lit(1))))),
    ("sum_float_literal", AggExpr("sum", Call("mul", (Col("i"), Lit(1.0))))),
)


@pytest.mark.parametrize("dataset", sorted(TABLES))
@pytest.mark.parametrize("keys", [(), ("g",)])
def test_aggregates_computed_once_equal_each_computed_alone(dataset: str, keys: tuple[str, ...]) -> None:
    together = _rows(_run(dataset, Aggregate(SCAN[dataset], keys, RELEASED_AGGS)), keys)
    for name, agg in RELEASED_AGGS:
        alone = _rows(_run(dataset, Aggregate(SCAN[dataset], keys, ((name, agg),))), keys)
        assert set(alone) == set(together)
        for key, row in alone.items():
            if dataset == "chunked" and agg.fn in ("sum", "mean"):
                # Another order of additions on every run, also on the plain path (4 different last bits in
                # 40 runs of one plan): the same value to rounding.
                assert _close(together[key][name], row[name]), (dataset, keys, name, key)
            else:
                assert together[key][name] == row[name], (dataset, keys, name, key)
    if not keys:
        assert len(together) == 1


def test_a_mean_of_integers_is_not_its_wrapping_sum_over_its_count() -> None:
    big = pa.table({"i": pa.array([2**62, 2**62, 2**62], pa.int64()), "g": pa.array(["a"] * 3).dictionary_encode()})
    aggs = (("m", AggExpr("mean", Col("i"))), ("s", AggExpr("sum", Col("i"))), ("c", AggExpr("count", Col("i"))))
    table = ArrowEngine({"big": big}.__getitem__).execute(Aggregate(Scan("big", ("i", "g")), ("g",), aggs)).table
    assert table.column("m").to_pylist() == [float(2**62)]  # the int64 sum wrapped; the mean did not


def _condition_plans(dataset: str, predicate: Expr) -> tuple[Node, Node, Node]:
    """A filter, the subset rule's counts of what it keeps and leaves out, and those counts the plain way."""
    rows = Project(SCAN[dataset], (("age", Col("age")), ("g", Col("g")), ("f", Col("f"))))
    kept = AggExpr("sum", Call("case", (predicate, Lit(1), Lit(0))))
    left = AggExpr("sum", Call("case", (predicate, Lit(0), Lit(1))))
    counts = Aggregate(rows, (), (("kept", kept), ("left", left)))
    plain = Aggregate(rows, (), (("kept", kept), ("left", left), ("rows", AggExpr("count"))))
    return Aggregate(Filter(rows, predicate), ("g",), (("n", AggExpr("count")),)), counts, plain


PREDICATES: list[Expr] = [
    Call("ge", (Col("age"), Lit(18))),  # null ages: neither kept nor... left out (case reads null as false)
    Call("gt", (Col("f"), Lit(0.0))),  # NaN and nulls
    Call("case", (Call("eq", (Col("g"), Lit("a"))), Lit(True), Lit(False))),
    Call("or", (Call("is_null", (Col("f"),)), Call("lt", (Col("age"), Lit(3))))),
    Call("eq", (Lit(1), Lit(1))),  # a scalar condition: everyone
    Call("eq", (Lit(1), Lit(None))),  # null: nobody
]


@pytest.mark.parametrize("dataset", sorted(TABLES))
@pytest.mark.parametrize("index", range(len(PREDICATES)))
def test_subset_counts_from_the_filters_mask_equal_the_plain_sums(dataset: str, index: int) -> None:
    filtered, counts, plain = _condition_plans(dataset, PREDICATES[index])
    engine = ArrowEngine(TABLES.__getitem__)
    _, shared, _ = (e.table for e in engine.execute_all([filtered, counts, plain]))
    reference = ArrowEngine(TABLES.__getitem__).execute(plain).table
    for column in ("kept", "left"):
        assert shared.schema.field(column) == reference.schema.field(column)
        assert shared.column(column).to_pylist() == reference.column(column).to_pylist()
    n = TABLES[dataset].num_rows
    if n:
        assert shared.column("kept")[0].as_py() + shared.column("left")[0].as_py() == n
    else:  # the sum of no rows is null, as the plain path says
        assert shared.column("kept").to_pylist() == [None]


def test_subset_counts_of_a_condition_that_is_no_condition_are_refused_as_before() -> None:
    _, counts, plain = _condition_plans("one", Col("age"))
    for node in (counts, plain):
        with pytest.raises(InvalidPlan):
            ArrowEngine(TABLES.__getitem__).execute(node)


def test_a_root_that_is_also_a_child_is_computed_once() -> None:
    counts = Aggregate(SCAN["one"], (), (("n", AggExpr("count")),))
    size = Project(counts, (("__n", Col("n")),))
    assert id(counts) in shared_nodes([counts, size])
    assert id(counts) not in shared_nodes([size])


def test_literals_of_other_types_are_not_shared() -> None:
    """As dataclasses Lit(1) == Lit(1.0) == Lit(True) (and Lit(0.0) == Lit(-0.0)): sharing them made every
    output the first one's type."""
    scan = SCAN["tiny"]
    outputs: dict[str, Node] = {
        name: Project(scan, (("v", Lit(value)),))
        for name, value in (("int", 1), ("float", 1.0), ("bool", True), ("zero", 0.0), ("negative_zero", -0.0))
    }
    shared = share_subtrees(outputs)
    tables = ArrowEngine(TABLES.__getitem__).execute_all(list(shared.values()))
    kinds = {name: t.table.schema.field("v").type for name, t in zip(shared, tables, strict=True)}
    assert kinds == {
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "zero": pa.float64(),
        "negative_zero": pa.float64(),
    }
    signs = [math.copysign(1.0, t.table.column("v")[0].as_py()) for t in tables[3:]]
    assert signs == [1.0, -1.0]
    again = share_subtrees({"a": outputs["int"], "b": Project(scan, (("v", Lit(1)),))})
    assert again["a"] is again["b"]  # equal ones still are


def _plain_tables(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """The same tables with every category decoded (what the join used to see)."""
    out = {}
    for name, table in tables.items():
        columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
        out[name] = pa.table(columns, names=table.column_names)
    return out


JOIN_TABLES = {
    "people": pa.concat_tables(
        [
            pa.table(
                {
                    "k": pa.array([1, 2, 3, None, 5], pa.int64()),
                    "district": pa.array(["a", "b", None, "a", "c"]).dictionary_encode(),
                    "sex": pa.array(["f", "m", "f", "m", "f"]).dictionary_encode(),
                }
            ),
            pa.table(
                {
                    "k": pa.array([6, 2], pa.int64()),
                    "district": pa.array(["c", "a"]).dictionary_encode(),  # other dictionaries: decoded
                    "sex": pa.array(["m", "f"]).dictionary_encode(),
                }
            ),
        ],
        promote_options="none",
    ),
    "sales": pa.table(
        {
            "k": pa.array([2, 2, 5, 7, None], pa.int64()),
            "kind": pa.array(["x", "y", "x", None, "y"]).dictionary_encode(),
            "price": pa.array([1.5, math.nan, -0.0, math.inf, None]),
        }
    ),
}


@pytest.mark.parametrize("how", ["inner", "left", "right", "full"])
def test_categories_carried_through_a_join_as_codes_keep_their_values(how: str) -> None:
    people = Scan("people", ("k", "district", "sex"))
    node = Join(people, Scan("sales", ("k", "kind", "price")), ("k",), how)
    coded = ArrowEngine(JOIN_TABLES.__getitem__).execute(node).table
    plain = ArrowEngine(_plain_tables(JOIN_TABLES).__getitem__).execute(node).table
    assert coded.column_names == plain.column_names
    assert pa.types.is_dictionary(coded.schema.field("kind").type)  # one dictionary: kept as codes

    def rows(table: pa.Table) -> list[tuple[Any, ...]]:
        return sorted((tuple(_bits(v) for v in r.values()) for r in table.to_pylist()), key=repr)

    assert rows(coded) == rows(plain)
    grouped = Aggregate(node, ("kind",), (("n", AggExpr("count")), ("s", AggExpr("sum", Col("price")))))
    a = ArrowEngine(JOIN_TABLES.__getitem__).execute(grouped).table
    b = ArrowEngine(_plain_tables(JOIN_TABLES).__getitem__).execute(grouped).table
    assert rows(a) == rows(b)
