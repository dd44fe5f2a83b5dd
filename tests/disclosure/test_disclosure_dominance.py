"""Dominance: the (n,k) and p% rules on sums and means of magnitudes, with the real rewrite and Arrow engine on
small hand-made populations where the answer is known."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog.manifest import Manifest, Policy
from saferoom.disclosure import protect, release
from saferoom.engine import ArrowEngine, plan
from tests.support import checked

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, count, sum_, mean = NS["col"], NS["count"], NS["sum"], NS["mean"]


def people(groups: dict[str | None, list[float]]) -> pa.Table:
    """A population table: one row per person, ``groups`` maps a district to its people's incomes."""
    rows = [(d, income) for d, incomes in groups.items() for income in incomes]
    n = len(rows)
    return pa.table(
        {
            "person_id": pa.array(range(1, n + 1), pa.int64()),
            "household_id": pa.array(range(1, n + 1), pa.int64()),
            "district": pa.array([d for d, _ in rows], pa.string()).dictionary_encode(),
            "age": pa.array([40] * n, pa.int64()),
            "sex": pa.array(["female"] * n).dictionary_encode(),
            "household_size": pa.array([1] * n, pa.int64()),
            "income": pa.array([i for _, i in rows], pa.float64()),
            "lat": pa.array([24.5] * n),
            "lon": pa.array([118.1] * n),
            "education": pa.array(["bachelor"] * n).dictionary_encode(),
        }
    )


@pytest.fixture(scope="module")
def manifest(catalog_dir: Path) -> Manifest:
    return Manifest.load(catalog_dir)


def run(manifest: Manifest, table: pa.Table, build, policy: Policy | None = None):
    info = manifest.dataset("population")
    if policy is not None:
        info = dataclasses.replace(info, policy=policy)
    schema_names = [c.name for c in info.columns]
    table = table.select(schema_names)
    m = dataclasses.replace(manifest, datasets={"population": info})
    ctx = Context(m, ["population"])
    exported = export_outputs({"out": build(ctx.table("population"))})
    protected = protect({"out": plan.from_data(exported["out"]["plan"])}, m)["out"]
    execution = ArrowEngine({"population": table}.__getitem__).execute_all([protected.plan])[0]
    return release(protected, execution.table, execution.dropped)


def rule(out, name: str):
    """The rule as the output checker sees it (the researcher's report has no counts)."""
    return next(r for r in checked(out).rules if r.rule == name)


def test_one_household_with_95_percent_of_a_cells_income_is_suppressed(manifest: Manifest) -> None:
    table = people({"Siming": [950_000.0] + [5_000.0] * 10, "Huli": [50_000.0] * 12})
    out = run(manifest, table, lambda t: t.group_by("district").agg(n=count(), income=sum_("income")))
    assert out.table.column("district").to_pylist() == ["Huli"]
    assert rule(out, "dominance").cells_suppressed == 1
    assert "(n,k) rule" in rule(out, "dominance").explanation


def test_means_are_checked_too_and_renaming_the_amount_does_not_escape(manifest: Manifest) -> None:
    table = people({"Siming": [950_000.0] + [5_000.0] * 10, "Huli": [50_000.0] * 12})

    def disguised(t):
        return t.with_columns(money=col("income") * 1.0 + 0.0).group_by("district").agg(avg=mean("money"))

    out = run(manifest, table, disguised)
    assert out.table.column("district").to_pylist() == ["Huli"]


def test_the_p_percent_rule_on_its_own(manifest: Manifest) -> None:
    # Two large contributors close together and little else: the runner-up could estimate the largest.
    table = people({"Siming": [100_000.0, 95_000.0] + [100.0] * 10, "Huli": [50_000.0] * 12})
    only_p = Policy(min_contributors=10, dominance_n=2, dominance_k=1.0, p_percent=0.1)
    out = run(manifest, table, lambda t: t.group_by("district").agg(total=sum_("income")), only_p)
    assert out.table.column("district").to_pylist() == ["Huli"]
    assert rule(out, "dominance").cells_suppressed == 1


def test_balanced_cells_pass_and_totals_are_exact(manifest: Manifest) -> None:
    table = people({"Siming": [10_000.0 + i for i in range(15)]})
    out = run(manifest, table, lambda t: t.agg(total=sum_("income"), n=count()))  # no keys at all
    assert out.table.to_pylist() == [{"total": sum(10_000.0 + i for i in range(15)), "n": 15}]
    assert rule(out, "dominance").cells_suppressed == 0


