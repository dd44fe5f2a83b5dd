"""The release rewrite and release checks, end to end with the Arrow engine on a generated city."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from saferoom.disclosure import protect, release
from saferoom.engine import ArrowEngine, plan
from saferoom.errors import InvalidPlan, ReleaseRefused
from tests.support import checked, release_outputs, withheld_by

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, count, mean, max_, count_distinct = NS["col"], NS["count"], NS["mean"], NS["max"], NS["count_distinct"]


@pytest.fixture(scope="module")
def city(catalog_dir: Path):
    manifest = Manifest.load(catalog_dir)
    catalog = Catalog.open(catalog_dir)
    ctx = Context(manifest, ["population", "housing_transactions", "bus_stops"])
    yield manifest, catalog, ctx
    catalog.close()


def released(city, **tables):
    manifest, catalog, _ = city
    return release_outputs(manifest, catalog.table, tables)


def test_small_cells_are_suppressed_at_the_aggregate_with_their_keys(city) -> None:
    ctx = city[2]
    fine = ctx.table("population").group_by("district", "age", "sex").agg(n=count(), income=mean("income"))
    out = released(city, fine=fine)["fine"]
    assert out.report.kind == "aggregate"
    assert out.report.suppressed_cells == 0 and checked(out).suppressed_cells > 0  # the count: checker only
    assert min(out.table.column("n").to_pylist()) >= 10
    assert out.table.column_names == ["district", "age", "sex", "n", "income"]
    assert out.report.rules[0].rule == "min_contributors" and out.report.rules[0].threshold == 10
    assert out.report.rows + checked(out).suppressed_cells <= 6 * 101 * 2  # districts x ages x sexes


def test_group_by_the_privacy_unit_releases_nothing(city) -> None:
    out = released(city, x=city[2].table("population").group_by("person_id").agg(n=count()))["x"]
    assert out.table.num_rows == 0
    assert checked(out).suppressed_cells == 20_000 and out.report.suppressed_cells == 0


def test_filter_down_to_one_person_is_suppressed(city) -> None:
    one = city[2].table("population").filter(col("person_id") == 42).agg(n=count(), income=mean("income"))
    out = released(city, one=one)["one"]
    assert withheld_by(out)  # withheld whole by the subset rule (and the cell would fail its threshold)
    assert "subset" in [r.rule for r in out.report.rules]  # the researcher reads the rules, not why


def test_later_sort_and_head_never_see_suppressed_cells(city) -> None:
    ctx = city[2]
    cells = ctx.table("population").group_by("household_id").agg(n=count())
    out = released(city, top=cells.sort("n", descending=True).head(5))["top"]
    assert out.table.num_rows == 0  # households have at most 6 people: every cell is below 10


def test_row_level_personal_outputs_are_refused(city) -> None:
    ctx = city[2]
    for table in (
        ctx.table("population").select("income"),
        ctx.table("population").sort("income").head(1),
        ctx.table("population").join(ctx.table("bus_stops").group_by("district").agg(s=count()), on="district"),
    ):
        with pytest.raises(ReleaseRefused, match=r"row-level data from the personal dataset population|fewer than"):
            released(city, leak=table)


def test_min_and_max_of_personal_data_are_refused(city) -> None:
    with pytest.raises(ReleaseRefused, match="max of personal data"):
        released(city, x=city[2].table("population").group_by("district").agg(top=max_("income")))


def test_max_over_protected_cells_is_post_processing(city) -> None:
    cells = city[2].table("population").group_by("district").agg(n=count())
    out = released(city, x=cells.agg(biggest=max_("n")))["x"]
    assert out.table.num_rows == 1 and out.table.column("biggest")[0].as_py() > 1000


def test_public_data_is_released_row_by_row(city) -> None:
    out = released(city, stops=city[2].table("bus_stops").select("stop_id", "lat", "lon").head(7))["stops"]
    assert out.report.kind == "public" and out.table.num_rows == 7


def test_contributors_are_distinct_units_after_joins(city) -> None:
    ctx = city[2]
    buyers = ctx.table("housing_transactions").select("buyer_id", "price").rename(person_id="buyer_id")
    joined = ctx.table("population").select("person_id", "district").join(buyers, on="person_id")
    manifest = city[0]
    node = plan.from_data(export_outputs({"j": joined.group_by("district").agg(n=count())})["j"]["plan"])
    rewritten = protect({"j": node}, manifest)["j"].plan
    aggs = next(n for n in plan.walk(rewritten) if isinstance(n, plan.Aggregate)).aggs
    counts = [a for name, a in aggs if name.startswith("__n")]
    assert counts and all(a.fn == "count_distinct" for a in counts)  # a buyer may have several sales


def test_one_row_per_unit_counts_rows(city) -> None:
    node = plan.from_data(
        export_outputs({"x": city[2].table("population").group_by("district").agg(n=count())})["x"]["plan"]
    )
    rewritten = protect({"x": node}, city[0])["x"].plan
    assert isinstance(rewritten, plan.Threshold)
    assert rewritten.input.aggs[-1][1] == plan.AggExpr("count")  # cheap: no distinct count needed


def test_self_join_of_a_shared_subtree(city) -> None:
    ctx = city[2]
    cells = ctx.table("population").group_by("district").agg(n=count())
    both = cells.join(cells.rename(m="n"), on="district")
    out = released(city, both=both)["both"]
    assert out.table.num_rows == 6


def test_hostile_plans_naming_hidden_columns_are_refused(city) -> None:
    manifest = city[0]
    scan = plan.Scan("population", ("person_id",))
    for node in (
        plan.Project(scan, (("__c1", plan.Lit(100)),)),
        plan.Aggregate(scan, ("person_id",), (("__c1", plan.AggExpr("count")),)),
        plan.Threshold(plan.Aggregate(scan, (), (("n", plan.AggExpr("count")),)), "n", 0, "x"),
    ):
        with pytest.raises(InvalidPlan):
            protect({"x": node}, manifest)


def test_release_fails_closed_on_a_small_cell(city) -> None:
    manifest = city[0]
    node = plan.from_data(
        export_outputs({"x": city[2].table("population").group_by("district").agg(n=count())})["x"]["plan"]
    )
    protected = protect({"x": node}, manifest)["x"]
    forged = pa.table({"district": ["Siming"], "n": [3], next(iter(protected.minimums)): [3]})
    with pytest.raises(ReleaseRefused, match="failed the release check"):
        release(protected, forged, {})


def test_a_left_joined_source_absent_from_a_cell_does_not_suppress_it(city) -> None:
    ctx = city[2]
    buyers = (
        ctx.table("housing_transactions").filter(col("price") > 10**12).select("buyer_id").rename(person_id="buyer_id")
    )  # no transaction is that expensive: the right side is empty
    people = ctx.table("population").select("person_id", "district").join(buyers, on="person_id", how="left")
    out = released(city, x=people.group_by("district").agg(n=count()))["x"]
    assert out.table.num_rows == 6 and sum(out.table.column("n").to_pylist()) == 20_000


def test_every_present_source_must_meet_its_threshold(city) -> None:
    ctx = city[2]
    one_buyer = ctx.table("housing_transactions").filter(col("transaction_id") == 1).select("buyer_id", "price")
    people = ctx.table("population").select("person_id", "district")
    joined = people.join(one_buyer.rename(person_id="buyer_id"), on="person_id", how="left")
    out = released(city, x=joined.group_by("district").agg(n=count(), price=mean("price")))["x"]
    # Selecting one buyer is itself refused now (subset rule): nothing of it reaches any cell.
    assert withheld_by(out) and all(r["cell_status"] == "suppressed" for r in out.table.to_pylist())


def test_personal_values_are_clamped_to_their_public_bounds_before_aggregation(city, catalog_dir: Path) -> None:
    """An outlier beyond the declared bounds moves a sum only as far as the bounds allow."""
    import dataclasses

    import numpy as np

    manifest, catalog, _ = city
    population = manifest.dataset("population")
    tight = tuple(dataclasses.replace(c, max=60_000.0) if c.name == "income" else c for c in population.columns)
    strict = dataclasses.replace(
        manifest, datasets={**manifest.datasets, "population": dataclasses.replace(population, columns=tight)}
    )
    ctx = Context(strict, ["population"])
    by_district = ctx.table("population").group_by("district").agg(total=NS["sum"]("income"), n=count())
    plans = plan.share_subtrees({k: plan.from_data(v["plan"]) for k, v in export_outputs({"t": by_district}).items()})
    protected = protect(plans, strict)
    execution = ArrowEngine(catalog.table).execute_all([protected["t"].plan])[0]
    out = release(protected["t"], execution.table, execution.dropped)
    raw = catalog.table("population")
    districts = np.asarray(raw.column("district").to_pylist())
    incomes = np.clip(raw.column("income").to_numpy(), 0, 60_000)
    for row in out.table.to_pylist():
        assert row["total"] == pytest.approx(incomes[districts == row["district"]].sum())
    clamp = [r for r in out.report.rules if r.rule == "clamp"]
    assert clamp and "income of population" in clamp[0].explanation
    assert raw.column("income").to_numpy().max() > 60_000  # the data did exceed the bound


def test_clamp_keeps_nulls_and_integer_types() -> None:
    from saferoom.engine.expressions import evaluate

    table = pa.table({"x": pa.array([1, None, 50, -7], pa.int64()), "y": pa.array([0.5, 2.5, None, 9.0])})
    clamped = evaluate(plan.Call("clamp", (plan.Col("x"), plan.Lit(0.5), plan.Lit(10.0))), table)
    assert clamped.type == pa.int64() and clamped.to_pylist() == [1, None, 10, 1]
    inside = evaluate(plan.Call("clamp", (plan.Col("y"), plan.Lit(0.0), plan.Lit(10.0))), table)
    assert inside.to_pylist() == [0.5, 2.5, None, 9.0]
