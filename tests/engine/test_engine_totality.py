"""The Arrow engine is total and the registry's value domains are sound: every function, over the values that
break engines, neither fails nor produces a value its domain rule says it cannot (the release rewrite scales
noise and clamps by those domains)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from saferoom.engine import ArrowEngine, plan
from saferoom.engine.functions import REGISTRY, expr_domain
from tests.support_functions import Case, aggregate_plans, aggregate_tables, cases, outside

CASES = list(cases())
_LOGICAL = {"int64": "int64", "double": "float64", "string": "string", "bool": "bool"}


def _run(case: Case) -> list[object]:
    types = [(c, _LOGICAL[str(case.table.schema.field(c).type)]) for c in case.table.column_names]
    source = plan.Input("t", tuple(types))
    node = plan.Project(source, (("out", case.expr),))
    engine = ArrowEngine(lambda _: pa.table({}), {"t": case.table})
    return engine.execute(node).table.column("out").to_pylist()


def test_every_function_is_exercised() -> None:
    assert {c.fn for c in CASES} == set(REGISTRY)


@pytest.mark.parametrize("fn", sorted(REGISTRY))
def test_no_value_makes_a_function_fail_or_leave_its_domain(fn: str) -> None:
    checked = 0
    for case in (c for c in CASES if c.fn == fn):
        values = _run(case)  # any exception fails the test: the engine must be total
        domain = expr_domain(case.expr, case.domains)
        for row, value in enumerate(values):
            why = outside(value, domain)
            assert why is None, (
                f"{plan.to_json(plan.Project(plan.Input('t', ()), (('out', case.expr),)))}: row "
                f"{case.table.slice(row, 1).to_pylist()} gives {why} (domain {domain})"
            )
        checked += len(values)
    assert checked > 0


def test_clamp_bounds_hold_for_every_value() -> None:
    values = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 0.5, None]
    table = pa.table({"x": pa.array(values, pa.float64())})
    expr = plan.Call("clamp", (plan.Col("x"), plan.Lit(0.0), plan.Lit(1.0)))
    out = _run(Case("clamp", expr, table, {}))
    assert out == [None, 1.0, 0.0, 1.0, 0.0, 0.5, None]  # NaN becomes null: no value escapes [0, 1]


@pytest.mark.parametrize("name", sorted(aggregate_tables()))
def test_no_value_makes_an_aggregate_fail(name: str) -> None:
    table = aggregate_tables()[name]
    engine = ArrowEngine(lambda _: pa.table({}), {"t": table})
    for node in aggregate_plans(table, name.split("-")[0]):
        result = engine.execute(node).table
        assert result.num_rows == (1 if not node.keys else len(set(table.column("k").to_pylist())))
