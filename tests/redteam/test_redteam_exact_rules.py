"""Red team, exact disclosure rules (issue 12, item 3): the cheap attacks on the exact-rules catalog (differential
privacy off), through the pipeline ``saferoom dev run`` and the server use, with no output checker: the rules
alone must stop them. Each attack either recovers the victim's exact value from what the researcher receives, or
reads one bit of it by comparing what two runs (the condition true, then false) give the researcher; neither may
succeed.

    masked sums        sum(when(person_id == N, income).otherwise(0) + C), a hundred such columns in one output;
                       and the same mask made by arithmetic (no condition), left to dominance after the shift
    computed key       group by when(person_id == N, 1).otherwise(0), beside the total in another output; and a
                       key made by arithmetic (no condition), left to the differencing check
    tracker            filter(district == "Siming" | person_id == N) minus filter(district == "Siming"); and the
                       same with the "or" made by arithmetic inside one comparison
    quantiles          quantile(x, 1.0) / (x, 0.0); a quantile near 1 in cells of thousands; a median, a std and
                       an ols slope over a column singled out by a condition
    cell_status        zero against suppressed on a public grid
    heads              sort().head(10) beside head(11)
    one-bit oracles    the report's count of suppressed cells; the subset rule's own withholding (9 vs 10 kept)
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.errors import ReleaseRefused
from saferoom.jobs.pipeline import Isolation, Pipeline
from saferoom.packages import load_package, validate_params

View = dict[str, tuple[pa.Table | None, dict[str, Any], dict[str, Any]]]  # output -> (table, report, check)


@pytest.fixture(scope="module")
def people(catalog_dir: Path) -> pa.Table:
    with Catalog.open(catalog_dir) as catalog:
        return catalog.table("population").combine_chunks()


@pytest.fixture(scope="module")
def victim(people: pa.Table) -> dict[str, Any]:
    """Someone outside Siming with an income in the middle of the distribution."""
    rows = people.filter(pc.not_equal(people["district"], "Siming")).to_pylist()
    incomes = sorted(r["income"] for r in rows)
    middle = incomes[len(incomes) // 2]
    return next(r for r in rows if r["income"] == middle)


@pytest.fixture(scope="module")
def pipeline(catalog_dir: Path) -> Iterator[Pipeline]:
    config = ServerConfig.load(env={})
    isolation = Isolation(config.seccomp, config.landlock, config.network_namespace)
    manifest = Manifest.load(catalog_dir)
    pipe = Pipeline(catalog_dir, manifest, config.sandbox_limits, config.engine_limits, isolation)
    yield pipe
    pipe.close()


def _package(root: Path, body: str) -> Path:
    directory = root / f"attack{len(list(root.iterdir()))}"
    directory.mkdir()
    (directory / "saferoom.toml").write_text(
        textwrap.dedent(
            """\
            name = "attack"
            version = "1.0.0"
            entrypoint = "main.py:run"
            datasets = ["population", "housing_transactions"]
            [parameters]
            victim = { type = "int", default = 1 }
            t = { type = "float", default = 0.0 }
            a = { type = "int", default = 0 }
            """
        )
    )
    source = "def run(ctx, victim=1, t=0.0, a=0):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
    (directory / "main.py").write_text(source)
    return directory


def run(pipeline: Pipeline, root: Path, body: str, **params: Any) -> View:
    """What the researcher receives (tables and reports) and what the checker would see, per output."""
    package = load_package(_package(root, body))
    outcome = pipeline.run(package, validate_params(package, params))
    return {o.name: (o.table, o.report, getattr(o, "check", {})) for o in outcome.outputs}


def researcher(view: View) -> str:
    """Everything the researcher receives, as one comparable text."""
    parts = {
        name: (table.to_pylist() if table is not None else None, report) for name, (table, report, _) in view.items()
    }
    return json.dumps(parts, sort_keys=True, default=str)


def rows(view: View, name: str) -> list[dict[str, Any]]:
    table = view[name][0]
    assert table is not None
    return [r for r in table.to_pylist() if r.get("cell_status", "released") == "released"]


def one(view: View, name: str, column: str) -> float | None:
    """The value of ``column`` in an output's single released row, or None if it released nothing."""
    shown = rows(view, name)
    return None if not shown else shown[0][column]


