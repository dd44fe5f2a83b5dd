"""The privacy-budget ledger: how much (epsilon, delta) each researcher may spend on each dataset, and what each
job spent.

Differentially private releases compose: under basic composition, k runs that each spend (epsilon_i, delta_i)
on a dataset spend (sum epsilon_i, sum delta_i) on it together. So a budget is two totals per (researcher,
dataset), set by an operator, and what is spent is the sum of the charges, appended one per job and dataset,
never changed. A run is charged before it starts, whatever its outcome, and only if every dataset it reads has
enough of both left; otherwise nothing is charged.

Amounts are kept as integers in fixed units (``EPSILON_UNITS`` per 1 epsilon, ``DELTA_UNITS`` per 1 delta) so
that sums and comparisons are exact: floats would let ten charges of 0.1 exceed a budget of 1.0, or leave a
sliver that admits an eleventh. Converting, a charge is rounded up and a budget down, so rounding can only ever
refuse a run, never admit one. The decimal value of a float is taken from its shortest representation
(``repr``), so 0.1 is exactly 100,000 millionths.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from saferoom.errors import BudgetExhausted, InvalidRequest
from saferoom.store.database import Database

__all__ = [
    "DELTA_UNITS",
    "EPSILON_UNITS",
    "MAX_DELTA_BUDGET",
    "MAX_EPSILON_BUDGET",
    "Budget",
    "BudgetLedger",
    "Charge",
    "Cost",
    "Publication",
    "PublicationBudget",
    "PublicationLedger",
    "RunsAllowed",
    "charge_budgets",
    "check_publication",
    "delta_for_runs",
    "delta_units",
    "delta_value",
    "epsilon_units",
    "epsilon_value",
    "format_amount",
    "read_publication_budget",
    "runs_allowed",
]

EPSILON_UNITS = 10**6  # epsilon is stored in millionths
DELTA_UNITS = 10**12  # delta is stored in units of 1e-12
MAX_EPSILON_BUDGET = 1000.0
MAX_DELTA_BUDGET = 1e-3


def _units(value: float, per_one: int, round_up: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidRequest("a privacy amount must be a finite number >= 0")
    exact = Decimal(repr(float(value))) * per_one
    return int(exact.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_FLOOR))


def epsilon_units(value: float, *, round_up: bool) -> int:
    """An epsilon in millionths: rounded up for what a run costs, down for what a budget allows."""
    return _units(value, EPSILON_UNITS, round_up)


def delta_units(value: float, *, round_up: bool) -> int:
    """A delta in units of 1e-12: rounded up for what a run costs, down for what a budget allows."""
    return _units(value, DELTA_UNITS, round_up)


def epsilon_value(units: int) -> float:
    return units / EPSILON_UNITS


def delta_value(units: int) -> float:
    return units / DELTA_UNITS


def format_amount(value: float) -> str:
    """An epsilon or delta for people: ``0.25``, ``1``, ``1e-07`` (12 significant digits hold every unit)."""
    return format(value, ".12g")


@dataclass(frozen=True)
class Cost:
    """What one run spends on one dataset, in units."""

    dataset: str
    epsilon: int
    delta: int

    @classmethod
    def of(cls, dataset: str, epsilon: float, delta: float) -> Cost:
        """A cost from plain amounts, rounded up to whole units."""
        return cls(dataset, epsilon_units(epsilon, round_up=True), delta_units(delta, round_up=True))


@dataclass(frozen=True)
class Budget:
    """One researcher's budget on one dataset and what they have spent of it, in units.

    A total may be set below what was already spent: nothing is then left, and nothing is refunded.
    """

    researcher: str
    dataset: str
    epsilon_total: int
    delta_total: int
    epsilon_spent: int = 0
    delta_spent: int = 0
    jobs_charged: int = 0
    set_by: str = ""  # empty: no budget was ever set (a zero budget)
    set_at: float = 0.0

    @property
    def epsilon_remaining(self) -> int:
        return max(0, self.epsilon_total - self.epsilon_spent)

    @property
    def delta_remaining(self) -> int:
        return max(0, self.delta_total - self.delta_spent)

    def covers(self, cost: Cost) -> bool:
        return cost.epsilon <= self.epsilon_remaining and cost.delta <= self.delta_remaining


@dataclass(frozen=True)
class RunsAllowed:
    """How many more runs of one cost a budget pays for: by its epsilon alone, by its delta alone, and so in all."""

    by_epsilon: int
    by_delta: int

    @property
    def runs(self) -> int:
        return min(self.by_epsilon, self.by_delta)

    @property
    def limited_by(self) -> str:
        """``"epsilon"`` or ``"delta"``: which of the two runs out first (epsilon when both do together)."""
        return "epsilon" if self.by_epsilon <= self.by_delta else "delta"


def runs_allowed(budget: Budget, cost: Cost) -> RunsAllowed:
    """How many more runs costing ``cost`` ``budget`` admits, exactly as ``charge_budgets`` would admit them
    one by one (the same units; a zero amount is never the limit)."""
    by_epsilon = budget.epsilon_remaining // cost.epsilon if cost.epsilon else 2**63 - 1
    by_delta = budget.delta_remaining // cost.delta if cost.delta else 2**63 - 1
    return RunsAllowed(by_epsilon, by_delta)


def delta_for_runs(budget: Budget, cost: Cost) -> float:
    """The delta total under which delta never limits before epsilon does: what was spent already plus one
    run's delta for each run the remaining epsilon pays for (at most ``MAX_DELTA_BUDGET``, whole units)."""
    runs = runs_allowed(budget, cost).by_epsilon
    ceiling = delta_units(MAX_DELTA_BUDGET, round_up=False)
    return delta_value(min(ceiling, budget.delta_spent + runs * cost.delta))


