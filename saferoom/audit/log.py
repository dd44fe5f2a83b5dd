"""The audit log: one writer appending signed, hash-chained records, each fsynced before it returns.

Opening the log verifies it (chain, order, checkpoints, and the signatures of records newer than the last
checkpoint kept in SQLite) and refuses to start on any defect: a torn last record, a broken chain, or a log
shorter than its last checkpoint. Nothing is silently dropped or repaired; ``quarantine_torn_tail`` is the one,
explicit, recorded way past a torn last record. A checkpoint is written every ``checkpoint_every`` records, on
request, and at close; each is also kept in SQLite, so truncating the file is caught at the next start.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from saferoom.audit.record import (
    GENESIS,
    HEADER,
    SIGNATURE_PREFIX,
    AuditRecord,
    EventType,
    encode_body,
    frame_hash,
    now_iso,
)
from saferoom.audit.verify import Checkpoint, VerifyReport, _Bad, checkpoint_statement, iter_frames, verify_log
from saferoom.errors import AuditLogDamaged
from saferoom.store.database import Database

__all__ = ["AuditFilter", "AuditLog", "quarantine_torn_tail"]

LOG_FILE, KEY_FILE, PUBLIC_KEY_FILE = "audit.log", "audit.key", "audit.pub"
_READ_WINDOW = 4 * 2**20
# (event, actor, role, objects, summary)
Entry = tuple[EventType, str, str, dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class AuditFilter:
    """Which records a reader wants; empty fields match everything."""

    after_seq: int = 0
    since: float | None = None  # UTC seconds, inclusive
    until: float | None = None  # UTC seconds, exclusive
    actor: str = ""
    events: frozenset[str] = frozenset()
    package: str = ""
    job: str = ""

    def matches(self, r: AuditRecord) -> bool:
        if r.seq <= self.after_seq or (self.events and r.event not in self.events):
            return False
        if (self.actor and r.actor != self.actor) or (self.job and r.objects.get("job") != self.job):
            return False
        if self.package and r.objects.get("package") != self.package:
            return False
        if self.since is not None or self.until is not None:
            ts = r.timestamp
            if (self.since is not None and ts < self.since) or (self.until is not None and ts >= self.until):
                return False
        return True


def _load_or_create_key(directory: Path) -> ed25519.Ed25519PrivateKey:
    path = directory / KEY_FILE
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (directory / PUBLIC_KEY_FILE).write_bytes(public)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise AuditLogDamaged(f"{KEY_FILE} is not an Ed25519 key")
    return loaded


class AuditLog:
    """Append-only, tamper-evident record of every submission, decision, run and release."""

    def __init__(self, directory: Path, db: Database, checkpoint_every: int = 1000) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / LOG_FILE
        self._db = db
        self._checkpoint_every = max(1, checkpoint_every)
        self._key = _load_or_create_key(directory)
        self.public_key = self._key.public_key()
        self.public_key_raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._offsets: list[int] = []  # file offset of record seq = index + 1
        self._last_seq, self._head, self._size, self._since_checkpoint = 0, GENESIS, 0, 0
        self._broken = ""
        self._open_and_verify()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    # ------------------------------------------------------------------ start-up

    def _open_and_verify(self) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        stored = self._stored_checkpoint()
        report = verify_log(
            data,
            self.public_key,
            anchors=(stored,) if stored else (),
            signatures_from=(stored.covers + 1) if stored else 1,
        )
        if not report.ok:
            hint = " (`saferoom audit recover` quarantines a torn last record)" if "torn" in report.reason else ""
            raise AuditLogDamaged(
                f"the audit log failed verification at record {report.first_bad_seq}: {report.reason}{hint}"
            )
        for frame in iter_frames(data):
            self._offsets.append(frame.offset)
            if frame.record.event == EventType.CHECKPOINT:
                self._since_checkpoint = 0
            else:
                self._since_checkpoint += 1
        self._last_seq, self._head, self._size = report.last_seq, report.head, len(data)

    def _stored_checkpoint(self) -> Checkpoint | None:
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT covers, head, signature FROM audit_checkpoints ORDER BY covers DESC LIMIT 1"
            ).fetchone()
        return (
            None
            if row is None
            else Checkpoint(row["covers"], row["head"], bytes(row["signature"]), self.public_key_raw)
        )

    # ------------------------------------------------------------------ writing

    def append(
        self,
        event: EventType,
        actor: str,
        role: str,
        objects: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        durable: bool = True,
    ) -> AuditRecord:
        """Append one record; it is on disk (fsynced) when this returns.

        ``durable=False`` is for records that acknowledge nothing to anyone (a job starting): written at once,
        so a crash of the process loses nothing, and fsynced with the next durable record.
        """
        return self.append_all([(event, actor, role, objects or {}, summary or {})], durable)[0]

    def append_all(self, entries: list[Entry], durable: bool = True) -> list[AuditRecord]:
        """Append records that belong together with one write and one fsync; on disk when this returns."""
        with self._lock:
            records = self._write(entries, durable)
            if self._since_checkpoint >= self._checkpoint_every:
                self._write_checkpoint()
        return records

    def _write(self, entries: list[Entry], durable: bool = True) -> list[AuditRecord]:
        if self._fd is None or self._broken:
            raise AuditLogDamaged(self._broken or "the audit log is closed")
        records, frames = [], []
        seq, head, offset = self._last_seq, self._head, self._size
        for event, actor, role, objects, summary in entries:
            record = AuditRecord(seq + 1, now_iso(), event.value, actor, role, objects, summary, head)
            body = encode_body(record)
            frame = HEADER.pack(len(body)) + body + self._key.sign(SIGNATURE_PREFIX + body)
            record = replace(record, hash=frame_hash(frame))
            records.append((record, offset))
            frames.append(frame)
            seq, head, offset = record.seq, record.hash, offset + len(frame)
        data = b"".join(frames)
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError("short write")
            if durable:
                os.fdatasync(self._fd)  # also makes any earlier non-durable record durable
        except OSError as exc:  # the file may now end in a partial frame: never write after it
            self._broken = f"the audit log could not be written ({exc}); the server refuses actions until it is fixed"
            raise AuditLogDamaged(self._broken) from exc
        for record, frame_offset in records:
            self._offsets.append(frame_offset)
            checkpoint = record.event == EventType.CHECKPOINT
            self._since_checkpoint = 0 if checkpoint else self._since_checkpoint + 1
        self._last_seq, self._head, self._size = seq, head, offset
        self._appended.notify_all()
        return [r for r, _ in records]

    def _write_checkpoint(self) -> Checkpoint:
        covers, head = self._last_seq, self._head
        signature = self._key.sign(checkpoint_statement(covers, head))
        summary = {"covers": covers, "head": head, "signature": base64.b64encode(signature).decode()}
        self._write([(EventType.CHECKPOINT, "saferoom", "server", {}, summary)])
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO audit_checkpoints (covers, head, signature, created_at) VALUES (?, ?, ?, ?)",
                (covers, head, signature, time.time()),
            )
        return Checkpoint(covers, head, signature, self.public_key_raw)

    def checkpoint(self) -> Checkpoint:
        """A checkpoint sealing everything written so far (a new one only if records came since the last)."""
        with self._lock:
            stored = self._stored_checkpoint()
            if stored is not None and self._since_checkpoint == 0 and stored.covers == self._last_seq - 1:
                return stored
            return self._write_checkpoint()

    def close(self) -> None:
        """Seal the log with a checkpoint and close it (idempotent)."""
        with self._lock:
            if self._fd is None:
                return
            if self._since_checkpoint:
                self._write_checkpoint()
            os.close(self._fd)
            self._fd = None
            self._appended.notify_all()

    # ------------------------------------------------------------------ reading

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def read(self, wanted: AuditFilter, limit: int | None = None, upto_seq: int | None = None) -> Iterator[AuditRecord]:
        """Records matching ``wanted`` (up to ``upto_seq``, default: all written so far), oldest first."""
        with self._lock:
            last = self._last_seq if upto_seq is None else min(upto_seq, self._last_seq)
            if wanted.after_seq >= last:
                return
            start = self._offsets[wanted.after_seq]
            end = self._offsets[last] if last < len(self._offsets) else self._size
        count, seq = 0, wanted.after_seq
        with open(self.path, "rb") as f:
            f.seek(start)
            position = start
            while position < end:  # a window at a time: a long log is never read into memory whole
                window = f.read(min(_READ_WINDOW, end - position))
                consumed = 0
                try:
                    for frame in iter_frames(window, first_seq=seq + 1):
                        consumed = frame.offset + HEADER.size + len(frame.body) + len(frame.signature)
                        seq = frame.record.seq
                        if wanted.matches(frame.record):
                            yield frame.record
                            count += 1
                            if limit is not None and count >= limit:
                                return
                except _Bad as bad:
                    if consumed == 0 and len(window) == end - position:  # not a cut-off frame: damage
                        raise AuditLogDamaged(f"the audit log is damaged at record {bad.seq}: {bad.reason}") from None
                    if consumed == 0:
                        raise AuditLogDamaged(f"an audit record larger than {_READ_WINDOW} bytes") from None
                position += consumed
                f.seek(position)

    def follow(self, wanted: AuditFilter, stop: Callable[[], bool], poll_seconds: float = 1.0) -> Iterator[AuditRecord]:
        """Records matching ``wanted`` now and as they are appended, until ``stop()`` or the log closes."""
        after = wanted.after_seq
        while not stop():
            with self._lock:
                upto = self._last_seq
            yield from self.read(replace(wanted, after_seq=after), upto_seq=upto)
            after = max(after, upto)
            with self._lock:
                if self._fd is None:
                    return
                if self._last_seq <= after:
                    self._appended.wait(poll_seconds)

    def get(self, seq: int) -> AuditRecord | None:
        for record in self.read(AuditFilter(after_seq=seq - 1), limit=1):
            return record if record.seq == seq else None
        return None

    def verify(self, anchors: tuple[Checkpoint, ...] = ()) -> VerifyReport:
        """Verify the whole file on disk now (every signature), against the stored and given checkpoints,
        and against what this process knows it wrote."""
        with self._lock:
            known_seq, known_head = self._last_seq, self._head
            stored = self._stored_checkpoint()
        data = self.path.read_bytes()
        extra = (Checkpoint(known_seq, known_head, b"", self.public_key_raw),) if known_seq else ()
        all_anchors = (*anchors, *((stored,) if stored else ()), *extra)
        return verify_log(data, self.public_key, anchors=all_anchors)


def quarantine_torn_tail(directory: Path, db: Database) -> tuple[int, str] | None:
    """Move a torn last record aside (``audit.log.torn-<offset>``) and record that it was done, signed.

    Returns (bytes moved, their SHA-256), or None if the log had no torn tail. Anything else wrong with the
    log is refused: only a record cut short by a crash is set aside, and never silently.
    """
    path = directory / LOG_FILE
    data = path.read_bytes() if path.exists() else b""
    good = 0
    try:
        for frame in iter_frames(data):
            good = frame.offset + HEADER.size + len(frame.body) + len(frame.signature)
    except _Bad as bad:
        if "torn" not in bad.reason:
            raise AuditLogDamaged(f"the audit log is damaged, not torn: {bad.reason}") from None
    if good == len(data):
        return None
    public_key = _load_or_create_key(directory).public_key()
    before = verify_log(data[:good], public_key)
    if not before.ok:
        raise AuditLogDamaged(f"the audit log is damaged, not torn: record {before.first_bad_seq}: {before.reason}")
    tail = data[good:]
    (directory / f"{LOG_FILE}.torn-{good}").write_bytes(tail)
    with open(path, "r+b") as f:
        f.truncate(good)
        f.flush()
        os.fsync(f.fileno())
    log = AuditLog(directory, db)
    digest = frame_hash(tail)
    log.append(
        EventType.LOG_TAIL_QUARANTINED,
        "operator",
        "operator",
        {},
        {"bytes": len(tail), "sha256": digest, "offset": good, "file": f"{LOG_FILE}.torn-{good}"},
    )
    log.close()
    return len(tail), digest
