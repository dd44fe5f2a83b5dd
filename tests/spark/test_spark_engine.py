"""Differential tests of the engines: every plan shape the API builds runs on Arrow and on Spark Connect over the
same generated city (Arrow IPC vs partitioned Parquet) and gives the same table.

Tolerances: integers, strings, booleans, dates and null positions exactly; floats within 1e-9 relative (Java's
and C's libm may differ in the last bit; sums are added in a different order). Quantiles are exact on both
engines (linear interpolation between the two closest ranks: Spark's ``percentile``, not ``percentile_approx``).
Row order is compared only where a sort makes it defined; ties in a sort are not compared (see engine.spark).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from saferoom.api import Context, namespace
from saferoom.api.table import Table
from saferoom.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from saferoom.engine import ArrowEngine, plan
from saferoom.engine.functions import REGISTRY
from saferoom.engine.spark import SparkEngine
from saferoom.errors import InvalidPlan
from tests.support_spark import assert_same

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, lit, when = NS["col"], NS["lit"], NS["when"]
count, count_distinct, sum_, mean, median = NS["count"], NS["count_distinct"], NS["sum"], NS["mean"], NS["median"]
quantile, std, min_, max_ = NS["quantile"], NS["std"], NS["min"], NS["max"]
grid_cell, cell_lat, cell_lon = NS["grid_cell"], NS["cell_lat"], NS["cell_lon"]
distance_m, histogram, sqrt, log, exp = NS["distance_m"], NS["histogram"], NS["sqrt"], NS["log"], NS["exp"]
floor, ceil = NS["floor"], NS["ceil"]

DATASETS = ["population", "housing_transactions", "bus_stops", "schools", "land_use", "convenience_stores"]


@dataclass
class Engines:
    ctx: Context
    arrow: ArrowEngine
    spark: SparkEngine
    catalog: Catalog
    session: Any
    manifest: Manifest  # every dataset on Spark
    locations: dict[str, str]


@pytest.fixture(scope="module")
def engines(catalog_dir: Path, spark_catalog: tuple[Path, Manifest, Manifest], spark_session: Any):
    manifest = Manifest.load(catalog_dir)
    everything = spark_catalog[2]
    locations = {n: i.location for n, i in everything.datasets.items() if i.location}
    catalog = Catalog.open(catalog_dir)
    spark = SparkEngine(spark_session, everything, locations)
    yield Engines(
        Context(manifest, DATASETS), ArrowEngine(catalog.table), spark, catalog, spark_session, everything, locations
    )
    catalog.close()


def node(table: Table) -> plan.Node:
    return table._node  # type: ignore[attr-defined, no-any-return]


def both(engines: Engines, table: Table, ordered: bool = False) -> pa.Table:
    a, s = engines.arrow.execute(node(table)), engines.spark.execute(node(table))
    assert_same(a.table, s.table, ordered)
    assert a.dropped == s.dropped
    return a.table


Build = Callable[[Context], Table]


def _people(ctx: Context) -> Table:
    return ctx.table("population")


# Expressions: every function of the plan language, over real columns (with nulls from when() without otherwise).
EXPRESSIONS: dict[str, Build] = {
    "arithmetic": lambda c: _people(c).select(
        "person_id",
        a=col("age") + 1,
        b=col("income") - col("age") * 2,
        c=col("income") / (col("age") - 30),  # division by zero -> null
        d=col("age") % 7,
        e=(col("age") - 50) % 7,  # sign follows the dividend
        f=col("income") % 1000.5,
        g=col("age") % (col("age") - 30),  # modulo by zero -> null
        h=-col("age"),
        i=(col("age") - 50).abs(),
        j=col("age") // 3,
        k=col("household_size") ** 2,
    ),
    "rounding": lambda c: _people(c).select(
        "person_id",
        a=floor(col("lat") * 100),
        b=ceil(col("lon") * 100),
        c=col("age").round(),
        d=(col("income") / 7).round(1),
        e=col("age").round(-1),
        f=(col("income") / 13).round(-2),
    ),
    "math": lambda c: _people(c).select(
        "person_id",
        a=sqrt(col("income")),
        b=log(col("income")),  # income 0 -> null
        c=exp(col("age") / 50),
        d=sqrt(col("age") - 40),  # negative -> NaN on both
    ),
    "comparisons_and_logic": lambda c: _people(c).select(
        "person_id",
        a=col("age") == 40,
        b=col("age") != 40,
        c=(col("age") < 30) & (col("sex") == "female"),
        d=(col("age") >= 65) | (col("income") > 100_000),
        e=~(col("district") == "Huli"),
        f=col("age").between(20, 29),
        g=col("education").is_in(["bachelor", "postgraduate"]),
        h=col("age").is_in([1, 2, 3, 30]),
        i=when(col("age") > 50, col("age")).otherwise(None).is_null(),
        j=when(col("age") > 50, col("age")).otherwise(None).is_in([60, None]),  # a null matches a null among the values
        k=col("district") <= "Jimei",
    ),
    "when_otherwise_and_casts": lambda c: _people(c).select(
        "person_id",
        a=when(col("age") < 18, "minor").when(col("age") < 65, "adult").otherwise("senior"),
        b=when(col("age") < 18, 0).otherwise(col("income")),  # int and float -> float
        c=when(col("age") > 90, col("income")).otherwise(None),  # nulls
        d=col("income").cast("int"),
        e=col("age").cast("float"),
        f=col("age").cast("str"),
        g=col("district").cast("str"),
        h=(col("age") > 40).cast("int"),
        i=col("income").clip(10_000, 200_000),
        j=col("age").clip(17.5, 65.5),  # integer column: bounds rounded inwards
    ),
    "geography": lambda c: _people(c).select(
        "person_id",
        cell=grid_cell(col("lat"), col("lon"), 500),
        coarse=grid_cell(col("lat"), col("lon"), meters=2500),
        clat=cell_lat(grid_cell(col("lat"), col("lon"), 500), 500),
        clon=cell_lon(grid_cell(col("lat"), col("lon"), 500), 500),
        d=distance_m(col("lat"), col("lon"), 24.48, 118.09),
        h=histogram(col("income"), 0, 200_000, 20),
        hage=histogram(col("age"), 10, 80, 7),
    ),
    "dates": lambda c: c.table("housing_transactions").select(
        "transaction_id",
        "date",
        late=col("date") > NS["date"]("2024-06-30"),
        price=col("price_per_m2").round(-3),
        y=NS["year"](col("date")),
        m=NS["month"](col("date")),
        d=NS["day"](col("date")),
        w=NS["weekday"](col("date")),
        q=NS["date_trunc"](col("date"), "quarter"),
        wk=NS["date_trunc"](col("date"), "week"),
        age=NS["days_between"](NS["date"](2019, 1, 1), col("date")),
        later=NS["add_days"](col("date"), 45),
        days=col("date").cast("int"),
        text=col("date").cast("str"),
        clamped=col("date").clip(19_000, 19_500),
    ),
}


def _trig() -> plan.Node:
    scan = plan.Scan("population", ("person_id", "lat", "lon"))
    return plan.Project(
        scan,
        (
            ("person_id", plan.Col("person_id")),
            ("s", plan.Call("sin", (plan.Call("radians", (plan.Col("lat"),)),))),
            ("c", plan.Call("cos", (plan.Call("radians", (plan.Col("lon"),)),))),
            ("p", plan.Call("pow", (plan.Col("lat"), plan.Lit(0.5)))),
            ("n", plan.Call("is_in", (plan.Col("person_id"), plan.Lit(1), plan.Lit(2)))),
        ),
    )


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_expressions(engines: Engines, name: str) -> None:
    assert both(engines, EXPRESSIONS[name](engines.ctx)).num_rows > 0


def test_shapes_only_the_release_step_builds(engines: Engines) -> None:
    """Functions the API does not name, and an aggregate of only keys (what a cell list is)."""
    keys_only = plan.Aggregate(plan.Scan("population", ("district", "sex")), ("district", "sex"), ())
    for p in (_trig(), keys_only):
        assert_same(engines.arrow.execute(p).table, engines.spark.execute(p).table)


def test_timestamps_agree(engines: Engines) -> None:
    """No catalog dataset holds a time of day: timestamps reach Spark from a local table (as a cell list does)."""
    moments = [dt.datetime(2024, 2, 29, 13, 7, 5), dt.datetime(1969, 12, 31, 23, 59, 59), dt.datetime(1, 1, 1), None]
    table = pa.table({"k": [1, 2, 3, 4], "t": pa.array(moments, pa.timestamp("s"))})
    source = plan.Input("times", (("k", "int64"), ("t", "timestamp")))
    t, noon = plan.Col("t"), plan.Call("timestamp", (plan.Lit(2024), plan.Lit(2), plan.Lit(29), plan.Lit(12)))
    calls = {fn: plan.Call(fn, (t,)) for fn in ("year", "weekday", "hour", "minute", "second", "to_date")}
    calls |= {f"trunc_{u}": plan.Call("date_trunc", (t, plan.Lit(u))) for u in ("week", "day", "hour", "minute")}
    calls |= {"since_noon": plan.Call("seconds_between", (noon, t)), "after": plan.Call("gt", (t, noon))}
    calls |= {"text": plan.Call("cast_str", (t,)), "seconds": plan.Call("cast_int", (t,))}
    calls["clamped"] = plan.Call("clamp", (t, plan.Lit(0), plan.Lit(1.7e9)))
    project = plan.Project(source, (("k", plan.Col("k")), *calls.items()))
    latest = plan.Aggregate(source, (), (("latest", plan.AggExpr("max", t)), ("n", plan.AggExpr("count_distinct", t))))
    for p in (project, latest):
        arrow = ArrowEngine(lambda _: pa.table({}), {"times": table}).execute(p).table
        spark = SparkEngine(engines.spark._session, engines.spark._manifest, {}, {"times": table}).execute(p).table
        assert_same(arrow, spark)


def test_every_function_is_covered(engines: Engines) -> None:
    used: set[str] = set()
    for build in EXPRESSIONS.values():
        for n in plan.walk(node(build(engines.ctx))):
            if isinstance(n, plan.Project):
                stack: list[plan.Expr] = [e for _, e in n.columns]
                while stack:
                    e = stack.pop()
                    if isinstance(e, plan.Call):
                        used.add(e.fn)
                        stack.extend(e.args)
    used |= {"sin", "cos", "radians", "pow", "is_in"}
    used |= {"timestamp", "hour", "minute", "second", "to_date", "seconds_between"}  # test_timestamps_agree
    assert set(REGISTRY) <= used, set(REGISTRY) - used


AGGREGATES: dict[str, Build] = {
    "by_district": lambda c: (
        _people(c)
        .group_by("district")
        .agg(
            n=count(),
            n_edu=count("education"),
            households=count_distinct("household_id"),
            total=sum_("income"),
            ages=sum_("age"),
            avg=mean("income"),
            avg_age=mean("age"),
            med=median("income"),
            med_age=median("age"),
            p10=quantile("income", 0.1),
            p90=quantile(col("income") / 12, 0.9),
            q0=quantile("age", 0.0),
            q1=quantile("age", 1.0),
            sd=std("income"),
            youngest=min_("age"),
            oldest=max_("age"),
            first_edu=min_("education"),
            last_district=max_("district"),
        )
    ),
    "many_groups": lambda c: (
        _people(c)
        .with_columns(cell=grid_cell(col("lat"), col("lon"), 500))
        .group_by("cell", "sex")
        .agg(n=count(), med=median("income"), sd=std("age"), p25=quantile("age", 0.25))
    ),
    "global": lambda c: _people(c).agg(n=count(), avg=mean("income"), med=median("income"), sd=std("income")),
    "count_only": lambda c: _people(c).with_columns(x=col("age") * 2).agg(n=count()),  # scans no column at all
    "empty_global": lambda c: (
        _people(c)
        .filter(col("age") > 200)
        .agg(n=count(), d=count_distinct("sex"), s=sum_("income"), m=mean("income"), q=median("income"))
    ),
    "empty_groups": lambda c: _people(c).filter(col("age") > 200).group_by("district").agg(n=count()),
    "null_keys": lambda c: (
        _people(c)
        .with_columns(old=when(col("age") > 60, col("district")).otherwise(None))
        .group_by("old")
        .agg(n=count(), s=sum_(when(col("age") > 80, col("income")).otherwise(None)))
    ),
    "expression_arguments": lambda c: (
        _people(c)
        .group_by("education")
        .agg(rich=sum_(when(col("income") > 100_000, 1).otherwise(0)), m=mean(col("income") * 0.5 + 1))
    ),
    "multiple_rows_per_unit": lambda c: (
        c.table("housing_transactions")
        .group_by("district")
        .agg(n=count(), buyers=count_distinct("buyer_id"), med=median("price_per_m2"), last=max_("date"))
    ),
    "public": lambda c: c.table("bus_stops").group_by("district").agg(n=count(), routes=sum_("routes")),
}


@pytest.mark.parametrize("name", sorted(AGGREGATES))
def test_aggregates(engines: Engines, name: str) -> None:
    both(engines, AGGREGATES[name](engines.ctx))


def _cells(ctx: Context, meters: int = 1000) -> Table:
    return (
        _people(ctx)
        .with_columns(cell=grid_cell(col("lat"), col("lon"), meters))
        .group_by("cell")
        .agg(residents=count(), income=median("income"))
    )


def _stops(ctx: Context, meters: int = 1000) -> Table:
    return (
        ctx.table("bus_stops")
        .with_columns(cell=grid_cell(col("lat"), col("lon"), meters))
        .group_by("cell")
        .agg(stops=count())
    )


SHAPES: dict[str, tuple[Build, bool | str]] = {
    # name: (builder, whether row order is defined and compared, or the one column whose order is)
    "scan_filter_select": (lambda c: c.table("schools").filter(col("capacity") > 500).select("school_id"), False),
    "rename": (lambda c: c.table("bus_stops").rename(id="stop_id").select("id", "routes"), False),
    "join_inner": (lambda c: _cells(c).join(_stops(c), on="cell"), False),
    "join_left": (lambda c: _cells(c).join(_stops(c), on="cell", how="left"), False),
    "join_right": (lambda c: _cells(c).join(_stops(c), on="cell", how="right"), False),
    "join_full": (lambda c: _cells(c).join(_stops(c), on="cell", how="full"), False),
    "join_two_keys": (
        lambda c: (
            _people(c)
            .group_by("district", "sex")
            .agg(n=count())
            .join(_people(c).group_by("district", "sex").agg(m=mean("income")), on=["district", "sex"])
        ),
        False,
    ),
    "join_rows": (
        lambda c: (
            c.table("housing_transactions")
            .rename(person_id="buyer_id")
            .join(_people(c).select("person_id", "age"), on="person_id", how="left")
            .group_by("district")
            .agg(n=count(), age=mean("age"))
        ),
        False,
    ),
    "sort_head": (lambda c: _cells(c).sort(["residents", "cell"], descending=[True, False]).head(15), True),
    "sort_two_keys": (
        lambda c: _people(c).group_by("district", "sex").agg(n=count()).sort(["sex", "n"], descending=[False, True]),
        True,
    ),
    "sort_nulls_last": (
        lambda c: _cells(c).join(_stops(c), on="cell", how="left").sort("stops", descending=True),
        "stops",  # many ties: the order of this column, and the rows as a set
    ),
    "head_of_sorted_unique": (lambda c: _cells(c).sort("cell").head(7), True),
    "union": (
        lambda c: (
            c.table("schools")
            .select("district", kind=lit("school"))
            .union(c.table("bus_stops").select("district", kind=lit("stop")))
            .group_by("district", "kind")
            .agg(n=count())
        ),
        False,
    ),
    "union_widening": (
        lambda c: (
            _people(c).group_by("district").agg(v=count()).union(_people(c).group_by("district").agg(v=mean("income")))
        ),
        False,
    ),
    "site_selection": (
        lambda c: (
            _cells(c, 500)
            .join(_stops(c, 500), on="cell", how="left")
            .with_columns(score=col("residents") * 0.6 + when(col("stops").is_null(), 0).otherwise(col("stops")) * 0.4)
            .sort(["score", "cell"], descending=[True, False])
            .head(10)
        ),
        True,
    ),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_plan_shapes(engines: Engines, name: str) -> None:
    build, ordered = SHAPES[name]
    out = both(engines, build(engines.ctx), ordered is True)
    if isinstance(ordered, str):
        spark = engines.spark.execute(node(build(engines.ctx))).table
        assert spark.column(ordered).to_pylist() == out.column(ordered).to_pylist()
    assert out.num_rows > 0


def test_release_only_nodes(engines: Engines) -> None:
    """Threshold (with its drop count), Bound and Input, as the release step writes them."""
    arrow, spark = engines.arrow, engines.spark
    threshold = plan.Threshold(node(_cells(engines.ctx, 250)), "residents", 10, "cells")
    a, s = arrow.execute(threshold), spark.execute(threshold)
    assert a.dropped["cells"] > 0 and a.dropped == s.dropped
    assert_same(a.table, s.table)
    # Bound: at most 2 transactions per buyer; which two may differ, how many may not.
    scan = plan.Scan("housing_transactions", ("buyer_id", "price"))
    per_buyer = plan.Aggregate(plan.Bound(scan, "buyer_id", 2), ("buyer_id",), (("n", plan.AggExpr("count")),))
    counts = plan.Aggregate(per_buyer, ("n",), (("buyers", plan.AggExpr("count")),))
    assert_same(arrow.execute(counts).table, spark.execute(counts).table)
    # Input: supplied (released) tables, among them an empty one and one with a column of nulls.
    supplied = {
        "noisy": pa.table({"district": ["Huli", "Siming"], "n": [10, None]}),
        "empty": pa.table({"k": pa.array([], pa.int64())}),
        "nulls": pa.table({"k": [1, 2], "x": [None, None]}),
    }
    people = node(_people(engines.ctx).group_by("district").agg(m=count()))
    joined = plan.Join(plan.Input("noisy", (("district", "string"), ("n", "int64"))), people, ("district",), "left")
    with_inputs = SparkEngine(engines.session, engines.manifest, engines.locations, supplied)
    nulls = plan.Input("nulls", (("k", "int64"), ("x", "null")))
    for p in (joined, plan.Input("empty", (("k", "int64"),)), nulls):
        assert_same(ArrowEngine(engines.catalog.table, supplied).execute(p).table, with_inputs.execute(p).table)


def test_no_value_makes_either_engine_fail_and_both_agree(engines: Engines) -> None:
    # An error that depends on data would be a channel around disclosure control: overflow wraps, text that is
    # not a number and floats beyond int64 become null, on both engines alike.
    values = {
        "t": pa.array([" 12 ", "+7", "5.9", "-3.", "1e5", ".5", "12abc", "", None]),
        "f": pa.array([1e300, float("nan"), -2.5, 3.99, 0.0, -1e19, 9e18, 1.0, None]),
    }
    supplied = {"v": pa.table(values)}
    source = plan.Input("v", (("t", "string"), ("f", "float64")))
    node = plan.Project(
        source,
        (
            ("ti", plan.Call("cast_int", (plan.Col("t"),))),
            ("tf", plan.Call("cast_float", (plan.Col("t"),))),
            ("fi", plan.Call("cast_int", (plan.Col("f"),))),
        ),
    )
    spark = SparkEngine(engines.session, engines.manifest, engines.locations, supplied)
    arrow = ArrowEngine(engines.catalog.table, supplied).execute(node).table
    assert arrow["ti"].to_pylist() == [12, 7, 5, -3, None, None, None, None, None]
    assert_same(arrow, spark.execute(node).table)
    overflow = plan.Project(
        plan.Scan("population", ("person_id",)),
        (("x", plan.Call("mul", (plan.Col("person_id"), plan.Lit(2**62)))),),
    )
    assert_same(engines.arrow.execute(overflow).table, engines.spark.execute(overflow).table)


def test_errors_are_invalid_plans(engines: Engines) -> None:
    spark = engines.spark
    with pytest.raises(InvalidPlan, match="no column"):
        spark.execute(plan.Scan("population", ("nope",)))
