"""The state database: one SQLite file in WAL mode, numbered migrations applied at start-up.

``synchronous=FULL`` makes every committed transaction durable before it returns, so a job acknowledged to a
client survives a crash. One connection, guarded by a lock, serves all threads: writes are serialised, and the
reads the server makes are short.

Opening runs ``PRAGMA quick_check``: a damaged or truncated file is refused with its path (``StateDamaged``),
never a traceback. SQLite's own errors never leave this module raw: a full disk is ``StorageFull``
(RESOURCE_EXHAUSTED, nothing committed), a damaged file ``StateDamaged`` (DATA_LOSS), anything else of
SQLite's ``Unavailable``, each with a fixed message (SQLite's text is logged for the operator).

**Upgrades.** Migrations only run forward, each once, at open. A database carrying a migration this version does
not know was made (or last opened) by a newer saferoom: it is refused (``FailedPrecondition``) before anything
is written, since an older server would read tables whose meaning it does not know and could write rows the
newer one would then misread. Downgrading means restoring a backup taken before the upgrade.

The database also holds the audit outbox and the log head it last saw (migration 8; see ``saferoom.audit.log``
for how they keep state and log one source of truth, and for the lock order).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Database", "store_error"]

_log = logging.getLogger(__name__)

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
    (
        8,
        # The audit outbox: records committed with the change they describe, appended to the log before the
        # change is acknowledged, deleted once they are in it. audit_head is the log head as of the last time
        # records were appended (seq -1: not known yet, for a database made before this migration).
        """
        CREATE TABLE audit_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event TEXT NOT NULL,
            actor TEXT NOT NULL,
            role TEXT NOT NULL,
            objects_json TEXT NOT NULL,
            summary_json TEXT NOT NULL
        );
        CREATE TABLE audit_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL
        );
        INSERT INTO audit_head VALUES (1, -1, '')
        """,
    ),
    (
        9,
        # The dataset versions each job read (content hashes from `saferoom datasets import`; "" for a generated
        # or hand-written dataset), written when the job starts on them.
        """
        CREATE TABLE job_dataset_versions (
            job_id TEXT NOT NULL REFERENCES jobs(id),
            dataset TEXT NOT NULL,
            version TEXT NOT NULL,
            PRIMARY KEY (job_id, dataset)
        )
        """,
    ),
    (
        10,
        # DP mock data (saferoom.mock): each dataset's publication budget, set by an operator, and each
        # publication: its charge (epsilon in the ledger's millionths) and the noisy measurements mock rows are
        # sampled from (never rows), bound to the dataset file it measured.
        """
        CREATE TABLE mock_budgets (
            dataset TEXT PRIMARY KEY,
            epsilon_total INTEGER NOT NULL,
            set_by TEXT NOT NULL,
            set_at REAL NOT NULL
        );
        CREATE TABLE mock_publications (
            dataset TEXT NOT NULL,
            version INTEGER NOT NULL,
            dataset_hash TEXT NOT NULL,
            epsilon INTEGER NOT NULL,
            delta INTEGER NOT NULL,
            structure_json TEXT NOT NULL,
            measurements BLOB NOT NULL,
            measurements_hash TEXT NOT NULL,
            fidelity_json TEXT NOT NULL,
            published_by TEXT NOT NULL,
            published_at REAL NOT NULL,
            PRIMARY KEY (dataset, version)
        )
        """,
    ),
]


SCHEMA_VERSION = max(number for number, _ in MIGRATIONS)  # the newest migration this version applies


def store_error(exc: sqlite3.Error, path: Path) -> Exception:
    """The saferoom error for one of SQLite's (its text goes to the operator's log, never to a client)."""
    from saferoom.errors import StateDamaged, StorageFull, Unavailable

    text = str(exc)
    _log.error("the state database %s: %s", path, text)
    lowered = text.lower()
    if "full" in lowered or getattr(exc, "sqlite_errorcode", None) == 13:  # SQLITE_FULL
        return StorageFull("the disk holding the state database is full; nothing was changed: try again later")
    if any(w in lowered for w in ("malformed", "not a database", "corrupt", "file is not")):
        return StateDamaged(f"the state database {path} is damaged ({text}); restore it from a backup")
    if isinstance(exc, sqlite3.IntegrityError):
        return StateDamaged("the change conflicts with what the state database holds; nothing was changed")
    return Unavailable("the state database could not be used just now; nothing was changed: try again later")


class Database:
    """Owns the SQLite connection and its concurrency."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = connection
        self._lock = threading.RLock()
        self._held = threading.local()
        self.path = path
        self.created = False  # True when this open made the file (an empty state)

    @classmethod
    def open(cls, path: Path) -> Database:
        """Open (creating if needed), check and migrate the database at ``path``.

        Raises ``StateDamaged`` naming the path when the file is not a sound SQLite database.
        """
        from saferoom.errors import StateDamaged

        existed = path.exists() and path.stat().st_size > 0
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise StateDamaged(f"the state database {path} cannot be opened: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise StateDamaged(f"the state database {path} is damaged: {'; '.join(problems[:5])}")
            if existed and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                raise StateDamaged(f"the state database {path} holds no tables: it was truncated or replaced")
            db = cls(conn, path)
            db.created = not existed
            db._migrate()
        except sqlite3.Error as exc:
            conn.close()
            raise StateDamaged(f"the state database {path} is damaged: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return db

    def held_by_me(self) -> bool:
        """Whether this thread holds the database lock (the lock order forbids taking the log's then)."""
        return bool(getattr(self._held, "depth", 0))

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (number INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT number FROM schema_migrations")}
            newer = sorted(applied - {number for number, _ in MIGRATIONS})
            if newer:
                from saferoom.errors import FailedPrecondition

                raise FailedPrecondition(
                    f"the state database {self.path} was made by a newer saferoom (it has migration {newer[-1]}, "
                    f"this version knows up to {SCHEMA_VERSION}): upgrade saferoom, or restore a backup taken "
                    "before the upgrade"
                )
            for number, sql in MIGRATIONS:
                if number in applied:
                    continue
                for statement in (s.strip() for s in sql.split(";")):
                    if statement:
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, julianday('now'))", (number,))
            if not applied:  # a new database has seen no audit record: its head is the log's genesis
                conn.execute("UPDATE audit_head SET seq = 0, hash = ? WHERE id = 1", ("0" * 64,))

    @property
    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the database is closed")
        return self._conn

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locking) transaction, committed on success and rolled back on error.

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL``: a power cut may lose it,
        a crash of the process does not); the next durable commit makes it durable too. Only for bookkeeping that
        can be redone (the audit outbox's settling) or that matters only once a later durable commit is made (the
        dataset versions a running job reads and its RELEASING phase, made durable with its end).
        """
        with self._lock:
            self._held.depth = getattr(self._held, "depth", 0) + 1
            try:
                conn = self.connection
                if not durable:
                    conn.execute("PRAGMA synchronous=NORMAL")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise store_error(exc, self.path) from None
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException as exc:
                    if conn.in_transaction:
                        try:
                            conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            _log.exception("rolling back in %s failed", self.path)
                    if isinstance(exc, sqlite3.Error):
                        raise store_error(exc, self.path) from None
                    raise
            finally:
                self._held.depth -= 1
                if not durable and self._conn is not None:
                    self._conn.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads."""
        with self._lock:
            self._held.depth = getattr(self._held, "depth", 0) + 1
            try:
                yield self.connection
            except sqlite3.Error as exc:
                raise store_error(exc, self.path) from None
            finally:
                self._held.depth -= 1

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