def close(a: float | None, b: float) -> bool:
    """Whether ``a`` gives ``b`` away (to within 1%)."""
    return a is not None and math.isfinite(a) and abs(a - b) <= 0.01 * abs(b) + 0.01


def withheld(view: View, name: str) -> list[str]:
    """Why the checker's view says an output was withheld (empty: it was not)."""
    return [w["rule"] for w in view[name][2].get("withheld", [])]


# --------------------------------------------------------------------------- masked aggregates


@pytest.mark.parametrize("columns", [1, 100])
def test_masked_sums_with_a_constant_shift_recover_nobody(
    pipeline: Pipeline, tmp_path: Path, victim: dict, columns: int
) -> None:
    """One masked column is withheld by the subset rule on its condition (it keeps one person); a hundred are
    refused before any work (too many sets of people to compare for differencing): neither gives anything."""
    body = f"""
    masked = {{
        f"s{{i}}": sum(when(col("person_id") == victim + i, col("income")).otherwise(0.0) + 1000000.0)
        for i in range({columns})
    }}
    return {{"x": ctx.table("population").agg(n=count(), **masked)}}
    """
    if columns > 1:
        with pytest.raises(ReleaseRefused, match="sets of people"):
            run(pipeline, tmp_path, body, victim=victim["person_id"])
        return
    view = run(pipeline, tmp_path, body, victim=victim["person_id"])
    n, s = one(view, "x", "n"), one(view, "x", "s0")
    recovered = None if n is None or s is None else s - n * 1_000_000.0
    assert not close(recovered, victim["income"]), "the masked sum gave the victim's income away"
    assert rows(view, "x") == [] and "subset" in withheld(view, "x")  # the condition keeps one person


def test_a_mask_made_by_arithmetic_is_dominated_once_the_shift_is_taken_off(
    pipeline: Pipeline, tmp_path: Path, victim: dict
) -> None:
    """No condition at all: each person contributes 1e6 plus their income divided by 1 + 1e9 |id - N|, so the sum
    is n * 1e6 + the victim's income (+ < 0.01). As they stand the contributions pass (n, k) and p%; beyond the
    smallest one, the victim holds all of it."""
    body = """
    weight = 1.0 / (1.0 + (col("person_id") - victim).abs() * 1000000000.0)
    return {"x": ctx.table("population").agg(n=count(), s=sum(col("income") * weight + 1000000.0))}
    """
    view = run(pipeline, tmp_path, body, victim=victim["person_id"])
    n, s = one(view, "x", "n"), one(view, "x", "s")
    recovered = None if n is None or s is None else s - n * 1_000_000.0
    assert not close(recovered, victim["income"])
    assert rows(view, "x") == []
    assert any(f["flag"] == "dominance" for f in view["x"][2]["flags"])  # the checker sees why


# --------------------------------------------------------------------------- computed keys


def test_a_computed_key_beside_the_total_recovers_nobody(pipeline: Pipeline, tmp_path: Path, victim: dict) -> None:
    body = """
    people = ctx.table("population")
    keyed = people.with_columns(k=when(col("person_id") == victim, 1).otherwise(0))
    return {"cells": keyed.group_by("k").agg(s=sum("income")), "total": people.agg(s=sum("income"))}
    """
    view = run(pipeline, tmp_path, body, victim=victim["person_id"])
    big = [r["s"] for r in rows(view, "cells") if r["k"] == 0]
    total = one(view, "total", "s")
    recovered = None if not big or total is None else total - big[0]
    assert not close(recovered, victim["income"])
    assert "subset" in withheld(view, "cells")


def test_a_key_made_by_arithmetic_is_caught_by_the_differencing_check(
    pipeline: Pipeline, tmp_path: Path, victim: dict
) -> None:
    """k = clip(|id - N|, 0, 1): no condition anywhere; the victim's cell (one person) is suppressed, the other
    cell is everyone but the victim, and the total is everyone."""
    body = """
    people = ctx.table("population")
    keyed = people.with_columns(k=(col("person_id") - victim).abs().clip(0, 1))
    return {"cells": keyed.group_by("k").agg(s=sum("income")), "total": people.agg(s=sum("income"))}
    """
    view = run(pipeline, tmp_path, body, victim=victim["person_id"])
    big = [r["s"] for r in rows(view, "cells") if r["k"] == 1]
    total = one(view, "total", "s")
    recovered = None if not big or total is None else total - big[0]
    assert not close(recovered, victim["income"])
    assert "differencing" in withheld(view, "cells") and total is not None  # the public set, everyone, stays
    flags = [f for f in view["cells"][2]["flags"] if f["flag"] == "differences_between_outputs"]
    assert flags and flags[0]["pairs"][0]["differ_by"] == 1


