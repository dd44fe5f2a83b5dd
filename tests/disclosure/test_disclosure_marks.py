"""Suppressed and empty cells are marked when a table's keys have public domains (the grid of combinations is
public); otherwise they stay out, key included."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from saferoom.api import Context, namespace
from saferoom.catalog import Catalog
from saferoom.catalog.generate import DISTRICT_NAMES
from saferoom.catalog.manifest import Manifest
from tests.support import release_outputs

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, count, mean = NS["col"], NS["count"], NS["mean"]


@pytest.fixture(scope="module")
def city(catalog_dir: Path):
    manifest = Manifest.load(catalog_dir)
    catalog = Catalog.open(catalog_dir)
    yield manifest, catalog, Context(manifest, ["population"])
    catalog.close()


def released(city, **tables):
    return release_outputs(city[0], city[1].table, tables)


def test_a_crosstab_of_categories_lists_every_combination_with_its_status(city) -> None:
    education = city[0].dataset("population").column("education").categories
    old = city[2].table("population").filter(col("age") >= 0).group_by("district", "education")
    out = released(city, t=old.agg(n=count(), income=mean("income")))["t"]
    rows = out.table.to_pylist()
    assert len(rows) == len(DISTRICT_NAMES) * len(education)
    assert [(r["district"], r["education"]) for r in rows][:2] == [
        (DISTRICT_NAMES[0], education[0]),
        (DISTRICT_NAMES[0], education[1]),
    ]  # in the catalog's order of categories
    statuses = Counter(r["cell_status"] for r in rows)
    assert set(statuses) <= {"released", "suppressed"}  # an empty cell is not told from a small one
    assert statuses["released"] + statuses["suppressed"] == out.report.rows
    for r in rows:
        if r["cell_status"] == "released":
            assert r["n"] >= 10
        else:
            assert r["n"] is None and r["income"] is None
    marked = next(rule for rule in out.report.rules if rule.rule == "marked")
    assert "marked suppressed" in marked.explanation and not re.search(r"[0-9]", marked.explanation)
    cells = out.check["cells"]  # the checker tells them apart
    assert cells["released"] == statuses["released"] and cells["suppressed"] + cells["zero"] == statuses["suppressed"]


def test_the_very_old_by_district_and_sex_shows_released_and_suppressed_cells(city) -> None:
    """Empty and small cells both read suppressed: on a public grid, zero against suppressed would tell whether
    anyone has a combination (issue 12)."""
    very_old = city[2].table("population").filter(col("age") >= 99).group_by("district", "sex").agg(n=count())
    out = released(city, t=very_old)["t"]
    people = city[1].table("population").to_pandas()
    counts = people[people.age >= 99].groupby(["district", "sex"], observed=True).size()
    statuses = {(r["district"], r["sex"]): r["cell_status"] for r in out.table.to_pylist()}
    for (district, sex), status in statuses.items():
        n = int(counts.get((district, sex), 0))
        expected = "released" if n >= 10 else "suppressed"
        assert status == expected, (district, sex, n)


def test_computed_keys_are_not_marked_they_may_disclose(city) -> None:
    banded = city[2].table("population").with_columns(band=(col("age") // 10) * 10)
    out = released(city, t=banded.group_by("district", "band").agg(n=count()))["t"]
    assert "cell_status" not in out.table.column_names
    assert all(r.rule != "marked" for r in out.report.rules)
