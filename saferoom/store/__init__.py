"""State: SQLite in WAL mode, one class per store."""

from saferoom.store.database import MIGRATIONS, Database
from saferoom.store.jobs import JobRecord, JobStore, StoredOutput, StoredResult

__all__ = ["MIGRATIONS", "Database", "JobRecord", "JobStore", "StoredOutput", "StoredResult"]
