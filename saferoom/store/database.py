"""The state database: one SQLite file in WAL mode, numbered migrations applied at start-up.

``synchronous=FULL`` makes every committed transaction durable before it returns, so a job acknowledged to a
client survives a crash. One connection, guarded by a lock, serves all threads: writes are serialised, and the
reads the server makes are short.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["MIGRATIONS", "Database"]

# (number, SQL). Append only: a released migration is never edited.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            package_hash TEXT NOT NULL,
            package_name TEXT NOT NULL,
            package_version TEXT NOT NULL,
            params_json TEXT NOT NULL,
            datasets_json TEXT NOT NULL,
            state TEXT NOT NULL,
            error_code TEXT,
            error_message TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX jobs_by_owner ON jobs (owner, created_at);
        CREATE INDEX jobs_by_state ON jobs (state);
        CREATE TABLE results (
            job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
            report_json TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE result_outputs (
            job_id TEXT NOT NULL REFERENCES results (job_id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            position INTEGER NOT NULL,
            arrow_ipc BLOB,
            value_json TEXT,
            report_json TEXT NOT NULL,
            PRIMARY KEY (job_id, name)
        );
        """,
    ),
    (
        2,
        """
        CREATE TABLE packages (
            hash TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX packages_by_name ON packages (name, version);
        CREATE TABLE package_submissions (
            package_hash TEXT NOT NULL REFERENCES packages (hash),
            submitter TEXT NOT NULL,
            submitted_at REAL NOT NULL,
            PRIMARY KEY (package_hash, submitter)
        );
        CREATE INDEX submissions_by_submitter ON package_submissions (submitter);
        CREATE TABLE package_decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            package_hash TEXT NOT NULL REFERENCES packages (hash),
            kind TEXT NOT NULL CHECK (kind IN ('approved', 'rejected', 'revoked')),
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            decided_at REAL NOT NULL,
            not_before INTEGER,
            not_after INTEGER,
            signature BLOB,
            certificate_pem BLOB
        );
        CREATE INDEX decisions_by_package ON package_decisions (package_hash, id)
        """,
    ),
    (
        3,
        """
        ALTER TABLE jobs ADD COLUMN request_id TEXT;
        CREATE UNIQUE INDEX jobs_by_request ON jobs (owner, request_id) WHERE request_id IS NOT NULL
        """,
    ),
    (
        4,
        """
        CREATE TABLE identities (
            serial TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            roles TEXT NOT NULL,
            not_after REAL NOT NULL,
            certificate_pem BLOB NOT NULL,
            first_seen REAL NOT NULL
        );
        CREATE INDEX identities_by_name ON identities (name)
        """,
    ),
    (
        5,
        """
        CREATE TABLE audit_checkpoints (
            covers INTEGER PRIMARY KEY,
            head TEXT NOT NULL,
            signature BLOB NOT NULL,
            created_at REAL NOT NULL
        )
        """,
    ),
    (
        6,
        # Privacy budgets in fixed integer units (epsilon in millionths, delta in units of 1e-12), so that
        # sums are exact: ten charges of 0.1 spend exactly a budget of 1.0. Charges are appended, never
        # changed: what a researcher has spent is their sum, and a budget row holds only the totals.
        """
        CREATE TABLE budgets (
            researcher TEXT NOT NULL,
            dataset TEXT NOT NULL,
            epsilon_total INTEGER NOT NULL CHECK (epsilon_total >= 0),
            delta_total INTEGER NOT NULL CHECK (delta_total >= 0),
            set_by TEXT NOT NULL,
            set_at REAL NOT NULL,
            PRIMARY KEY (researcher, dataset)
        );
        CREATE TABLE budget_charges (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            researcher TEXT NOT NULL,
            dataset TEXT NOT NULL,
            job_id TEXT NOT NULL REFERENCES jobs (id),
            epsilon INTEGER NOT NULL CHECK (epsilon >= 0),
            delta INTEGER NOT NULL CHECK (delta >= 0),
            charged_at REAL NOT NULL,
            UNIQUE (job_id, dataset)
        );
        CREATE INDEX budget_charges_by_researcher ON budget_charges (researcher, dataset)
        """,
    ),
    (
        7,
        # Output checking (saferoom.store.checks): a held result is stored in results/result_outputs like a
        # released one; these tables say it is held, what the checker sees besides it, and who decided what.
        """
        CREATE TABLE held_results (
            job_id TEXT PRIMARY KEY REFERENCES jobs (id),
            result_hash TEXT NOT NULL,
            checkers_required INTEGER NOT NULL CHECK (checkers_required IN (1, 2)),
            checks_json TEXT NOT NULL,
            held_at REAL NOT NULL
        );
        CREATE TABLE check_decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL REFERENCES held_results (job_id),
            checker TEXT NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject', 'request_changes')),
            reason TEXT NOT NULL,
            result_hash TEXT NOT NULL,
            decided_at INTEGER NOT NULL,
            signature BLOB NOT NULL,
            certificate_pem BLOB NOT NULL,
            UNIQUE (job_id, checker)
        )
        """,
    ),
]


class Database:
    """Owns the SQLite connection and its concurrency."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = connection
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Database:
        """Open (creating if needed) and migrate the database at ``path``."""
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        db = cls(conn, path)
        db._migrate()
        return db

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (number INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT number FROM schema_migrations")}
            for number, sql in MIGRATIONS:
                if number in applied:
                    continue
                for statement in (s.strip() for s in sql.split(";")):
                    if statement:
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, julianday('now'))", (number,))

    @property
    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the database is closed")
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locking) transaction, committed on success and rolled back on error."""
        with self._lock:
            conn = self.connection
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads."""
        with self._lock:
            yield self.connection

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