def test_a_key_made_by_arithmetic_over_several_rows_per_buyer_is_caught_too(
    pipeline: Pipeline, tmp_path: Path, catalog_dir: Path
) -> None:
    """The same on housing transactions, where a buyer has several rows: the buyer with the most purchases."""
    with Catalog.open(catalog_dir) as catalog:
        sales = catalog.table("housing_transactions").to_pylist()
    counts: dict[int, int] = {}
    for r in sales:
        counts[r["buyer_id"]] = counts.get(r["buyer_id"], 0) + 1
    buyer = max(counts, key=lambda b: (counts[b], b))
    spent = sum(r["price"] for r in sales if r["buyer_id"] == buyer)
    assert counts[buyer] >= 2
    body = """
    sales = ctx.table("housing_transactions")
    keyed = sales.with_columns(k=(col("buyer_id") - victim).abs().clip(0, 1))
    return {"cells": keyed.group_by("k").agg(s=sum("price")), "total": sales.agg(s=sum("price"))}
    """
    view = run(pipeline, tmp_path, body, victim=buyer)
    big = [r["s"] for r in rows(view, "cells") if r["k"] == 1]
    total = one(view, "total", "s")
    recovered = None if not big or total is None else total - big[0]
    assert not close(recovered, spent)
    assert "differencing" in withheld(view, "cells")


# --------------------------------------------------------------------------- trackers


TRACKERS = {
    "or": 'p.filter((col("district") == "Siming") | (col("person_id") == victim))',
    "arithmetic": (
        'p.filter((col("district") == "Siming").cast("int") + (1 - (col("person_id") - victim).abs().clip(0, 1)) > 0.5)'
    ),
}


@pytest.mark.parametrize("how", sorted(TRACKERS))
def test_a_tracker_recovers_nobody(pipeline: Pipeline, tmp_path: Path, victim: dict, how: str) -> None:
    body = f"""
    p = ctx.table("population")
    tracked = {TRACKERS[how]}
    return {{"a": tracked.agg(s=sum("income")), "b": p.filter(col("district") == "Siming").agg(s=sum("income"))}}
    """
    view = run(pipeline, tmp_path, body, victim=victim["person_id"])
    a, b = one(view, "a", "s"), one(view, "b", "s")
    recovered = None if a is None or b is None else a - b
    assert not close(recovered, victim["income"])
    assert withheld(view, "a") or withheld(view, "b")


# --------------------------------------------------------------------------- quantiles, std, models


@pytest.mark.parametrize("q", [0.0, 1.0])
def test_the_extreme_quantiles_are_refused_like_min_and_max(pipeline: Pipeline, tmp_path: Path, q: float) -> None:
    body = f'return {{"x": ctx.table("population").group_by("district").agg(q=quantile("income", {q}))}}'
    with pytest.raises(ReleaseRefused, match="one person's value"):
        run(pipeline, tmp_path, body)


def test_a_quantile_needs_enough_people_on_each_side(pipeline: Pipeline, tmp_path: Path, people: pa.Table) -> None:
    """quantile(income, 0.9999) in a district of thousands is within a handful of its richest: suppressed; the
    median is released."""
    body = 'return {"x": ctx.table("population").group_by("district").agg(q=quantile("income", 0.9999), m=median("income"))}'
    view = run(pipeline, tmp_path, body)
    by_district = {d: people.filter(pc.equal(people["district"], d))["income"].to_pylist() for d in ("Siming",)}
    shown = rows(view, "x")
    for row in shown:
        incomes = (
            by_district.get(row["district"])
            or people.filter(pc.equal(people["district"], row["district"]))["income"].to_pylist()
        )
        for column in ("q", "m"):
            value = row[column]
            assert sum(x >= value for x in incomes) >= 10 and sum(x <= value for x in incomes) >= 10, (row, column)
    assert shown == []  # every district's 0.9999 quantile has fewer than 10 above it: the whole cell goes
    assert any(f["flag"] == "quantile" for f in view["x"][2]["flags"])
    assert any(f["flag"] == "extreme_quantile" for f in view["x"][2]["flags"])
    medians = run(
        pipeline, tmp_path, 'return {"x": ctx.table("population").group_by("district").agg(m=median("income"))}'
    )
    assert len(rows(medians, "x")) == 6  # an ordinary median passes


