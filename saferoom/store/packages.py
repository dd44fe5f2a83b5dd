"""Submitted packages, who submitted them, and the review decisions on them.

A package's bytes live on disk content-addressed (``packages/ab/<sha256>.zip``, written atomically and
fsynced before the row that points at them is committed); its rows live in SQLite. Decisions are appended,
never updated: a package's state is its latest decision.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from saferoom.errors import PackageNotFound, StorageFull
from saferoom.store.database import Database

__all__ = ["DecisionRecord", "PackageRecord", "PackageStore"]

_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PackageRecord:
    """A stored package and everyone who submitted exactly this content."""

    hash: str
    name: str
    version: str
    size: int
    created_at: float
    submitters: tuple[str, ...]


@dataclass(frozen=True)
class DecisionRecord:
    """One review decision: approved (signed), rejected or revoked."""

    id: int
    package_hash: str
    kind: str
    actor: str
    reason: str
    decided_at: float
    not_before: int | None = None
    not_after: int | None = None
    signature: bytes | None = None
    certificate_pem: bytes | None = None


class PackageStore:
    """Persistence of packages (rows + content-addressed files) and of review decisions."""

    def __init__(self, db: Database, directory: Path) -> None:
        self._db = db
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def blob_path(self, package_hash: str) -> Path:
        if not _HASH.match(package_hash):
            raise PackageNotFound("a package hash is 64 lowercase hex characters")
        return self.directory / package_hash[:2] / f"{package_hash}.zip"

    def add(self, package_hash: str, name: str, version: str, blob: bytes, submitter: str) -> bool:
        """Store a package for ``submitter``; returns False if this content was already stored."""
        self.write_blob(package_hash, blob)
        with self._db.transaction() as conn:
            return self.add_rows_in(conn, package_hash, name, version, len(blob), submitter)

    def write_blob(self, package_hash: str, blob: bytes) -> None:
        """Write a package's bytes content-addressed (atomically, fsynced) unless they are there already."""
        path = self.blob_path(package_hash)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StorageFull("the disk holding the package store is full; nothing was stored") from None
                raise
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @staticmethod
    def add_rows_in(
        conn: sqlite3.Connection, package_hash: str, name: str, version: str, size: int, submitter: str
    ) -> bool:
        """The rows of a stored package, inside the caller's transaction; False if this content was known."""
        now = time.time()
        created = conn.execute(
            "INSERT OR IGNORE INTO packages (hash, name, version, size, created_at) VALUES (?, ?, ?, ?, ?)",
            (package_hash, name, version, size, now),
        ).rowcount
        conn.execute(
            "INSERT OR IGNORE INTO package_submissions (package_hash, submitter, submitted_at) VALUES (?, ?, ?)",
            (package_hash, submitter, now),
        )
        return bool(created)

    def read_blob(self, package_hash: str) -> bytes:
        """The stored bytes (not yet checked against the hash: the caller does that)."""
        return self.blob_path(package_hash).read_bytes()

    def _records(self, conn: sqlite3.Connection, where: str, args: tuple[object, ...]) -> list[PackageRecord]:
        rows = conn.execute(
            "SELECT p.hash, p.name, p.version, p.size, p.created_at, group_concat(s.submitter, char(10)) AS who"
            f" FROM packages p JOIN package_submissions s ON s.package_hash = p.hash {where}"
            " GROUP BY p.hash ORDER BY p.name, p.created_at",
            args,
        ).fetchall()
        return [
            PackageRecord(
                r["hash"], r["name"], r["version"], r["size"], r["created_at"], tuple(sorted(r["who"].split("\n")))
            )
            for r in rows
        ]

    def get(self, package_hash: str) -> PackageRecord:
        with self._db.reading() as conn:
            found = self._records(conn, "WHERE p.hash = ?", (package_hash,))
        if not found:
            raise PackageNotFound(f"no package {package_hash[:64]!r}")
        return found[0]

    def find(self, submitter: str | None = None, name: str | None = None) -> list[PackageRecord]:
        """Packages, optionally only those ``submitter`` submitted and/or with one name."""
        clauses, args = [], []
        if submitter is not None:
            clauses.append("p.hash IN (SELECT package_hash FROM package_submissions WHERE submitter = ?)")
            args.append(submitter)
        if name is not None:
            clauses.append("p.name = ?")
            args.append(name)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._db.reading() as conn:
            return self._records(conn, where, tuple(args))

    def add_decision(self, decision: DecisionRecord) -> DecisionRecord:
        """Append a decision (its ``id`` is assigned here)."""
        with self._db.transaction() as conn:
            return self.add_decision_in(conn, decision)

    @staticmethod
    def add_decision_in(conn: sqlite3.Connection, decision: DecisionRecord) -> DecisionRecord:
        """``add_decision`` inside the caller's transaction."""
        cursor = conn.execute(
            "INSERT INTO package_decisions (package_hash, kind, actor, reason, decided_at, not_before,"
            " not_after, signature, certificate_pem) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                decision.package_hash,
                decision.kind,
                decision.actor,
                decision.reason,
                decision.decided_at,
                decision.not_before,
                decision.not_after,
                decision.signature,
                decision.certificate_pem,
            ),
        )
        new_id = int(cursor.lastrowid or 0)
        return DecisionRecord(**{**decision.__dict__, "id": new_id})

    def decisions(self, package_hash: str) -> list[DecisionRecord]:
        """Every decision on a package, oldest first."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT * FROM package_decisions WHERE package_hash = ? ORDER BY id", (package_hash,)
            ).fetchall()
        return [DecisionRecord(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118
