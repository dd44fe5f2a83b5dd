"""Verifying an audit log: online by the server, or offline by an auditor who trusts only the public key.

Every frame must parse, carry the next sequence number, chain to the previous frame's hash, and verify under
the audit key; every checkpoint must seal exactly the chain head before it. An anchor (a checkpoint the
auditor saved earlier) also catches truncation and rewriting by someone holding the key: the log must still
contain the anchored record, with the anchored hash. The report names the first bad sequence number.

Every ``result_checked`` record (an output checker's decision on a held result) must also carry a decision
whose Ed25519 signature verifies under the signing key of the certificate recorded with it, a certificate
naming that checker with the ``output_checker`` role (and, given the authority's certificate, issued by it):
the log proves who released what, without trusting the server that wrote it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from saferoom.audit.record import (
    GENESIS,
    HEADER,
    MAX_BODY,
    SIGNATURE_BYTES,
    SIGNATURE_PREFIX,
    AuditRecord,
    EventType,
    decode_body,
    frame_hash,
)
from saferoom.checks import Decision, SignedDecision, verify_decision
from saferoom.identity import certificate_signer

__all__ = [
    "Checkpoint",
    "Frame",
    "VerifyReport",
    "checkpoint_statement",
    "iter_frames",
    "load_public_key",
    "verify_log",
]

CHECKPOINT_PREFIX = b"saferoom-audit-checkpoint-v1\n"


def checkpoint_statement(covers: int, head: str) -> bytes:
    """What a checkpoint signature covers: the last sealed sequence number and that record's frame hash."""
    return CHECKPOINT_PREFIX + f"{covers}:{head}".encode()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that record ``covers`` had frame hash ``head``: what an auditor keeps."""

    covers: int
    head: str
    signature: bytes
    public_key: bytes  # raw Ed25519

    def verify(self, public_key: ed25519.Ed25519PublicKey) -> bool:
        try:
            public_key.verify(self.signature, checkpoint_statement(self.covers, self.head))
        except InvalidSignature:
            return False
        return True

    def to_json(self) -> str:
        return json.dumps(
            {
                "covers": self.covers,
                "head": self.head,
                "signature": base64.b64encode(self.signature).decode(),
                "public_key": base64.b64encode(self.public_key).decode(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(
                int(data["covers"]),
                str(data["head"]),
                base64.b64decode(data["signature"]),
                base64.b64decode(data["public_key"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a saferoom checkpoint: {exc}") from None


@dataclass(frozen=True)
class Frame:
    """One frame as read from the file."""

    offset: int
    record: AuditRecord
    body: bytes
    signature: bytes


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of a verification."""

    ok: bool
    records: int  # intact records before the first bad one
    checkpoints: int  # valid checkpoints among them
    last_seq: int
    head: str  # frame hash of the last intact record
    first_bad_seq: int | None = None
    reason: str = ""
    decisions: int = 0  # output checkers' signed decisions verified among them


