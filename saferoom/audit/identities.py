"""Keeps the log's identity_issued / identity_revoked records in step with the certificate authority's files.

The authority issues and revokes offline (`saferoom certs ...`); the server learns of it from the PKI directory:
at start-up, whenever the revocation list changes, and when a certificate it has not recorded yet calls.
"""

from __future__ import annotations

import threading
from pathlib import Path

from saferoom.audit.log import AuditFilter, AuditLog
from saferoom.audit.record import EventType
from saferoom.identity import list_identities

__all__ = ["IdentityEvents"]


class IdentityEvents:
    """Records each issued and each revoked certificate exactly once."""

    def __init__(self, log: AuditLog, pki_dir: Path) -> None:
        self._log = log
        self._pki_dir = pki_dir
        self._lock = threading.Lock()
        self._issued: set[str] = set()
        self._revoked: set[str] = set()
        wanted = frozenset({EventType.IDENTITY_ISSUED.value, EventType.IDENTITY_REVOKED.value})
        for record in log.read(AuditFilter(events=wanted)):
            serial = str(record.summary.get("serial", ""))
            (self._issued if record.event == EventType.IDENTITY_ISSUED else self._revoked).add(serial)

    def knows(self, serial: int) -> bool:
        return f"{serial:x}" in self._issued

    def sync(self) -> int:
        """Record what the authority did since the last sync; returns how many records were written."""
        written = 0
        with self._lock:
            for name, roles, serial, not_after, revoked in list_identities(self._pki_dir):
                key = f"{serial:x}"
                summary = {"name": name, "roles": roles, "serial": key, "not_after": not_after.isoformat()}
                if key not in self._issued:
                    self._log.append(EventType.IDENTITY_ISSUED, "authority", "ca", {"identity": name}, summary)
                    self._issued.add(key)
                    written += 1
                if revoked and key not in self._revoked:
                    self._log.append(EventType.IDENTITY_REVOKED, "authority", "ca", {"identity": name}, summary)
                    self._revoked.add(key)
                    written += 1
        return written