@dataclass(frozen=True)
class Charge:
    """One job's spend on one dataset (one row of the append-only charges table)."""

    researcher: str
    dataset: str
    job_id: str
    epsilon: int
    delta: int
    charged_at: float


_BUDGETS = """
    SELECT b.researcher, b.dataset, b.epsilon_total, b.delta_total,
           COALESCE(s.epsilon, 0) AS epsilon_spent, COALESCE(s.delta, 0) AS delta_spent,
           COALESCE(s.jobs, 0) AS jobs_charged, b.set_by, b.set_at
    FROM budgets b LEFT JOIN (
        SELECT researcher, dataset, SUM(epsilon) AS epsilon, SUM(delta) AS delta, COUNT(DISTINCT job_id) AS jobs
        FROM budget_charges GROUP BY researcher, dataset
    ) s ON s.researcher = b.researcher AND s.dataset = b.dataset
"""


def _budget(row: sqlite3.Row) -> Budget:
    return Budget(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row is not a Mapping


def _read_budget(conn: sqlite3.Connection, researcher: str, dataset: str) -> Budget:
    """The budget with what was spent; a zero budget when none was set (fail closed)."""
    row = conn.execute(f"{_BUDGETS} WHERE b.researcher = ? AND b.dataset = ?", (researcher, dataset)).fetchone()
    if row is not None:
        return _budget(row)
    spent = conn.execute(
        "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0), COUNT(DISTINCT job_id) FROM budget_charges"
        " WHERE researcher = ? AND dataset = ?",
        (researcher, dataset),
    ).fetchone()
    return Budget(researcher, dataset, 0, 0, int(spent[0]), int(spent[1]), int(spent[2]))


def _shortfall(cost: Cost, budget: Budget) -> str:
    need = f"epsilon {format_amount(epsilon_value(cost.epsilon))} and delta {format_amount(delta_value(cost.delta))}"
    left = (
        f"epsilon {format_amount(epsilon_value(budget.epsilon_remaining))} and "
        f"delta {format_amount(delta_value(budget.delta_remaining))} remain"
    )
    return f"{cost.dataset} needs {need}, {left}" + ("" if budget.set_by else " (no budget was set)")


def charge_budgets(
    conn: sqlite3.Connection, researcher: str, job_id: str, costs: Sequence[Cost], now: float
) -> list[tuple[Charge, Budget]]:
    """Charge ``costs`` to ``researcher`` for ``job_id`` inside the caller's write transaction; each charge with
    the budget as it stands after it.

    Raises ``BudgetExhausted`` (naming, per dataset, what the run needs and what remains) and charges nothing
    unless every dataset has enough epsilon and delta left. The caller's transaction (BEGIN IMMEDIATE) is what
    makes the check and the charge one step that no concurrent run can come between.
    """
    budgets = [(cost, _read_budget(conn, researcher, cost.dataset)) for cost in costs]
    if not all(budget.covers(cost) for cost, budget in budgets):
        details = "; ".join(_shortfall(cost, budget) for cost, budget in budgets)
        raise BudgetExhausted(
            f"not enough privacy budget for this run, so nothing was charged: {details}; "
            "an operator sets budgets (saferoom budget set)"
        )
    out: list[tuple[Charge, Budget]] = []
    for cost, budget in budgets:
        charge = Charge(researcher, cost.dataset, job_id, cost.epsilon, cost.delta, now)
        conn.execute(
            "INSERT INTO budget_charges (researcher, dataset, job_id, epsilon, delta, charged_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (researcher, cost.dataset, job_id, cost.epsilon, cost.delta, now),
        )
        after = Budget(
            budget.researcher,
            budget.dataset,
            budget.epsilon_total,
            budget.delta_total,
            budget.epsilon_spent + cost.epsilon,
            budget.delta_spent + cost.delta,
            budget.jobs_charged + 1,
            budget.set_by,
            budget.set_at,
        )
        out.append((charge, after))
    return out


class BudgetLedger:
    """Persistence of budgets and charges. Who may set or see what is decided in ``saferoom.disclosure.budgets``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def set_budget(
        self,
        researcher: str,
        dataset: str,
        epsilon: float,
        delta: float,
        set_by: str,
        now: float | None = None,
        on_set: Callable[[Budget], object] | None = None,
    ) -> Budget:
        """Set (replace) the totals ``researcher`` may spend on ``dataset``, rounded down to whole units.

        ``on_set`` runs inside the transaction with the new budget (the audit record): if it raises, the budget
        is left as it was.
        """
        change = self.setter(researcher, dataset, epsilon, delta, set_by, now)
        with self._db.transaction() as conn:
            budget = change(conn)
            if on_set is not None:
                on_set(budget)
        return budget

    @staticmethod
    def setter(
        researcher: str, dataset: str, epsilon: float, delta: float, set_by: str, now: float | None = None
    ) -> Callable[[sqlite3.Connection], Budget]:
        """``set_budget``'s change, checked now, to run inside a transaction (``AuditLog.commit``)."""
        if not 0 <= _finite(epsilon) <= MAX_EPSILON_BUDGET:
            raise InvalidRequest(f"epsilon must be a number in [0, {MAX_EPSILON_BUDGET:g}]")
        if not 0 <= _finite(delta) <= MAX_DELTA_BUDGET:
            raise InvalidRequest(f"delta must be a number in [0, {MAX_DELTA_BUDGET:g}]")
        epsilon_total = epsilon_units(epsilon, round_up=False)
        delta_total = delta_units(delta, round_up=False)
        when = time.time() if now is None else now

        def change(conn: sqlite3.Connection) -> Budget:
            conn.execute(
                "INSERT INTO budgets (researcher, dataset, epsilon_total, delta_total, set_by, set_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (researcher, dataset) DO UPDATE SET"
                " epsilon_total = excluded.epsilon_total, delta_total = excluded.delta_total,"
                " set_by = excluded.set_by, set_at = excluded.set_at",
                (researcher, dataset, epsilon_total, delta_total, set_by, when),
            )
            return _read_budget(conn, researcher, dataset)

        return change

    def budget(self, researcher: str, dataset: str) -> Budget:
        """The budget with what was spent of it (a zero budget when none was set)."""
        with self._db.reading() as conn:
            return _read_budget(conn, researcher, dataset)

    def list_budgets(self, researcher: str | None = None, dataset: str | None = None) -> list[Budget]:
        """Every budget that was set, optionally of one researcher and/or on one dataset."""
        with self._db.reading() as conn:
            rows = conn.execute(
                f"{_BUDGETS} WHERE (? IS NULL OR b.researcher = ?) AND (? IS NULL OR b.dataset = ?)"
                " ORDER BY b.researcher, b.dataset",
                (researcher, researcher, dataset, dataset),
            ).fetchall()
        return [_budget(r) for r in rows]

    def charges(self, job_id: str) -> list[Charge]:
        """What one job was charged, per dataset."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT researcher, dataset, job_id, epsilon, delta, charged_at FROM budget_charges"
                " WHERE job_id = ? ORDER BY dataset",
                (job_id,),
            ).fetchall()
        return [Charge(*r) for r in rows]


def _finite(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest("a privacy amount must be a finite number")
    return float(value)


# ------------------------------------------------------------------ mock data publication budgets


@dataclass(frozen=True)
class PublicationBudget:
    """What may be spent on publishing DP mock data of one dataset, and what was, in units (delta is 0: the
    measurements are pure epsilon-DP)."""

    dataset: str
    epsilon_total: int
    epsilon_spent: int = 0
    publications: int = 0
    set_by: str = ""  # empty: never set (a zero budget)

    @property
    def epsilon_remaining(self) -> int:
        return max(0, self.epsilon_total - self.epsilon_spent)


@dataclass(frozen=True)
class Publication:
    """One publication of mock data: its charge and the measurements it stores (never rows)."""

    dataset: str
    version: int
    dataset_hash: str
    epsilon: int
    delta: int
    structure: tuple[str, ...]
    measurements: bytes
    measurements_hash: str
    fidelity: dict[str, float]  # operator-only: real vs mock TVD per marginal
    published_by: str
    published_at: float


def read_publication_budget(conn: sqlite3.Connection, dataset: str) -> PublicationBudget:
    """The publication budget of ``dataset`` with what was spent (a zero budget when none was set)."""
    row = conn.execute("SELECT epsilon_total, set_by FROM mock_budgets WHERE dataset = ?", (dataset,)).fetchone()
    spent = conn.execute(
        "SELECT COALESCE(SUM(epsilon), 0), COUNT(*) FROM mock_publications WHERE dataset = ?", (dataset,)
    ).fetchone()
    total, by = (int(row[0]), str(row[1])) if row is not None else (0, "")
    return PublicationBudget(dataset, total, int(spent[0]), int(spent[1]), by)


def _publication(row: sqlite3.Row) -> Publication:
    return Publication(
        row["dataset"],
        int(row["version"]),
        row["dataset_hash"],
        int(row["epsilon"]),
        int(row["delta"]),
        tuple(json.loads(row["structure_json"])),
        bytes(row["measurements"]),
        row["measurements_hash"],
        dict(json.loads(row["fidelity_json"])),
        row["published_by"],
        float(row["published_at"]),
    )


def check_publication(budget: PublicationBudget, epsilon: int) -> None:
    """``BudgetExhausted`` unless ``budget`` has ``epsilon`` (units) left."""
    if epsilon > budget.epsilon_remaining:
        raise BudgetExhausted(
            f"publishing mock data of {budget.dataset} needs epsilon {format_amount(epsilon_value(epsilon))}, "
            f"its publication budget has {format_amount(epsilon_value(budget.epsilon_remaining))} left"
            + ("" if budget.set_by else " (no publication budget was set: saferoom mock budget)")
            + "; nothing was charged"
        )


class PublicationLedger:
    """Persistence of mock publication budgets and publications (who may do what: ``saferoom.mock.service``).

    A publication is charged like a run: inside one write transaction the budget is read, the charge checked
    against what remains and the publication inserted, or nothing is (``BudgetExhausted``).
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def setter(dataset: str, epsilon: float, set_by: str) -> Callable[[sqlite3.Connection], PublicationBudget]:
        """Setting ``dataset``'s publication budget (rounded down to whole units), to run in a transaction."""
        if not 0 <= _finite(epsilon) <= MAX_EPSILON_BUDGET:
            raise InvalidRequest(f"epsilon must be a number in [0, {MAX_EPSILON_BUDGET:g}]")
        total = epsilon_units(epsilon, round_up=False)
        when = time.time()

        def change(conn: sqlite3.Connection) -> PublicationBudget:
            conn.execute(
                "INSERT INTO mock_budgets (dataset, epsilon_total, set_by, set_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (dataset) DO UPDATE SET epsilon_total = excluded.epsilon_total,"
                " set_by = excluded.set_by, set_at = excluded.set_at",
                (dataset, total, set_by, when),
            )
            return read_publication_budget(conn, dataset)

        return change

    @staticmethod
    def publisher(
        dataset: str,
        epsilon: int,
        dataset_hash: str,
        structure: Sequence[str],
        measurements: bytes,
        fidelity: dict[str, float],
        published_by: str,
    ) -> Callable[[sqlite3.Connection], tuple[Publication, PublicationBudget]]:
        """Charging and storing one publication, to run in a transaction; ``BudgetExhausted`` charges nothing."""
        digest = hashlib.sha256(measurements).hexdigest()
        when = time.time()

        def change(conn: sqlite3.Connection) -> tuple[Publication, PublicationBudget]:
            check_publication(read_publication_budget(conn, dataset), epsilon)
            version = int(
                conn.execute(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM mock_publications WHERE dataset = ?", (dataset,)
                ).fetchone()[0]
            )
            conn.execute(
                "INSERT INTO mock_publications (dataset, version, dataset_hash, epsilon, delta, structure_json,"
                " measurements, measurements_hash, fidelity_json, published_by, published_at)"
                " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                (
                    dataset,
                    version,
                    dataset_hash,
                    epsilon,
                    json.dumps(list(structure)),
                    measurements,
                    digest,
                    json.dumps(fidelity, sort_keys=True),
                    published_by,
                    when,
                ),
            )
            publication = Publication(
                dataset, version, dataset_hash, epsilon, 0, tuple(structure), measurements, digest, fidelity,
                published_by, when,
            )  # fmt: skip
            return publication, read_publication_budget(conn, dataset)

        return change

    def budget(self, dataset: str) -> PublicationBudget:
        with self._db.reading() as conn:
            return read_publication_budget(conn, dataset)

    def latest(self, dataset: str) -> Publication | None:
        """The dataset's newest publication (None: never published)."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT * FROM mock_publications WHERE dataset = ? ORDER BY version DESC LIMIT 1", (dataset,)
            ).fetchone()
        return None if row is None else _publication(row)