SINGLED_OUT = {
    "median": (
        'ctx.table("population").agg(v=median(when(col("person_id") == victim, col("income")).otherwise(None)))',
        lambda v: v["v"],
    ),
    "std": (
        'ctx.table("population").agg(n=count(), v=std(when(col("person_id") == victim, col("income")).otherwise(0.0)))',
        lambda v: v["v"] * math.sqrt(v["n"]),
    ),
}


@pytest.mark.parametrize("what", sorted(SINGLED_OUT))
def test_a_statistic_of_a_singled_out_column_recovers_nobody(
    pipeline: Pipeline, tmp_path: Path, victim: dict, what: str
) -> None:
    expression, recover = SINGLED_OUT[what]
    view = run(pipeline, tmp_path, f'return {{"x": {expression}}}', victim=victim["person_id"])
    shown = rows(view, "x")
    recovered = recover(shown[0]) if shown and shown[0]["v"] is not None else None
    assert not close(recovered, victim["income"])
    assert "subset" in withheld(view, "x")


def test_an_ols_slope_on_a_singled_out_flag_recovers_nobody(pipeline: Pipeline, tmp_path: Path, victim: dict) -> None:
    body = """
    people = ctx.table("population").with_columns(flag=when(col("person_id") == victim, 1.0).otherwise(0.0))
    return {"m": people.ols("income", ["flag"])}
    """
    view = run(pipeline, tmp_path, body, victim=victim["person_id"])
    estimates = {r["term"]: r["estimate"] for r in rows(view, "m")}
    recovered = estimates["intercept"] + estimates["flag"] if estimates else None
    assert not close(recovered, victim["income"])
    assert withheld(view, "m")


# --------------------------------------------------------------------------- cell_status


def test_zero_and_suppressed_cells_read_the_same(pipeline: Pipeline, tmp_path: Path, people: pa.Table) -> None:
    """On a public grid (district x education) of the very old, an empty cell and a cell of a few people both read
    suppressed: otherwise an empty cell beside a one-person cell gives that person's district and education."""
    body = 'return {"x": ctx.table("population").filter(col("age") >= 95).group_by("district", "education").agg(n=count())}'
    view = run(pipeline, tmp_path, body)
    table, report, check = view["x"]
    assert table is not None
    old = people.filter(pc.greater_equal(people["age"], 95)).to_pylist()
    counts: dict[tuple[str, str], int] = {}
    for r in old:
        counts[(r["district"], r["education"])] = counts.get((r["district"], r["education"]), 0) + 1
    statuses = {(r["district"], r["education"]): r["cell_status"] for r in table.to_pylist()}
    assert len(statuses) == 36
    small = [c for c, s in statuses.items() if 0 < counts.get(c, 0) < 10]
    empty = [c for c in statuses if counts.get(c, 0) == 0]
    assert small and empty, "the data must have both kinds for this test to mean anything"
    assert {statuses[c] for c in small + empty} == {"suppressed"}
    assert check["cells"]["zero"] == len(empty)  # the checker tells them apart
    assert "zero" not in json.dumps(report)


# --------------------------------------------------------------------------- heads


def test_head_10_beside_head_11_does_not_give_the_11th(pipeline: Pipeline, tmp_path: Path, people: pa.Table) -> None:
    body = """
    rich = ctx.table("population").filter(col("district") == "Siming").sort("income", descending=True)
    return {"top10": rich.head(10).agg(s=sum("income")), "top11": rich.head(11).agg(s=sum("income"))}
    """
    view = run(pipeline, tmp_path, body)
    siming = sorted(people.filter(pc.equal(people["district"], "Siming"))["income"].to_pylist(), reverse=True)
    a, b = one(view, "top10", "s"), one(view, "top11", "s")
    recovered = None if a is None or b is None else b - a
    assert not close(recovered, siming[10])
    assert withheld(view, "top10") or withheld(view, "top11") or a is None or b is None


