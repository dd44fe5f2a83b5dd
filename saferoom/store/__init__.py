"""State: SQLite in WAL mode, one class per store."""

from saferoom.store.budgets import Budget, BudgetLedger, Charge, Cost, PublicationLedger
from saferoom.store.checks import CheckStore, DecisionRow, HeldRecord
from saferoom.store.database import MIGRATIONS, Database
from saferoom.store.identities import IdentityRecord, IdentityStore
from saferoom.store.jobs import JobRecord, JobStore, StoredOutput, StoredResult
from saferoom.store.packages import DecisionRecord, PackageRecord, PackageStore

__all__ = [
    "MIGRATIONS",
    "Budget",
    "BudgetLedger",
    "Charge",
    "CheckStore",
    "Cost",
    "Database",
    "DecisionRecord",
    "DecisionRow",
    "HeldRecord",
    "IdentityRecord",
    "IdentityStore",
    "JobRecord",
    "JobStore",
    "PackageRecord",
    "PackageStore",
    "PublicationLedger",
    "StoredOutput",
    "StoredResult",
]
