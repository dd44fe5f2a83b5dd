"""The budget ledger in SQLite: exact integer units, rounding that can only refuse, all-or-nothing charges."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.errors import BudgetExhausted, InvalidRequest
from saferoom.store import BudgetLedger, Cost, Database, JobRecord, JobStore
from saferoom.store.budgets import delta_units, epsilon_units, format_amount


def job(i: int, owner: str = "alice", request_id: str | None = None) -> JobRecord:
    now = time.time()
    return JobRecord(
        f"{i:032x}", owner, "h" * 64, "pkg", "1.0.0", "{}", "[]", "queued", None, None, now, None, None, now, request_id
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "state.db")
    yield database
    database.close()


def test_units_are_exact_and_round_against_the_researcher() -> None:
    assert epsilon_units(0.1, round_up=True) == 100_000  # the decimal 0.1, not the float's binary expansion
    assert epsilon_units(2.007, round_up=True) == 2_007_000  # 2.007 * 1e6 is 2007000.0000000002 in floats
    assert delta_units(1e-7, round_up=True) == 100_000
    assert epsilon_units(1e-9, round_up=True) == 1  # a tiny cost is never free
    assert epsilon_units(1e-9, round_up=False) == 0  # and a tiny budget buys nothing
    assert epsilon_units(0.2500001, round_up=True) == 250_001
    assert epsilon_units(0.2500001, round_up=False) == 250_000
    assert delta_units(1e-3, round_up=False) == 10**9
    assert [format_amount(x) for x in (0.25, 1e-7, 999.999999, 1.0)] == ["0.25", "1e-07", "999.999999", "1"]
    for bad in (float("nan"), float("inf"), -1.0, True):
        with pytest.raises(InvalidRequest):
            epsilon_units(bad, round_up=True)


def test_ten_charges_of_a_tenth_spend_a_budget_of_one_exactly(db: Database) -> None:
    ledger, jobs = BudgetLedger(db), JobStore(db)
    ledger.set_budget("alice", "population", 1.0, 1e-6, "olga")
    for i in range(10):
        jobs.insert_charged_job(job(i), [Cost.of("population", 0.1, 1e-7)])
    budget = ledger.budget("alice", "population")
    assert (budget.epsilon_spent, budget.epsilon_remaining, budget.delta_remaining, budget.jobs_charged) == (
        10**6, 0, 0, 10
    )  # fmt: skip
    with pytest.raises(BudgetExhausted):
        jobs.insert_charged_job(job(10), [Cost.of("population", 1e-6, 0)])
    # Floats would have refused this mix: 0.1 + 0.2 > 0.3.
    ledger.set_budget("bob", "population", 0.3, 1e-6, "olga")
    jobs.insert_charged_job(job(20, "bob"), [Cost.of("population", 0.1, 1e-7)])
    jobs.insert_charged_job(job(21, "bob"), [Cost.of("population", 0.2, 1e-7)])
    assert ledger.budget("bob", "population").epsilon_remaining == 0


def test_a_run_is_charged_on_every_dataset_or_on_none_and_its_job_goes_with_it(db: Database) -> None:
    ledger, jobs = BudgetLedger(db), JobStore(db)
    ledger.set_budget("alice", "population", 1.0, 1e-6, "olga")
    ledger.set_budget("alice", "housing_transactions", 0.1, 1e-6, "olga")
    costs = [Cost.of("population", 0.5, 1e-7), Cost.of("housing_transactions", 0.5, 1e-7)]
    with pytest.raises(BudgetExhausted, match=r"housing_transactions needs epsilon 0\.5"):
        jobs.insert_charged_job(job(1), costs)
    assert ledger.budget("alice", "population").epsilon_spent == 0
    assert jobs.list_jobs() == []  # the job was not inserted either
    ledger.set_budget("alice", "housing_transactions", 0.5, 1e-6, "olga")
    stored, charged = jobs.insert_charged_job(job(1), costs)
    assert [(c.dataset, after.epsilon_remaining) for c, after in charged] == [
        ("population", 500_000), ("housing_transactions", 0)
    ]  # fmt: skip
    assert [c.dataset for c in ledger.charges(stored.id)] == ["housing_transactions", "population"]


def test_a_retried_request_is_not_charged_again(db: Database) -> None:
    ledger, jobs = BudgetLedger(db), JobStore(db)
    ledger.set_budget("alice", "population", 0.25, 1e-6, "olga")
    first, charged = jobs.insert_charged_job(job(1, request_id="r"), [Cost.of("population", 0.25, 1e-7)])
    again, charged_again = jobs.insert_charged_job(job(2, request_id="r"), [Cost.of("population", 0.25, 1e-7)])
    assert again.id == first.id and len(charged) == 1 and charged_again == []
    assert ledger.budget("alice", "population").jobs_charged == 1


def test_no_budget_is_a_zero_budget_and_a_total_below_the_spend_leaves_nothing(db: Database) -> None:
    ledger, jobs = BudgetLedger(db), JobStore(db)
    with pytest.raises(BudgetExhausted, match="no budget was set"):
        jobs.insert_charged_job(job(1), [Cost.of("population", 0.1, 1e-7)])
    ledger.set_budget("alice", "population", 1.0, 1e-6, "olga")
    jobs.insert_charged_job(job(2), [Cost.of("population", 0.5, 1e-7)])
    lowered = ledger.set_budget("alice", "population", 0.2, 1e-6, "oscar")
    assert (lowered.epsilon_total, lowered.epsilon_spent, lowered.epsilon_remaining) == (200_000, 500_000, 0)
    assert lowered.set_by == "oscar"
    assert [b.dataset for b in ledger.list_budgets("alice")] == ["population"]


def test_a_budget_change_that_cannot_be_recorded_does_not_happen(db: Database) -> None:
    ledger = BudgetLedger(db)
    ledger.set_budget("alice", "population", 1.0, 1e-6, "olga")

    def broken(_: object) -> None:
        raise OSError("the audit log is full")

    with pytest.raises(OSError):
        ledger.set_budget("alice", "population", 50.0, 1e-6, "olga", on_set=broken)
    assert ledger.budget("alice", "population").epsilon_total == 10**6


@pytest.mark.parametrize(("epsilon", "delta"), [(-0.1, 0), (1000.1, 0), (1, 2e-3), (1, -1e-9), (float("nan"), 0),
                                                (1, float("inf"))])  # fmt: skip
def test_amounts_outside_the_bounds_are_refused(db: Database, epsilon: float, delta: float) -> None:
    with pytest.raises(InvalidRequest):
        BudgetLedger(db).set_budget("alice", "population", epsilon, delta, "olga")
    assert BudgetLedger(db).list_budgets() == []
