"""Privacy budgets for the server: operators set them, everyone allowed sees what they may, runs are costed.

The ledger itself (units, composition, the atomic charge) is ``saferoom.store.budgets``; this is who may do
what with it, what a run of a package costs, and the audit record of every change. Knows nothing of gRPC.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from saferoom.audit import AuditLog, EventType
from saferoom.audit.log import Entry
from saferoom.errors import DatasetNotFound, FailedPrecondition, InvalidRequest, PermissionDenied
from saferoom.identity import NAME_PATTERN, Identity, Role
from saferoom.packages import Package
from saferoom.store.budgets import Budget, BudgetLedger, Charge, Cost, delta_value, epsilon_value

__all__ = ["BudgetService", "budget_summary"]


def budget_summary(budget: Budget) -> dict[str, float | int]:
    """A budget's totals and what remains, as plain numbers (for the audit log)."""
    return {
        "epsilon_total": epsilon_value(budget.epsilon_total),
        "delta_total": delta_value(budget.delta_total),
        "epsilon_remaining": epsilon_value(budget.epsilon_remaining),
        "delta_remaining": delta_value(budget.delta_remaining),
    }


def _researcher(name: str) -> str:
    # fullmatch: ``$`` would also accept a trailing newline, a second spelling of the same name.
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(f"researcher {name[:80]!r} is not an identity name ({NAME_PATTERN.pattern})")
    return name


class BudgetService:
    """Budgets per (researcher, differentially private dataset): set, listed, and what a run costs."""

    def __init__(
        self, ledger: BudgetLedger, dp_delta: Mapping[str, float], datasets: Collection[str], audit: AuditLog
    ) -> None:
        self._ledger = ledger
        self._dp_delta = dict(dp_delta)  # each differentially private dataset -> the delta one run spends on it
        self._datasets = frozenset(datasets)
        self._audit = audit

    def _dataset(self, name: str, *, private: bool) -> str:
        if name not in self._datasets:
            raise DatasetNotFound(f"no dataset named {name[:80]!r}")
        if private and name not in self._dp_delta:
            raise InvalidRequest(f"{name} is not differentially private: runs on it spend no budget")
        return name

    def set_budget(self, researcher: str, dataset: str, epsilon: float, delta: float, operator: Identity) -> Budget:
        """Set what ``researcher`` may spend on ``dataset`` in all (replacing the earlier totals); recorded."""
        if not operator.has(Role.OPERATOR):
            raise PermissionDenied(f"{operator.name} is not an operator")
        researcher = _researcher(researcher)
        dataset = self._dataset(dataset, private=True)
        if researcher == operator.name:
            raise PermissionDenied("an operator may not set their own privacy budget")

        def records(budget: Budget) -> list[Entry]:  # committed with the change: no change without its record
            objects = {"identity": researcher, "dataset": dataset}
            spent = {
                "epsilon_spent": epsilon_value(budget.epsilon_spent),
                "delta_spent": delta_value(budget.delta_spent),
            }
            summary = {**budget_summary(budget), **spent}
            return [(EventType.BUDGET_SET, operator.name, operator.role_names, objects, summary)]

        change = self._ledger.setter(researcher, dataset, epsilon, delta, operator.name)
        return self._audit.commit(change, records)[0]

    def list_budgets(self, caller: Identity, researcher: str | None = None, dataset: str | None = None) -> list[Budget]:
        """Budgets ``caller`` may see: a researcher only their own (asking for anyone else's is refused);
        operators and auditors every one."""
        if researcher is not None:
            researcher = _researcher(researcher)
        if dataset is not None:
            dataset = self._dataset(dataset, private=False)
        if not (caller.has(Role.OPERATOR) or caller.has(Role.AUDITOR)):
            if researcher not in (None, caller.name):
                raise PermissionDenied("a researcher may see only their own privacy budgets")
            researcher = caller.name
        return self._ledger.list_budgets(researcher, dataset)

    def costs(self, package: Package, datasets: Collection[str]) -> list[Cost]:
        """What one run of ``package`` over ``datasets`` spends on each differentially private one of them."""
        costs = []
        for name in sorted(set(datasets)):
            if name not in self._dp_delta:
                continue
            if name not in package.epsilon:
                raise FailedPrecondition(
                    f"{name} is differentially private and {package.ref} does not declare the epsilon one run "
                    f"spends on it: declare [privacy] epsilon = {{ {name} = ... }} in saferoom.toml and submit "
                    "the package for review again"
                )
            costs.append(Cost.of(name, package.epsilon[name], self._dp_delta[name]))
        return costs

    def charged(self, job_id: str) -> list[Charge]:
        """What a job was charged, per dataset."""
        return self._ledger.charges(job_id)
