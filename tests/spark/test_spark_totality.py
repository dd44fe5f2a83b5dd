"""The Spark engine is total like the Arrow engine and agrees with it: every registry function over the values
that break engines (nulls, NaN, +-infinity, int64 extremes, number-like text), one Spark action per function."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest

from saferoom.catalog.manifest import Manifest
from saferoom.engine import ArrowEngine, plan
from saferoom.engine.functions import REGISTRY
from saferoom.engine.spark import SparkEngine
from tests.support_functions import Case, aggregate_plans, aggregate_tables, cases
from tests.support_spark import assert_same, same_value

CASES = list(cases())


def _renamed(expr: plan.Expr, prefix: str) -> plan.Expr:
    if isinstance(expr, plan.Col):
        return plan.Col(prefix + expr.name)
    if isinstance(expr, plan.Call):
        return plan.Call(expr.fn, tuple(_renamed(a, prefix) for a in expr.args))
    return expr


def _merged(fn_cases: list[Case]) -> tuple[pa.Table, plan.Node]:
    """All cases of one function side by side in one table (shorter ones padded with null rows)."""
    length = max(c.table.num_rows for c in fn_cases)
    columns: dict[str, pa.Array] = {}
    outputs: list[tuple[str, plan.Expr]] = []
    for i, case in enumerate(fn_cases):
        prefix = f"c{i}_"
        for name in case.table.column_names:
            values = case.table.column(name).combine_chunks()
            columns[prefix + name] = pa.concat_arrays([values, pa.nulls(length - len(values), values.type)])
        outputs.append((f"out{i}", _renamed(case.expr, prefix)))
    table = pa.table(columns)
    source = plan.Input("t", tuple((c, str(table.schema.field(c).type)) for c in table.column_names))
    return table, plan.Project(source, tuple(outputs))


_LOGICAL = {
    "int64": "int64",
    "double": "float64",
    "string": "string",
    "bool": "bool",
    "date32[day]": "date32",
    "timestamp[s]": "timestamp",
}


@pytest.mark.parametrize("fn", sorted(REGISTRY))
def test_every_function_is_total_and_the_engines_agree(
    fn: str, spark_session: Any, spark_catalog: tuple[Any, Manifest, Manifest]
) -> None:
    table, node = _merged([c for c in CASES if c.fn == fn])
    assert isinstance(node, plan.Project) and isinstance(node.input, plan.Input)
    node = plan.Project(
        plan.Input("t", tuple((c, _LOGICAL[t]) for c, t in node.input.columns)),
        node.columns,
    )
    supplied = {"t": table}
    arrow = ArrowEngine(lambda _: pa.table({}), supplied).execute(node).table  # neither may raise
    spark = SparkEngine(spark_session, spark_catalog[2], {}, supplied).execute(node).table
    if fn not in EXTREMES_DIFFER:
        assert_same(arrow, spark, ordered=True)
        return
    for i, (name, expr) in enumerate(node.columns):
        inputs = [table.column(c.name).to_pylist() for c in _columns(expr)]
        for row, (a, b) in enumerate(zip(arrow.column(name).to_pylist(), spark.column(name).to_pylist(), strict=True)):
            if fn == "cast_str" and any(isinstance(column[row], float) for column in inputs):
                continue  # Spark formats floats its own way ("1.0")
            if all(_ordinary(column[row]) for column in inputs):
                assert same_value(a, b) or a is b is None, (fn, i, [column[row] for column in inputs], a, b)


# Functions whose results differ between the engines on extreme inputs only (NaN, +-inf, -0.0, integers beyond
# 2**53, cells outside any map), as saferoom.engine.spark documents; ordinary values must agree. cast_str of a
# float differs by formatting ("1.0" on Spark), so only its other inputs are compared.
EXTREMES_DIFFER = {"cast_str", "cell_lat", "cell_lon", "is_in", "mod", "pow", "round"}


def _columns(expr: plan.Expr) -> list[plan.Col]:
    if isinstance(expr, plan.Col):
        return [expr]
    if isinstance(expr, plan.Call):
        return [c for a in expr.args for c in _columns(a)]
    return []


def _ordinary(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) < 2.0**53 and not (value == 0 and math.copysign(1, value) < 0)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**53 and abs(value) < 2**31
    return not isinstance(value, str)  # text: cast_str of text is text, the rest compares


@pytest.mark.parametrize("name", sorted(aggregate_tables()))
def test_no_value_makes_an_aggregate_fail_on_spark(
    name: str, spark_session: Any, spark_catalog: tuple[Any, Manifest, Manifest]
) -> None:
    table = aggregate_tables()[name]
    engine = SparkEngine(spark_session, spark_catalog[2], {}, {"t": table})
    arrow = ArrowEngine(lambda _: pa.table({}), {"t": table})
    for node in aggregate_plans(table, name.split("-")[0]):
        ours, theirs = arrow.execute(node).table, engine.execute(node).table  # neither may raise
        assert ours.num_rows == theirs.num_rows
        names = (*node.keys, "rows")
        counts = [sorted(zip(*(t.column(c).to_pylist() for c in names), strict=True), key=str) for t in (ours, theirs)]
        assert counts[0] == counts[1]  # the same groups with the same row counts