class _Bad(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def iter_frames(data: bytes, start_offset: int = 0, first_seq: int = 1) -> Any:
    """Yield ``Frame``s; raise ``_Bad`` at the first frame that cannot be read (torn, garbled)."""
    offset, seq = start_offset, first_seq
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise _Bad(seq, f"the log ends with a torn record ({len(data) - offset} bytes at offset {offset})")
        (size,) = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + size + SIGNATURE_BYTES
        if size > MAX_BODY or end > len(data):
            raise _Bad(seq, f"record {seq} is torn or its length is damaged (offset {offset})")
        body = data[offset + HEADER.size : offset + HEADER.size + size]
        try:
            record = decode_body(body, frame_hash(data[offset:end]))
        except (ValueError, TypeError, UnicodeDecodeError):
            raise _Bad(seq, f"record {seq} is unreadable (offset {offset})") from None
        yield Frame(offset, record, body, data[end - SIGNATURE_BYTES : end])
        offset, seq = end, seq + 1


def load_public_key(raw_or_pem: bytes) -> ed25519.Ed25519PublicKey:
    if len(raw_or_pem) == 32:
        return ed25519.Ed25519PublicKey.from_public_bytes(raw_or_pem)
    key = serialization.load_pem_public_key(raw_or_pem)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the audit key is not an Ed25519 public key")
    return key


def verify_log(
    data: bytes,
    public_key: ed25519.Ed25519PublicKey,
    anchors: tuple[Checkpoint, ...] = (),
    signatures_from: int = 1,
    ca_pem: bytes | None = None,
    start: Checkpoint | None = None,
) -> VerifyReport:
    """Verify a whole log. ``signatures_from`` skips record signatures before that seq (a fast start-up check
    when an earlier run verified them); chain, order and checkpoints are always checked in full, and so are
    output checkers' decisions (against ``ca_pem``, the authority's certificate, when given).

    ``start``: ``data`` is not the whole log but what follows the record a checkpoint sealed (archived later
    segments): its first record must be ``start.covers + 1`` and chain to ``start.head``. The caller checks
    that ``start`` is signed by the key (``Checkpoint.verify``)."""
    records = checkpoints = decisions = 0
    prev = GENESIS
    if start is not None:
        records, prev = start.covers, start.head
    base = records
    anchored = {a.covers: a for a in anchors}
    previous: Frame | None = None
    try:
        for frame in iter_frames(data, first_seq=records + 1):
            record, seq = frame.record, records + 1
            if record.seq != seq:
                raise _Bad(seq, f"expected record {seq} but found {record.seq}: records were removed or reordered")
            if record.prev != prev:
                # The record before may be the one changed (its signature was not checked yet): name it if so.
                if previous is not None and not _signed(previous, public_key):
                    raise _Bad(seq - 1, f"the signature of record {seq - 1} does not verify: its bytes were changed")
                raise _Bad(seq, f"record {seq} does not chain to the record before it")
            if seq >= signatures_from or record.event == EventType.CHECKPOINT:
                try:
                    public_key.verify(frame.signature, SIGNATURE_PREFIX + frame.body)
                except InvalidSignature:
                    raise _Bad(seq, f"the signature of record {seq} does not verify under the audit key") from None
            if record.event == EventType.CHECKPOINT:
                _check_checkpoint(record, prev, frame, public_key)
                checkpoints += 1
            if record.event == EventType.RESULT_CHECKED:
                _check_decision(record, ca_pem)
                decisions += 1
            anchor = anchored.get(seq)
            if anchor is not None and anchor.head != record.hash:
                raise _Bad(seq, f"record {seq} differs from the saved checkpoint: the log was rewritten")
            prev, records, previous = record.hash, seq, frame
        for covers in sorted(anchored):
            if covers > records:
                raise _Bad(records + 1, f"the log ends at record {records} but a checkpoint covers {covers}: truncated")
    except _Bad as bad:
        intact = min(records, bad.seq - 1)
        return VerifyReport(False, intact - base, checkpoints, intact, prev, bad.seq, bad.reason, decisions)
    return VerifyReport(True, records - base, checkpoints, records, prev, decisions=decisions)


def _check_decision(record: AuditRecord, ca_pem: bytes | None) -> None:
    """An output checker's decision must verify under the key of the checker's recorded certificate."""
    summary = record.summary
    try:
        decision = SignedDecision(
            str(record.objects["job"]),
            str(summary["result_hash"]),
            Decision(summary["decision"]),
            str(summary["reason"]),
            str(summary["checker"]),
            int(summary["decided_at"]),
            bytes.fromhex(str(summary["signature"])),
        )
        name, roles, key = certificate_signer(str(summary["certificate"]).encode("ascii"), ca_pem)
    except (KeyError, ValueError, TypeError, UnicodeError):
        raise _Bad(record.seq, f"decision {record.seq} is malformed or its certificate unusable") from None
    if name != decision.checker or name != record.actor or "output_checker" not in roles:
        raise _Bad(record.seq, f"decision {record.seq} was not made by the output checker it names")
    if not verify_decision(decision, key):
        raise _Bad(record.seq, f"the signature of decision {record.seq} does not verify under {name}'s key")


def _signed(frame: Frame, public_key: ed25519.Ed25519PublicKey) -> bool:
    try:
        public_key.verify(frame.signature, SIGNATURE_PREFIX + frame.body)
    except InvalidSignature:
        return False
    return True


def _check_checkpoint(record: AuditRecord, prev: str, frame: Frame, public_key: ed25519.Ed25519PublicKey) -> None:
    summary = record.summary
    try:
        statement = Checkpoint(
            int(summary["covers"]), str(summary["head"]), base64.b64decode(summary["signature"]), b""
        )
    except (KeyError, ValueError, TypeError):
        raise _Bad(record.seq, f"checkpoint {record.seq} is malformed") from None
    if statement.covers != record.seq - 1 or statement.head != prev or not statement.verify(public_key):
        raise _Bad(record.seq, f"checkpoint {record.seq} does not seal the chain before it")


def read_checkpoint_file(path: Path) -> Checkpoint:
    return Checkpoint.from_json(path.read_text(encoding="utf-8"))
