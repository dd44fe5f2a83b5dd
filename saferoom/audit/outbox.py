"""The audit outbox: records committed in SQLite with the change they describe, until they are in the log.

Pure pieces shared by the log (which drains the outbox and reconciles it at start-up) and by ``saferoom state
check`` (which only looks): the rows, the stored head, and ``plan_reconcile``, which decides from the log, the
head and the outbox what is already appended and what is wrong. See ``saferoom.audit.log`` for the protocol.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saferoom.audit.record import AuditRecord, EventType

__all__ = ["Entry", "OutboxRow", "canonical", "plan_reconcile", "read_head", "read_outbox"]

# (event, actor, role, objects, summary)
Entry = tuple[EventType, str, str, dict[str, Any], dict[str, Any]]


def canonical(value: dict[str, Any]) -> str:
    """The JSON an outbox row keeps (and compares records by)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class OutboxRow:
    """One record committed with its change and not yet known to be in the log."""

    id: int
    event: str
    actor: str
    role: str
    objects_json: str
    summary_json: str

    def entry(self) -> Entry:
        return (
            EventType(self.event),
            self.actor,
            self.role,
            json.loads(self.objects_json),
            json.loads(self.summary_json),
        )

    def describes(self, record: AuditRecord) -> bool:
        return (record.event, record.actor, record.role, canonical(record.objects), canonical(record.summary)) == (
            self.event,
            self.actor,
            self.role,
            self.objects_json,
            self.summary_json,
        )


def read_outbox(conn: sqlite3.Connection, after_id: int = 0) -> list[OutboxRow]:
    rows = conn.execute(
        "SELECT id, event, actor, role, objects_json, summary_json FROM audit_outbox WHERE id > ? ORDER BY id",
        (after_id,),
    ).fetchall()
    return [OutboxRow(*tuple(r)) for r in rows]


def read_head(conn: sqlite3.Connection) -> tuple[int, str] | None:
    row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def plan_reconcile(
    records: Sequence[AuditRecord],
    head: tuple[int, str] | None,
    outbox: Sequence[OutboxRow],
    db_created: bool,
    db_path: Path,
    log_path: Path,
) -> tuple[int, str]:
    """How many outbox rows are already in the log (written before a crash), and what is wrong ('' if nothing).

    ``records`` is the whole (verified) log, oldest first.
    """
    last = records[-1].seq if records else 0
    if head is None:
        return 0, f"{db_path} has no audit_head row: the database was edited outside the server"
    seq, digest = head
    if seq < 0:  # a database made before the outbox: nothing is known of the log yet (trusted once)
        return 0, ""
    if seq == 0 and records and not outbox:
        return 0, (
            f"{db_path} has seen no audit record ({'it is new' if db_created else 'it is empty'}) but the audit "
            f"log {log_path} holds {last} records: the database was deleted or replaced (restore it from a backup)"
        )
    if seq > last:
        return 0, (
            f"the audit log {log_path} ends at record {last} but {db_path} recorded that it had reached record "
            f"{seq}: the log was cut (records {last + 1} to {seq} are missing)"
        )
    if seq > 0 and records[seq - 1].hash != digest:
        return 0, (
            f"record {seq} of the audit log {log_path} is not the one {db_path} recorded (hash {digest[:16]}...): "
            "the log was replaced or rewritten"
        )
    after = [r for r in records[seq:] if r.event != EventType.CHECKPOINT]
    for i, record in enumerate(after):
        if i >= len(outbox) or not outbox[i].describes(record):
            return 0, (
                f"record {record.seq} ({record.event}) of the audit log {log_path} was never committed to {db_path}: "
                "the database lost changes it had committed (a deleted or stale WAL file, an older copy of "
                "saferoom.db)"
            )
    return len(after), ""
