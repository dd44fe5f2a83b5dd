"""The subset rule (as in DataSHIELD): a filter or head over personal rows must keep, and leave out, either
nobody or at least the policy's minimum of people; otherwise everything it feeds is withheld. It blocks
differencing attacks such as "everyone in Siming" minus "everyone in Siming except person 42"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saferoom.api import Context, namespace
from saferoom.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from saferoom.errors import ReleaseRefused
from tests.support import release_outputs, withheld_by

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, count, sum_ = NS["col"], NS["count"], NS["sum"]


@pytest.fixture(scope="module")
def city(catalog_dir: Path):
    manifest = Manifest.load(catalog_dir)
    catalog = Catalog.open(catalog_dir)
    yield manifest, catalog, Context(manifest, ["population", "housing_transactions", "bus_stops"])
    catalog.close()


def released(city, **tables):
    manifest, catalog, _ = city
    return release_outputs(manifest, catalog.table, tables)


def withheld(out) -> bool:
    """Withheld by the subset rule, as the checker sees it; the researcher's report does not say (one bit)."""
    return withheld_by(out, "subset") and not any("withheld:" in r.explanation for r in out.report.rules)


def someone_in_siming(city) -> int:
    table = city[1].table("population")
    districts = table.column("district").to_pylist()
    return int(table.column("person_id")[districts.index("Siming")].as_py())


def test_everyone_but_one_is_withheld_in_the_same_job(city) -> None:
    people = city[2].table("population").filter(col("district") == "Siming")
    target = someone_in_siming(city)
    outs = released(
        city,
        all=people.agg(n=count(), income=sum_("income")),
        all_but_one=people.filter(col("person_id") != target).agg(n=count(), income=sum_("income")),
    )
    assert outs["all"].table.num_rows == 1 and not withheld(outs["all"])
    assert withheld(outs["all_but_one"])  # the difference would have been that person's income


def test_everyone_but_one_is_withheld_in_a_later_job_too(city) -> None:
    people = city[2].table("population").filter(col("district") == "Siming")
    out = released(city, x=people.filter(col("person_id") != someone_in_siming(city)).agg(income=sum_("income")))["x"]
    assert withheld(out)


def test_a_handful_of_people_is_withheld_whatever_the_grouping(city) -> None:
    few = city[2].table("population").filter(col("person_id") <= 5)
    out = released(city, x=few.group_by("sex").agg(n=count()))["x"]
    assert withheld(out)
    assert "fewer than 10" in out.check["withheld"][0]["explanation"]


def test_broad_filters_pass_and_the_report_says_the_rule_ran(city) -> None:
    adults = city[2].table("population").filter(col("age") >= 18).group_by("district").agg(n=count())
    out = released(city, x=adults)["x"]
    assert out.table.num_rows == 6
    assert any(r.rule == "subset" and "keeps and leaves out" in r.explanation for r in out.report.rules)
    everyone = city[2].table("population").filter(col("age") >= 0).agg(n=count())
    assert released(city, x=everyone)["x"].table.to_pylist() == [{"n": 20_000}]  # leaves out nobody: fine


def test_heads_over_personal_rows(city) -> None:
    people = city[2].table("population")
    with pytest.raises(ReleaseRefused, match="fewer than 10"):
        released(city, x=people.sort("income").head(5).agg(n=count()))
    out = released(city, x=people.sort("income").head(19_999).agg(income=sum_("income")))["x"]
    assert withheld(out)  # everyone but the top earner


def test_units_with_several_rows_are_counted_as_people(city) -> None:
    sales = city[2].table("housing_transactions")
    # Leaving out one transaction leaves out one buyer: withheld, even though that buyer may have others.
    out = released(city, x=sales.filter(col("transaction_id") != 7).agg(total=sum_("price")))["x"]
    assert withheld(out)


def test_a_join_that_keeps_one_person_acts_as_a_filter_and_is_withheld(city) -> None:
    lit = NS["lit"]
    people = city[2].table("population")
    target = someone_in_siming(city)
    one_key = city[2].table("bus_stops").filter(col("stop_id") == 1).select(person_id=lit(target))
    out = released(city, x=people.join(one_key, on="person_id").agg(n=count(), income=sum_("income")))["x"]
    assert withheld(out)
    assert "a join over population" in out.check["withheld"][0]["explanation"]
    # The left join keeps every person: nothing is filtered, nothing is checked on that side.
    kept_all = people.join(one_key, on="person_id", how="left").agg(n=count())
    assert released(city, x=kept_all)["x"].table.to_pylist() == [{"n": 20_000}]


def test_a_join_with_public_data_that_matches_everyone_passes(city) -> None:
    stops = city[2].table("bus_stops").group_by("district").agg(stops=count())
    out = released(city, x=city[2].table("population").join(stops, on="district").agg(n=count()))["x"]
    assert out.table.to_pylist() == [{"n": 20_000}]
    assert any(r.rule == "subset" for r in out.report.rules)
