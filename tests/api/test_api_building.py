"""The algorithm API: plans built, misuse refused with clear errors, nothing but public methods exposed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saferoom.api import Context, export_outputs, namespace, public_attributes
from saferoom.catalog.manifest import Manifest
from saferoom.engine import plan
from saferoom.errors import LimitExceeded, UserCodeError

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, lit, when, count, mean, median, quantile = (
    NS[k] for k in ("col", "lit", "when", "count", "mean", "median", "quantile")
)


@pytest.fixture(scope="module")
def ctx(catalog_dir: Path) -> Context:
    return Context(Manifest.load(catalog_dir), ["population", "bus_stops"])


def node_of(table):
    return plan.from_data(export_outputs({"t": table})["t"]["plan"])


def test_pipeline_builds_the_expected_plan(ctx: Context) -> None:
    t = ctx.table("population").filter(col("age") >= 18).group_by("district").agg(n=count(), m=median("income"))
    node = node_of(t)
    assert isinstance(node, plan.Aggregate) and node.keys == ("district",)
    assert node.aggs == (("n", plan.AggExpr("count")), ("m", plan.AggExpr("median", plan.Col("income"))))
    assert node.input.predicate == plan.Call("ge", (plan.Col("age"), plan.Lit(18)))
    assert t.schema == {"district": "string", "n": "int64", "m": "float64"}


def test_operators_and_methods(ctx: Context) -> None:
    e = ((col("age") + 1) * 2 - 3) / 4 % 5
    assert e._node.fn == "mod"
    assert (1 - col("age"))._node.args[0] == plan.Lit(1)
    assert (~(col("age") > 1) & (col("income") <= 5) | col("age").is_null())._node.fn == "or"
    assert col("district").is_in(["a", "b"])._node == plan.Call(
        "is_in", (plan.Col("district"), plan.Lit("a"), plan.Lit("b"))
    )
    assert col("age").between(1, 2)._node.fn == "between"
    assert col("age").cast("float")._node.fn == "cast_float"
    case = when(col("age") < 18, "child").otherwise("adult")
    assert case._node.fn == "case" and len(case._node.args) == 3
    t = ctx.table("population").with_columns(band=case, q=col("income").round(1))
    assert t.schema["band"] == "string" and t.columns[-2:] == ["band", "q"]


def test_builtin_fallbacks_of_shadowed_names() -> None:
    assert NS["sum"]([1, 2, 3]) == 6
    assert NS["max"](1, 5) == 5
    assert NS["min"]([4, 2]) == 2
    assert isinstance(NS["max"]("income"), type(count()))


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda ctx: ctx.table("housing_transactions"), "not declared"),
        (lambda ctx: ctx.table("population").filter(col("nope") > 1), "unknown column 'nope'"),
        (lambda ctx: ctx.table("population").filter(col("district") + 1), "needs numbers"),
        (lambda ctx: ctx.table("population").filter("age"), "condition of filter"),
        (lambda ctx: ctx.table("population").select(col("age") + 1), "name computed columns"),
        (lambda ctx: ctx.table("population").select("age", "age"), "appears twice"),
        (lambda ctx: ctx.table("population").with_columns(_x=lit(1)), "must start with a letter"),
        (lambda ctx: ctx.table("population").group_by().agg(n=count()), "at least one column"),
        (lambda ctx: ctx.table("population").group_by("district").agg(), "at least one aggregate"),
        (lambda ctx: ctx.table("population").group_by("district").agg(n=col("age")), "must be an aggregate"),
        (lambda ctx: ctx.table("population").group_by("district").agg(s=mean("district")), "needs numbers"),
        (lambda ctx: ctx.table("population").join(ctx.table("bus_stops"), on="district"), "both sides"),
        (lambda ctx: ctx.table("population").join(ctx.table("bus_stops"), on="district", how="cross"), "how"),
        (lambda ctx: ctx.table("population").sort([]), "sort"),
        (lambda ctx: ctx.table("population").sort("age", descending="yes"), "descending"),
        (lambda ctx: ctx.table("population").head(-5), "head"),
        (lambda ctx: ctx.table("population").union(), "union takes"),
        (lambda ctx: ctx.table("population").union(ctx.table("bus_stops")), "same column names"),
        (lambda ctx: ctx.table("population").rename(x="nope"), "not a column"),
        (lambda ctx: bool(col("age") > 1), "no truth value"),
        (lambda ctx: bool(ctx.table("population")), "no truth value"),
        (lambda ctx: list(ctx.table("population")), "cannot be iterated"),
        (lambda ctx: col("age") + [1], "cannot combine"),  # noqa: RUF005
        (lambda ctx: col("age") + float("nan"), "finite"),
        (lambda ctx: col("age") + 2**70, "64 bits"),
        (lambda ctx: quantile("age", 1.5), "between 0 and 1"),
        (lambda ctx: NS["grid_cell"](col("lat"), col("lon"), meters=1), "meters"),
        (lambda ctx: NS["histogram"](col("age"), 10, 0, 5), "start < stop"),
        (lambda ctx: col("age").cast("bytes"), "cast"),
        (lambda ctx: col("age").round(99), "ndigits"),
    ],
)
def test_misuse_is_refused_clearly(ctx: Context, build, fragment: str) -> None:
    with pytest.raises(UserCodeError) as info:
        build(ctx)
    assert fragment in str(info.value)


def test_plan_size_is_bounded(ctx: Context) -> None:
    t = ctx.table("population")
    with pytest.raises(LimitExceeded):
        for i in range(plan.MAX_NODES + 1):
            t = t.filter(col("age") > i)
    e = col("age")
    with pytest.raises(LimitExceeded):
        for _ in range(20_000):
            e = e + 1


def test_public_attributes_are_exactly_the_public_surface(ctx: Context) -> None:
    table = ctx.table("population")
    for obj in (ctx, table, table.group_by("district"), col("age"), when(col("age") > 1, 1), count()):
        allowed = public_attributes(obj)
        assert allowed is not None
        assert not [a for a in allowed if a.startswith("_")]
        for name in allowed:
            assert hasattr(obj, name)
        public = {n for n in dir(type(obj)) if not n.startswith("_")}
        assert public == set(allowed), type(obj).__name__
    assert public_attributes("a string") is None and public_attributes(len) is None


def test_api_objects_reveal_no_host_details(ctx: Context) -> None:
    for obj in (ctx, ctx.table("population"), col("age") + 1, count(), when(col("age") > 1, 1)):
        text = repr(obj)
        assert "0x" not in text and "/" not in text


def test_export_outputs(ctx: Context) -> None:
    t = ctx.table("population").group_by("district").agg(n=count())
    out = export_outputs({"t": t, "n": 3, "s": "x", "f": 1.5, "b": True, "z": None})
    assert set(out["t"]) == {"plan"} and out["n"] == {"value": 3}
    for bad, fragment in [
        ([t], "must return a dict"),
        ({}, "no results"),
        ({"_x": 1}, "must start with a letter"),
        ({"x": [1]}, "must be a table"),
        ({"x": "y" * 70_000}, "at most"),
        ({f"o{i}": i for i in range(65)}, "at most 64"),
    ]:
        with pytest.raises(UserCodeError, match=fragment):
            export_outputs(bad)