def test_ties_at_the_top_count_twice(manifest: Manifest) -> None:
    # Two people with the same largest income hold 2/3 of the cell: under k = 60% that cell is dominated.
    table = people({"Siming": [100_000.0, 100_000.0] + [10_000.0] * 10})
    strict = Policy(min_contributors=10, dominance_n=2, dominance_k=0.6, p_percent=0.0)
    out = run(manifest, table, lambda t: t.group_by("district").agg(total=sum_("income")), strict)
    assert out.table.num_rows == 0


def test_a_cell_with_a_null_key_is_checked_like_any_other(manifest: Manifest) -> None:
    table = people({None: [20_000.0] * 12, "Huli": [20_000.0] * 12, "Jimei": [900_000.0] + [1_000.0] * 11})
    out = run(manifest, table, lambda t: t.group_by("district").agg(total=sum_("income")))
    assert set(out.table.column("district").to_pylist()) == {None, "Huli"}


def test_the_bound_is_conservative_one_contributor_over_k_over_2_is_enough(manifest: Manifest) -> None:
    # One person with 50% and many small ones: the exact rule (top two <= 90%) would release this cell;
    # the bound (runner-up <= largest) suppresses it. Never the other way round.
    table = people({"Siming": [100_000.0] + [5_000.0] * 20})
    out = run(manifest, table, lambda t: t.group_by("district").agg(total=sum_("income")))
    assert out.table.num_rows == 0


def test_counts_alone_face_no_dominance_rule(manifest: Manifest) -> None:
    table = people({"Siming": [950_000.0] + [5_000.0] * 10})
    out = run(manifest, table, lambda t: t.group_by("district").agg(n=count()))
    assert out.table.num_rows == 1
    assert all(r.rule != "dominance" for r in out.report.rules)


def sales(rows: list[tuple[str | None, int, float]]) -> pa.Table:
    """housing_transactions rows: (district, buyer, price); a buyer may buy several times."""
    import datetime

    n = len(rows)
    return pa.table(
        {
            "transaction_id": pa.array(range(1, n + 1), pa.int64()),
            "buyer_id": pa.array([b for _, b, _ in rows], pa.int64()),
            "district": pa.array([d for d, _, _ in rows], pa.string()).dictionary_encode(),
            "date": pa.array([datetime.date(2024, 1, 1)] * n, pa.date32()),
            "price": pa.array([p for _, _, p in rows], pa.float64()),
            "area_m2": pa.array([90.0] * n),
            "price_per_m2": pa.array([p / 90.0 for _, _, p in rows]),
            "lat": pa.array([24.5] * n),
            "lon": pa.array([118.1] * n),
        }
    )


def run_sales(manifest: Manifest, table: pa.Table, build):
    info = manifest.dataset("housing_transactions")
    m = dataclasses.replace(manifest, datasets={"housing_transactions": info})
    ctx = Context(m, ["housing_transactions"])
    exported = export_outputs({"out": build(ctx.table("housing_transactions"))})
    protected = protect({"out": plan.from_data(exported["out"]["plan"])}, m)["out"]
    execution = ArrowEngine({"housing_transactions": table}.__getitem__).execute_all([protected.plan])[0]
    return release(protected, execution.table, execution.dropped)


def test_a_buyer_dominating_through_many_purchases_is_caught(manifest: Manifest) -> None:
    # Each of buyer 1's purchases is ordinary; together (the unit's total) they dominate Siming.
    rows: list[tuple[str | None, int, float]] = []
    rows += [("Siming", 1, 3_000_000.0)] * 30 + [("Siming", b, 1_000_000.0) for b in range(2, 14)]
    rows += [("Huli", b, 1_000_000.0) for b in range(20, 35)] + [(None, b, 1_000_000.0) for b in range(40, 55)]
    out = run_sales(manifest, sales(rows), lambda t: t.group_by("district").agg(total=sum_("price"), n=count()))
    assert out.table.column("district").to_pylist() == ["Huli"]  # Siming dominated; the null key fails closed
    assert rule(out, "dominance").cells_suppressed == 2
