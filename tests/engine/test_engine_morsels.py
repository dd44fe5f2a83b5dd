"""An expression is computed a morsel at a time (``expressions.evaluate``): for every function of the registry and
the values that break engines, computed one row at a time it gives the values and the type it gives over the
whole column, so a result never depends on where the morsels fall."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from saferoom.engine import ArrowEngine, expressions, plan
from saferoom.engine.expressions import _evaluate, evaluate
from saferoom.engine.functions import REGISTRY
from tests.support_functions import cases

CASES = list(cases())


def _rows_as_chunks(table: pa.Table) -> pa.Table:
    """``table`` with every row in a chunk of its own: a morsel of one row, all null where the row is."""
    batches = [table.slice(i, 1).combine_chunks().to_batches()[0] for i in range(table.num_rows)]
    return pa.Table.from_batches(batches, table.schema)


@pytest.mark.parametrize("fn", sorted(REGISTRY))
def test_a_function_row_by_row_is_the_function_over_the_column(fn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expressions, "MORSEL_ROWS", 1)
    checked = 0
    for case in (c for c in CASES if c.fn == fn):
        rows = case.table if case.table.num_rows > 1 else pa.concat_tables([case.table] * 3)  # one-row cases
        table = _rows_as_chunks(rows)
        assert expressions._morsels(case.expr, table) is not None  # computed row by row
        whole, parts = _evaluate(case.expr, rows), evaluate(case.expr, table)
        checked += 1
        if isinstance(whole, pa.Scalar):
            assert parts == whole
            continue
        assert parts.type == whole.type, case.expr
        assert _same(parts.to_pylist()) == _same(whole.to_pylist()), case.expr
    assert checked > 0


def _same(values: list[object]) -> list[object]:
    """Values compared as equal when they are the same value (NaN is NaN)."""
    return ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values]


def test_an_expression_of_literals_stays_one_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expressions, "MORSEL_ROWS", 2)
    table = pa.table({"x": pa.chunked_array([[1, 2], [3, 4], [5]])})
    value = evaluate(plan.Call("add", (plan.Lit(1), plan.Lit(2))), table)
    assert isinstance(value, pa.Scalar) and value.as_py() == 3


def test_a_projection_keeps_the_tables_chunks_and_a_filter_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Morsels follow the table's own batches, so a computed column is chunked like the columns it sits with
    and a filter cuts every column alike."""
    monkeypatch.setattr(expressions, "MORSEL_ROWS", 3)
    x = pa.chunked_array([[1, 2, 3], [4, None, 6], [7, 8, 9]])
    source = plan.Input("t", (("x", "int64"),))
    doubled = plan.Project(source, (("x", plan.Col("x")), ("y", plan.Call("mul", (plan.Col("x"), plan.Lit(2))))))
    kept = plan.Filter(doubled, plan.Call("gt", (plan.Col("y"), plan.Lit(5))))
    result = ArrowEngine(lambda _: pa.table({}), {"t": pa.table({"x": x})}).execute(kept).table
    assert result.to_pydict() == {"x": [3, 4, 6, 7, 8, 9], "y": [6, 8, 12, 14, 16, 18]}


def test_a_table_of_many_small_chunks_is_computed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expressions, "MORSEL_ROWS", 4)
    table = pa.table({"x": pa.chunked_array([[i] for i in range(100)])})
    expr = plan.Call("add", (plan.Col("x"), plan.Lit(1)))
    assert expressions._morsels(expr, table) is None  # 100 kernel calls of one row each would not pay
    assert evaluate(expr, table).to_pylist() == list(range(1, 101))


def test_a_filter_true_on_every_row_keeps_the_table_without_a_copy() -> None:
    x = pa.chunked_array([[1, 2, 3], [4, 5, 6]])
    source = plan.Input("t", (("x", "int64"),))
    engine = ArrowEngine(lambda _: pa.table({}), {"t": pa.table({"x": x})})
    kept = engine.execute(plan.Filter(source, plan.Call("ge", (plan.Col("x"), plan.Lit(1))))).table
    assert kept.column("x").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert kept.column("x").chunk(0).buffers()[1].address == x.chunk(0).buffers()[1].address  # the same memory
    with_null = pa.table({"x": pa.chunked_array([[1, None, 3]])})
    engine = ArrowEngine(lambda _: pa.table({}), {"t": with_null})
    kept = engine.execute(plan.Filter(source, plan.Call("ge", (plan.Col("x"), plan.Lit(1))))).table
    assert kept.column("x").to_pylist() == [1, 3]  # a null condition drops its row
