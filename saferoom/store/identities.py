"""The identities a server has seen: every certificate that authenticated a call, kept for the record.

The authority (the PKI directory) decides who exists and who is revoked; this table records who actually
called, with the certificate they presented, so decisions and jobs can be traced back to a certificate
long after it expired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from saferoom.store.database import Database

__all__ = ["IdentityRecord", "IdentityStore"]


@dataclass(frozen=True)
class IdentityRecord:
    """One certificate that authenticated at least one call."""

    serial: str  # hex
    name: str
    roles: str  # comma-separated
    not_after: float
    certificate_pem: bytes
    first_seen: float


class IdentityStore:
    """Persistence of seen identities (insert once, never updated)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def remember(self, serial: int, name: str, roles: str, not_after: float, certificate_pem: bytes) -> bool:
        """Record a certificate the first time it is seen; True if it was new."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO identities VALUES (?, ?, ?, ?, ?, ?)",
                (f"{serial:x}", name, roles, not_after, certificate_pem, time.time()),
            )
        return cursor.rowcount == 1

    def list_identities(self, name: str | None = None) -> list[IdentityRecord]:
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT * FROM identities WHERE ? IS NULL OR name = ? ORDER BY first_seen", (name, name)
            ).fetchall()
        return [IdentityRecord(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118
