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
_LOGICAL = {"int64": "int64", "double": "float64", "string": "string", "bool": "bool", "date32[day]": "date32",
            "timestamp[s]": "timestamp"}  # fmt: skip


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
        if domain.distinct is not None:
            found = {v for v in values if v is not None}
            assert len(found) <= domain.distinct, f"{case.expr}: {len(found)} values, domain says {domain.distinct}"
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


def test_dates_beyond_years_1_to_9999_are_null_to_every_date_function() -> None:
    """date32 holds +-5.8 million years, which neither Python, Spark nor Arrow's calendar functions compute
    (Arrow gave year 20599 for both extremes): every date function makes them null, never fails."""
    days = [-(2**31), 2**31 - 1, -719_163, 2_932_897, -719_162, 2_932_896, None]
    table = pa.table({"d": pa.array(days, pa.int32()).cast(pa.date32()), "n": pa.array([1] * 7, pa.int64())})
    d, n = plan.Col("d"), plan.Col("n")
    calls = {
        "year": plan.Call("year", (d,)),
        "month": plan.Call("month", (d,)),
        "day": plan.Call("day", (d,)),
        "weekday": plan.Call("weekday", (d,)),
        "date_trunc": plan.Call("date_trunc", (d, plan.Lit("month"))),
        "days_between": plan.Call("days_between", (d, d)),
        "add_days": plan.Call("add_days", (d, n)),
        "cast_int": plan.Call("cast_int", (d,)),
        "cast_str": plan.Call("cast_str", (d,)),
    }
    out = {fn: _run(Case(fn, expr, table, {})) for fn, expr in calls.items()}
    for fn, values in out.items():
        assert values[:4] == [None] * 4, fn  # beyond the years: null
        assert values[6] is None, fn
    assert out["year"][4:6] == [1, 9999] and out["weekday"][4:6] == [1, 5]  # 0001-01-01 was a Monday
    assert out["cast_int"][4:6] == [-719_162, 2_932_896] and out["days_between"][4:6] == [0, 0]
    assert out["add_days"][4] is not None and out["add_days"][5] is None  # the day after 9999-12-31: null
    assert out["cast_str"][4:6] == ["0001-01-01", "9999-12-31"]


def test_timestamps_beyond_years_1_to_9999_are_null_to_every_time_function() -> None:
    """timestamp[s] holds +-292 billion years: every date and time function makes the ones beyond years 1 to
    9999 null, and never fails on them."""
    seconds = [-(2**63), 2**63 - 1, -62_135_596_801, 253_402_300_800, -62_135_596_800, 253_402_300_799, None]
    table = pa.table({"t": pa.array(seconds, pa.int64()).cast(pa.timestamp("s"))})
    t = plan.Col("t")
    calls = {fn: plan.Call(fn, (t,)) for fn in ("year", "month", "day", "weekday", "hour", "minute", "second")}
    calls |= {fn: plan.Call(fn, (t,)) for fn in ("to_date", "cast_int", "cast_str")}
    calls["date_trunc"] = plan.Call("date_trunc", (t, plan.Lit("hour")))
    calls["seconds_between"] = plan.Call("seconds_between", (t, t))
    out = {fn: _run(Case(fn, expr, table, {})) for fn, expr in calls.items()}
    for fn, values in out.items():
        assert values[:4] == [None] * 4, fn  # beyond the years: null
        assert values[6] is None, fn
    assert out["year"][4:6] == [1, 9999] and out["hour"][4:6] == [0, 23] and out["second"][4:6] == [0, 59]
    assert out["cast_int"][4:6] == [-62_135_596_800, 253_402_300_799] and out["seconds_between"][4:6] == [0, 0]
    assert out["cast_str"][4:6] == ["0001-01-01 00:00:00", "9999-12-31 23:59:59"]
    assert [str(d) for d in out["to_date"][4:6]] == ["0001-01-01", "9999-12-31"]
