"""Audit records, their event types, and the frame format of the log file.

The log is one append-only file of frames, each::

    u32 big-endian length of BODY | BODY (canonical JSON, UTF-8) | 64-byte Ed25519 signature over PREFIX + BODY

BODY holds ``seq`` (1, 2, 3, ... with no gaps), ``ts`` (UTC), ``event``, ``actor``, ``role``, ``objects``
(package, job, datasets), ``summary`` (what was released: result hash, cells released and suppressed, budget
charged; never values, never rows) and ``prev``: the SHA-256 of the whole previous frame (64 zeros for the
first). A frame's hash is the SHA-256 of its bytes (length, body and signature), so the chain covers all of it.
A ``checkpoint`` record additionally names the sequence number and chain head it seals; its signature is the
statement an auditor keeps.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "GENESIS",
    "SIGNATURE_PREFIX",
    "AuditRecord",
    "EventType",
    "decode_body",
    "encode_body",
    "frame_hash",
]

GENESIS = "0" * 64
SIGNATURE_PREFIX = b"saferoom-audit-v1\n"
HEADER = struct.Struct(">I")
SIGNATURE_BYTES = 64
MAX_BODY = 1 << 20


class EventType(StrEnum):
    """Every kind of audit record (the README lists them; a test keeps the two in step)."""

    SERVER_STARTED = "server_started"
    SERVER_STOPPED = "server_stopped"
    LOG_VERIFIED = "log_verified"
    CHECKPOINT = "checkpoint"
    LOG_TAIL_QUARANTINED = "log_tail_quarantined"
    IDENTITY_ISSUED = "identity_issued"
    IDENTITY_REVOKED = "identity_revoked"
    CALL_REFUSED = "call_refused"
    PACKAGE_SUBMITTED = "package_submitted"
    PACKAGE_APPROVED = "package_approved"
    PACKAGE_REJECTED = "package_rejected"
    PACKAGE_REVOKED = "package_revoked"
    JOB_QUEUED = "job_queued"
    JOB_STARTED = "job_started"
    JOB_FINISHED = "job_finished"
    JOB_FAILED = "job_failed"
    JOB_CANCELLED = "job_cancelled"
    RESULT_RELEASED = "result_released"
    RESULT_DOWNLOADED = "result_downloaded"
    RESULT_HELD = "result_held"
    RESULT_CHECKED = "result_checked"
    BUDGET_SET = "budget_set"
    BUDGET_CHARGED = "budget_charged"
    DATASET_PUBLISHED = "dataset_published"
    DATASET_COLLECTED = "dataset_collected"
    MOCK_BUDGET_SET = "mock_budget_set"
    MOCK_PUBLISHED = "mock_published"


@dataclass(frozen=True)
class AuditRecord:
    """One event, as stored."""

    seq: int
    ts: str  # ISO 8601, UTC, microseconds
    event: str
    actor: str
    role: str
    objects: dict[str, Any] = field(default_factory=dict)  # package, job, datasets
    summary: dict[str, Any] = field(default_factory=dict)
    prev: str = GENESIS
    hash: str = ""  # SHA-256 of the whole frame (filled in when read or written)

    @property
    def timestamp(self) -> float:
        return datetime.fromisoformat(self.ts).timestamp()

    def to_data(self) -> dict[str, Any]:
        """The record as plain data (for JSON Lines, Parquet and the wire)."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "event": self.event,
            "actor": self.actor,
            "role": self.role,
            "objects": self.objects,
            "summary": self.summary,
            "prev": self.prev,
            "hash": self.hash,
        }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_body(record: AuditRecord) -> bytes:
    body = {k: v for k, v in record.to_data().items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_body(body: bytes, digest: str) -> AuditRecord:
    """A record from its body bytes (raises ValueError when they are not a well-formed record)."""
    data = json.loads(body)
    if not isinstance(data, dict) or set(data) != {"seq", "ts", "event", "actor", "role", "objects", "summary", "prev"}:
        raise ValueError("not an audit record")
    if (
        not isinstance(data["seq"], int)
        or not isinstance(data["objects"], dict)
        or not isinstance(data["summary"], dict)
    ):
        raise ValueError("not an audit record")
    return AuditRecord(**data, hash=digest)


def frame_hash(frame: bytes) -> str:
    return hashlib.sha256(frame).hexdigest()