# --------------------------------------------------------------------------- one-bit oracles


def test_the_count_of_suppressed_cells_is_no_oracle(pipeline: Pipeline, tmp_path: Path, people: pa.Table) -> None:
    """filter(income > t) by district, age and sex, with t just below and just above the income of the richest
    person of a small cell: the released cells are the same, only that person's cell goes from one person to
    none. The researcher's view (tables and reports) must be the same both times."""
    data = people.to_pylist()
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in data:
        cells.setdefault((r["district"], r["age"], r["sex"]), []).append(r)
    incomes = sorted({r["income"] for r in data})
    small = [c for c in cells.values() if 2 <= len(c) <= 9]
    target = next(
        max(c, key=lambda r: r["income"])
        for c in small
        if 1000 < incomes.index(max(r["income"] for r in c)) < len(incomes) - 1000
    )
    i = incomes.index(target["income"])
    below, above = (incomes[i - 1] + incomes[i]) / 2, (incomes[i] + incomes[i + 1]) / 2
    body = 'return {"x": ctx.table("population").filter(col("income") > t).group_by("district", "age", "sex").agg(n=count())}'
    views = [run(pipeline, tmp_path, body, t=t) for t in (below, above)]
    assert researcher(views[0]) == researcher(views[1]), "the researcher's view tells whether the income is above t"
    checks = [v["x"][2]["report"]["suppressed_cells"] for v in views]
    assert checks[0] == checks[1] + 1  # the checker sees the count (so the test is not vacuous)


def test_the_subset_rules_own_withholding_is_no_oracle(
    pipeline: Pipeline, tmp_path: Path, people: pa.Table, victim: dict
) -> None:
    """A public group of exactly nine people, or the victim if their income is above t: ten kept (released) or
    nine (withheld) would be the bit."""
    groups: dict[tuple[Any, ...], int] = {}
    for r in people.to_pylist():
        key = (r["district"], r["age"], r["sex"])
        groups[key] = groups.get(key, 0) + 1
    district, age, sex = next(k for k, n in sorted(groups.items()) if n == 9 and k[0] != victim["district"])
    body = f"""
    p = ctx.table("population")
    group = (col("district") == "{district}") & (col("age") == {age}) & (col("sex") == "{sex}")
    return {{"x": p.filter(group | ((col("person_id") == victim) & (col("income") > t))).agg(n=count())}}
    """
    income = victim["income"]
    views = [run(pipeline, tmp_path, body, victim=victim["person_id"], t=t) for t in (income - 1, income + 1)]
    assert researcher(views[0]) == researcher(views[1]), "whether the output is withheld tells the bit"
    assert all(rows(v, "x") == [] for v in views)


def test_an_ordinary_job_still_releases(pipeline: Pipeline, tmp_path: Path) -> None:
    """The rules do not withhold what is fine: a table, its margin and a filtered table of one job."""
    body = """
    p = ctx.table("population")
    adults = p.filter(col("age") >= 18)
    return {
        "table": adults.group_by("district", "sex").agg(n=count(), income=mean("income")),
        "margin": adults.group_by("district").agg(n=count()),
        "rich": p.filter(col("income") > 100000.0).group_by("district").agg(n=count()),
        "share": p.agg(n=count(), elders=sum(when(col("age") >= 65, 1).otherwise(0))),
    }
    """
    view = run(pipeline, tmp_path, body)
    assert len(rows(view, "table")) == 12 and len(rows(view, "margin")) == 6
    assert len(rows(view, "rich")) == 6 and rows(view, "share")[0]["elders"] > 10
    assert not any(withheld(view, name) for name in view)
    for _, report, check in view.values():  # the researcher's report has no count of suppressed cells
        assert report["suppressed_cells"] == 0 and all(r["cells_suppressed"] == 0 for r in report["rules"])
        json.dumps(check)  # the checker's view is JSON as it stands
