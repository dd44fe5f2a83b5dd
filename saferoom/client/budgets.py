"""What a budget buys: each approved package's per-run cost on a dataset, and the runs a budget pays for.

The accounting itself (units, rounding, how many runs a budget admits) is ``saferoom.store.budgets``; this only
gathers what it needs over gRPC: the dataset's per-run delta (its policy), each approved package's per-run
epsilon (its manifest, as downloaded and checked against its hash), and the researcher's budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from saferoom.packages import package_from_files
from saferoom.store.budgets import (
    MAX_DELTA_BUDGET,
    Cost,
    delta_for_runs,
    delta_units,
    delta_value,
    epsilon_units,
    epsilon_value,
    runs_allowed,
)
from saferoom.store.budgets import Budget as Ledger

if TYPE_CHECKING:
    from saferoom.client.client import Budget, Client, PackageSummary

__all__ = ["RunCost", "default_delta", "run_costs"]


@dataclass(frozen=True)
class RunCost:
    """One approved package's run on a dataset: what it spends, and how many more runs a budget pays for."""

    package: str  # name@version
    package_hash: str
    dataset: str
    epsilon: float  # per run (the package's manifest)
    delta: float  # per run (the dataset's policy)
    runs_by_epsilon: int
    runs_by_delta: int
    runs: int
    limited_by: str  # "epsilon" | "delta"


def _ledger(budget: Budget | None, researcher: str, dataset: str) -> Ledger:
    """The client's budget (plain amounts) in the ledger's units; none set yet: nothing spent, nothing allowed."""
    if budget is None:
        return Ledger(researcher, dataset, 0, 0)
    return Ledger(
        researcher,
        dataset,
        epsilon_units(budget.epsilon_total, round_up=False),
        delta_units(budget.delta_total, round_up=False),
        epsilon_units(budget.epsilon_spent, round_up=False),
        delta_units(budget.delta_spent, round_up=False),
    )


def _per_run(client: Client, dataset: str) -> list[tuple[PackageSummary, Cost]]:
    """Each approved package that reads ``dataset``, cheapest first, with what one run of it spends there."""
    dp_delta = client.describe_dataset(dataset).policy.dp_delta
    found = []
    for summary in client.list_packages():
        if summary.status != "approved" or dataset not in summary.datasets:
            continue
        _, files = client.download_package(summary.hash)
        epsilon = package_from_files(files).epsilon.get(dataset)
        if epsilon is not None:
            found.append((summary, Cost.of(dataset, epsilon, dp_delta)))
    return sorted(found, key=lambda item: (item[1].epsilon, item[0].name, item[0].version))


def run_costs(client: Client, budget: Budget) -> list[RunCost]:
    """What each approved package reading ``budget.dataset`` spends per run, and how many more runs ``budget``
    pays for (exactly as the ledger would admit them), cheapest first."""
    ledger = _ledger(budget, budget.researcher, budget.dataset)
    out = []
    for summary, cost in _per_run(client, budget.dataset):
        allowed = runs_allowed(ledger, cost)
        out.append(
            RunCost(
                f"{summary.name}@{summary.version}",
                summary.hash,
                budget.dataset,
                epsilon_value(cost.epsilon),
                delta_value(cost.delta),
                allowed.by_epsilon,
                allowed.by_delta,
                allowed.runs,
                allowed.limited_by,
            )
        )
    return out


def default_delta(client: Client, researcher: str, dataset: str, epsilon: float) -> float:
    """The delta total for ``budget set`` without ``--delta``: what is spent already plus the dataset's per-run
    delta for every run ``epsilon`` pays for of the cheapest approved package, so that epsilon, not delta, is
    what limits; the largest delta a budget may have when no approved package reads the dataset yet."""
    current = client.list_budgets(researcher, dataset)
    spent = _ledger(current[0] if current else None, researcher, dataset)
    ledger = Ledger(
        researcher, dataset, epsilon_units(epsilon, round_up=False), 0, spent.epsilon_spent, spent.delta_spent
    )
    costs = _per_run(client, dataset)
    return delta_for_runs(ledger, costs[0][1]) if costs else MAX_DELTA_BUDGET
