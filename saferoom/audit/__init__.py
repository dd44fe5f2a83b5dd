"""The audit log: signed, hash-chained, append-only records of every submission, decision, run and release."""

from saferoom.audit.log import AuditFilter, AuditLog, quarantine_torn_tail
from saferoom.audit.record import AuditRecord, EventType
from saferoom.audit.verify import Checkpoint, VerifyReport, load_public_key, verify_log

__all__ = [
    "AuditFilter",
    "AuditLog",
    "AuditRecord",
    "Checkpoint",
    "EventType",
    "VerifyReport",
    "load_public_key",
    "quarantine_torn_tail",
    "verify_log",
]
