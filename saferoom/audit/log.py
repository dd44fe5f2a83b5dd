"""The audit log: one writer appending signed, hash-chained records, each fsynced before it returns.

Opening the log verifies it (chain, order, checkpoints, and the signatures of records newer than the last
checkpoint kept in SQLite) and refuses to start on any defect: a torn last record, a broken chain, or a log
shorter than its last checkpoint. Nothing is silently dropped or repaired; ``quarantine_torn_tail`` is the one,
explicit, recorded way past a torn last record. A checkpoint is written every ``checkpoint_every`` records, on
request, and at close; each is also kept in SQLite, so truncating the file is caught at the next start.

**One source of truth: the outbox.** Every change and its records are one unit (``AuditLog.commit``): the
records are inserted into ``audit_outbox`` in the same SQLite transaction as the change, then appended to the
log and fsynced before ``commit`` returns (so before anything is acknowledged); once they are on disk they are
deleted from the outbox and ``audit_head`` is set to the log's head, in one more transaction. Appending drains
the whole outbox in id order, so concurrent commits share one write and one fsync, and the log's order is the
order in which SQLite committed. A record that describes no change (``append``) is a commit of nothing.

Opening the log then reconciles it with the outbox, idempotently: the log must reach the head SQLite recorded
(with the same hash), the log's records after that head must be the first records of the outbox (a crash
between appending them and deleting them from the outbox: they are not appended twice), and the rest of the
outbox is appended. Anything else (a log cut after the stored head, records the database never committed, a new
database beside a non-empty log) is refused, naming what is wrong (``StateDamaged``).

**Lock order** (a thread holding one may take only those below it, never one above):

1. ``JobService``'s scheduler condition and ``IdentityEvents``' lock (never held across a store or log call
   except IdentityEvents' own appends);
2. ``AuditLog._lock``: the log file, the outbox drain, checkpoints;
3. ``Database._lock``: the connection and its transaction.

So a transaction never waits for the log: ``commit`` runs its transaction first, releases the database, and only
then takes the log's lock to drain the outbox, taking the database's again inside for the outbox read, the
head and the checkpoint row. Draining or checkpointing while this thread holds the database lock (inside a
transaction) is a programming error and raises at once rather than deadlocking or nesting a transaction.

**Disk full.** A write that fails is cut back to the last whole record (``ftruncate``), so the file never ends
in a torn record, and the action is refused with ``StorageFull`` (RESOURCE_EXHAUSTED); its change is committed
with its records in the outbox and takes effect once they are appended (jobs do not start before). While the
outbox is not empty, every ``commit`` first tries to drain it and refuses before changing anything if it still
cannot, so nothing is acknowledged that is not recorded; the first commit after space returns drains it.

**Segments.** With ``segment_bytes`` set, the active file is sealed into ``segments/`` once it has grown past
that size, after a durable write, at a record boundary (``saferoom.audit.segments``: one chain through all the
files; a crash at any moment of the rotation leaves a log that reads back the same). Readers and verification
see the files as one log; a failed rotation leaves the server refusing actions (``AuditLogDamaged``) rather than
appending somewhere it cannot account for.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from saferoom.audit.outbox import Entry, canonical, plan_reconcile, read_head, read_outbox
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
from saferoom.audit.segments import ACTIVE_FILE, Piece, fsync_dir, log_pieces, read_log, seal_active
from saferoom.audit.verify import Checkpoint, VerifyReport, _Bad, checkpoint_statement, iter_frames, verify_log
from saferoom.errors import AuditLogDamaged, SaferoomError, StateDamaged, StorageFull
from saferoom.store.database import Database

__all__ = ["AuditFilter", "AuditLog", "Entry", "quarantine_torn_tail"]

_log = logging.getLogger(__name__)
T = TypeVar("T")
_RECENT = 4096  # records kept in memory by outbox id, for callers whose records another thread appended

LOG_FILE, KEY_FILE, PUBLIC_KEY_FILE = ACTIVE_FILE, "audit.key", "audit.pub"
_READ_WINDOW = 4 * 2**20


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
        if self.actor and r.actor != self.actor:
            return False
        # A job id or package hash may be given by its first characters, as lists show them.
        if self.job and not str(r.objects.get("job", "")).startswith(self.job):
            return False
        if self.package and not str(r.objects.get("package", "")).startswith(self.package):
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

    def __init__(
        self,
        directory: Path,
        db: Database,
        checkpoint_every: int = 1000,
        segment_bytes: int = 0,
        observe: Callable[[int, float | None], None] | None = None,
        anchors: tuple[Checkpoint, ...] = (),
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / LOG_FILE
        self._db = db
        self._checkpoint_every = max(1, checkpoint_every)
        self._segment_bytes = max(0, segment_bytes)  # 0: one file, never rotated
        self._anchors = anchors  # auditors' saved checkpoints the log must still hold (``audit_anchor``)
        # Told (records appended, seconds their fsync took or None) after each write: the metrics' hook.
        self._observe = observe or (lambda records, fsync: None)
        self._sealed: list[Piece] = []  # the sealed segments, in order
        self._active_base = 0  # offset in the whole log of the active file's first byte
        self._active_first_seq = 1  # seq of the active file's first record (if it has one)
        self._key = _load_or_create_key(directory)
        self.public_key = self._key.public_key()
        self.public_key_raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._offsets: list[int] = []  # file offset of record seq = index + 1
        self._last_seq, self._head, self._size, self._since_checkpoint = 0, GENESIS, 0, 0
        self._broken = ""
        self._released: dict[str, str] = {}  # job id -> result hash of its result_released record
        self._held: dict[str, str] = {}  # job id -> result hash of its result_held record
        self._flushed_id = 0  # every outbox row up to this id is in the log
        self._synced_id = 0  # ... and fsynced
        self._settled_id = 0  # ... and deleted from the outbox (audit_head set)
        self._recent: dict[int, AuditRecord] = {}
        self._pending = False  # the outbox may hold rows that could not be appended yet (a full disk)
        records = self._open_and_verify()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self._reconcile(records)
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    # ------------------------------------------------------------------ start-up

    def _open_and_verify(self) -> list[AuditRecord]:
        pieces = log_pieces(self.directory)
        data, problem = read_log(pieces)
        if problem:
            raise AuditLogDamaged(f"the audit log's segments are damaged: {problem}")
        self._sealed = [piece for piece in pieces if piece.first_seq]
        self._active_base = sum(piece.size for piece in self._sealed)
        stored = self._stored_checkpoint()
        for anchor in self._anchors:
            if not anchor.verify(self.public_key):
                raise AuditLogDamaged("the auditor's checkpoint (audit_anchor) is not signed by this log's key")
        report = verify_log(
            data,
            self.public_key,
            anchors=((stored,) if stored else ()) + self._anchors,
            signatures_from=(stored.covers + 1) if stored else 1,
        )
        if not report.ok:
            hint = " (`saferoom audit recover` quarantines a torn last record)" if "torn" in report.reason else ""
            raise AuditLogDamaged(
                f"the audit log failed verification at record {report.first_bad_seq}: {report.reason}{hint}"
            )
        records = []
        for frame in iter_frames(data):
            self._offsets.append(frame.offset)
            records.append(frame.record)
            if frame.offset < self._active_base:
                self._active_first_seq = frame.record.seq + 1
            self._index(frame.record)
            if frame.record.event == EventType.CHECKPOINT:
                self._since_checkpoint = 0
            else:
                self._since_checkpoint += 1
        self._last_seq, self._head, self._size = report.last_seq, report.head, len(data)
        return records

    def _index(self, record: AuditRecord) -> None:
        if record.event == EventType.RESULT_RELEASED:
            self._released[str(record.objects.get("job", ""))] = str(record.summary.get("result_hash", ""))
        elif record.event == EventType.RESULT_HELD:
            self._held[str(record.objects.get("job", ""))] = str(record.summary.get("result_hash", ""))

    def _reconcile(self, records: list[AuditRecord]) -> None:
        """Bring the log up to what SQLite committed: append what the outbox holds that the log does not."""
        with self._db.reading() as conn:
            head = read_head(conn)
            outbox = read_outbox(conn)
        done, problem = plan_reconcile(records, head, outbox, self._db.created, self._db.path, self.path)
        if problem:
            raise StateDamaged(problem)
        if done:
            self._flushed_id = self._synced_id = outbox[done - 1].id
        with self._lock:
            self._drain(durable=True)
            if self._settled_id < self._synced_id or (head is not None and head[0] < 0):
                self._settle()

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
        return self.commit(lambda conn: None, lambda _: entries, durable)[1]

    def commit(
        self,
        change: Callable[[sqlite3.Connection], T],
        records: Callable[[T], Sequence[Entry]],
        durable: bool = True,
    ) -> tuple[T, list[AuditRecord]]:
        """Run ``change`` in one SQLite transaction together with its audit records, then append them.

        ``records`` gets what ``change`` returned and gives the records that describe it (none: nothing to
        record). When this returns, the change is committed and its records are in the log (fsynced unless
        ``durable`` is False: a record that acknowledges nothing to anyone). If they cannot be appended
        (``StorageFull``), the change stays committed with its records in the outbox and takes effect when they
        are appended; the caller must not acknowledge it. Returns what ``change`` returned and the records.
        This is the one way to change state that is audited: a new mutation is one call of it.
        """
        self._check_order()
        if self._pending:  # the last append failed: refuse before changing anything if it still fails
            with self._lock:
                self._drain(durable=True)
        with self._db.transaction() as conn:
            result = change(conn)
            ids = [
                int(
                    conn.execute(
                        "INSERT INTO audit_outbox (event, actor, role, objects_json, summary_json)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (event.value, actor, role, canonical(objects), canonical(summary)),
                    ).lastrowid
                    or 0
                )
                for event, actor, role, objects, summary in records(result)
            ]
        if not ids:
            return result, []
        with self._lock:
            if self._flushed_id < ids[-1] or (durable and self._synced_id < ids[-1]):
                self._drain(durable)
            written = [self._recent.get(i) for i in ids]
        return result, [r for r in written if r is not None]

    def flush(self) -> None:
        """Append (and fsync) whatever the outbox still holds; raises ``StorageFull`` while it cannot."""
        self._check_order()
        with self._lock:
            self._drain(durable=True)

    @property
    def segments(self) -> int:
        """How many sealed segments the log has (besides the active file)."""
        return len(self._sealed)

    @property
    def writable(self) -> bool:
        """Whether the log takes records now: open, not broken, nothing waiting in the outbox (readiness)."""
        return self._fd is not None and not self._broken and not self._pending

    @property
    def pending(self) -> bool:
        """Whether records wait in the outbox because appending them failed."""
        return self._pending

    def released_hash(self, job_id: str) -> str | None:
        """The result hash the log's ``result_released`` record of ``job_id`` pins (None: no such record)."""
        return self._pinned(self._released, job_id)

    def held_hash(self, job_id: str) -> str | None:
        """The result hash the log's ``result_held`` record of ``job_id`` pins (None: no such record)."""
        return self._pinned(self._held, job_id)

    def _pinned(self, index: dict[str, str], job_id: str) -> str | None:
        """``index[job_id]``, settled: a record committed with its change but not appended yet (the committing
        thread is about to) is appended first, so whoever saw the change also sees its record. Raises
        ``StorageFull`` when it cannot be appended now."""
        self._check_order()
        with self._lock:
            found = index.get(job_id)
            if found is None and not self._pending:
                self._drain(durable=True)
                found = index.get(job_id)
            return found

    def _check_order(self) -> None:
        if self._db.held_by_me():
            raise RuntimeError("lock order: the audit log is appended to only outside a database transaction")

    def _drain(self, durable: bool) -> None:
        """Append the outbox's rows (under the log's lock), then settle them; raises if they cannot be written."""
        with self._db.reading() as conn:
            rows = read_outbox(conn, self._flushed_id)
        if rows:
            try:
                written = self._write([row.entry() for row in rows], durable)
            except BaseException:
                self._pending = True
                raise
            for row, record in zip(rows, written, strict=True):
                self._recent[row.id] = record
            if len(self._recent) > 2 * _RECENT:
                for key in sorted(self._recent)[: len(self._recent) - _RECENT]:
                    del self._recent[key]
            self._flushed_id = rows[-1].id
            if durable:
                self._synced_id = self._flushed_id
        elif durable and self._synced_id < self._flushed_id:
            self._sync()
            self._synced_id = self._flushed_id
        self._pending = False
        if self._settled_id < self._synced_id:
            self._settle()
        if self._since_checkpoint >= self._checkpoint_every:
            try:
                self._write_checkpoint()
            except (StorageFull, StateDamaged, AuditLogDamaged) as exc:  # the records are written; retried later
                _log.error("the automatic audit checkpoint failed: %s", exc.message)

    def _sync(self) -> None:
        if self._fd is None:
            raise AuditLogDamaged("the audit log is closed")
        try:
            began = time.perf_counter()
            os.fdatasync(self._fd)
            self._observe(0, time.perf_counter() - began)
        except OSError as exc:
            self._broken = f"the audit log could not be made durable ({exc}); the server refuses actions"
            raise AuditLogDamaged(self._broken) from exc

    def _settle(self, extra: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Delete what is in the log (fsynced) from the outbox and record the head, in one transaction.

        A failure here loses nothing (the records are in the log; start-up matches them to the outbox), so it
        is committed without waiting for the disk, unless it stores a checkpoint (``extra``).
        """
        upto, seq, head = self._synced_id, self._last_seq, self._head
        try:
            # Not fsynced: if a power cut loses it, the rows are still in the outbox and start-up matches them.
            with self._db.transaction(durable=extra is not None) as conn:
                conn.execute("DELETE FROM audit_outbox WHERE id <= ?", (upto,))
                conn.execute("INSERT OR REPLACE INTO audit_head (id, seq, hash) VALUES (1, ?, ?)", (seq, head))
                if extra is not None:
                    extra(conn)
        except SaferoomError as exc:
            _log.error("the audit outbox could not be settled (records are in the log): %s", exc.message)
            return
        self._settled_id = upto

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
        fsync_seconds = None
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write")
            if durable:
                began = time.perf_counter()
                os.fdatasync(self._fd)  # also makes any earlier non-durable record durable
                fsync_seconds = time.perf_counter() - began
        except OSError as exc:  # the file may now end in a partial frame: cut it back to the last whole record
            try:
                os.ftruncate(self._fd, self._size - self._active_base)
                os.fdatasync(self._fd)
            except OSError as again:
                self._broken = (
                    f"the audit log could not be written ({exc}) nor cut back to its last whole record ({again}); "
                    "the server refuses actions until it is fixed"
                )
                raise AuditLogDamaged(self._broken) from exc
            _log.error("the audit log %s could not be written: %s", self.path, exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StorageFull(
                    "the disk holding the audit log is full: the action was not acknowledged; try again later"
                ) from None
            raise AuditLogDamaged("the audit log could not be written: the action was not acknowledged") from None
        for record, frame_offset in records:
            self._index(record)
            self._offsets.append(frame_offset)
            checkpoint = record.event == EventType.CHECKPOINT
            self._since_checkpoint = 0 if checkpoint else self._since_checkpoint + 1
        self._last_seq, self._head, self._size = seq, head, offset
        self._appended.notify_all()
        self._observe(len(records), fsync_seconds)
        if durable and self._segment_bytes and self._size - self._active_base >= self._segment_bytes:
            self._rotate()
        return [r for r, _ in records]

    def _rotate(self) -> None:
        """Seal the active file (everything in it is fsynced) and start an empty one. Never raises: the records
        just written are on disk whatever happens here, and the caller must account for them; a failure leaves
        the log broken (every later action refused) or, if the rename did not happen, still appending to the
        same file."""
        if self._fd is None:
            return
        first, size = self._active_first_seq, self._size - self._active_base
        try:
            sealed = seal_active(self.directory, first)
        except OSError as exc:
            _log.error("the audit log could not be rotated (it grows on in %s): %s", self.path, exc)
            return
        os.close(self._fd)
        self._fd = None
        self._sealed.append(Piece(sealed, self._active_base, size, first))
        self._active_base, self._active_first_seq = self._size, self._last_seq + 1
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fsync_dir(self.directory)
        except OSError as exc:
            self._broken = f"the audit log's new segment could not be created ({exc}); the server refuses actions"
            _log.error("%s", self._broken)
            return
        _log.info("audit log segment %s sealed (%d bytes)", sealed.name, size)

    def _write_checkpoint(self) -> Checkpoint:
        covers, head = self._last_seq, self._head
        signature = self._key.sign(checkpoint_statement(covers, head))
        summary = {"covers": covers, "head": head, "signature": base64.b64encode(signature).decode()}
        self._write([(EventType.CHECKPOINT, "saferoom", "server", {}, summary)])
        self._synced_id = self._flushed_id  # the checkpoint's fsync made every earlier record durable

        def store(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO audit_checkpoints (covers, head, signature, created_at) VALUES (?, ?, ?, ?)",
                (covers, head, signature, time.time()),
            )

        self._settle(store)
        return Checkpoint(covers, head, signature, self.public_key_raw)

    def checkpoint(self) -> Checkpoint:
        """A checkpoint sealing everything written so far (a new one only if records came since the last)."""
        self._check_order()
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
            try:
                self._drain(durable=True)
                if self._since_checkpoint:
                    self._write_checkpoint()
            except (StorageFull, AuditLogDamaged, StateDamaged) as exc:  # what is left waits in the outbox
                _log.error("the audit log was closed without its final checkpoint: %s", exc.message)
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
            files = self._open_files(start, end)  # opened under the lock: a rotation cannot move them away
        count, seq = 0, wanted.after_seq
        try:
            for f, position, stop in files:  # no frame spans two files
                f.seek(position)
                while position < stop:  # a window at a time: a long log is never read into memory whole
                    window = f.read(min(_READ_WINDOW, stop - position))
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
                        if consumed == 0 and len(window) == stop - position:  # not a cut-off frame: damage
                            raise AuditLogDamaged(
                                f"the audit log is damaged at record {bad.seq}: {bad.reason}"
                            ) from None
                        if consumed == 0:
                            raise AuditLogDamaged(f"an audit record larger than {_READ_WINDOW} bytes") from None
                    position += consumed
                    f.seek(position)
        finally:
            for f, _, _ in files:
                f.close()

    def _pieces(self) -> list[Piece]:
        """Every file of the log as this process knows it (called with the lock held)."""
        return [*self._sealed, Piece(self.path, self._active_base, self._size - self._active_base, 0)]

    def _open_files(self, start: int, end: int) -> list[tuple[Any, int, int]]:
        """The files holding bytes [start, end) of the log, opened, each with the range to read in it."""
        opened: list[tuple[Any, int, int]] = []
        try:
            for piece in self._pieces():
                lo, hi = max(start, piece.base), min(end, piece.base + piece.size)
                if lo < hi:
                    opened.append((open(piece.path, "rb"), lo - piece.base, hi - piece.base))  # noqa: SIM115
        except OSError as exc:
            for f, _, _ in opened:
                f.close()
            raise AuditLogDamaged(f"a file of the audit log cannot be read: {exc.strerror}") from None
        return opened

    def snapshot(self) -> tuple[bytes, int, str]:
        """The whole log as written so far (every file, up to a record boundary), its last seq and head."""
        with self._lock:
            known_seq, known_head, size = self._last_seq, self._head, self._size
            files = self._open_files(0, size)
        try:
            chunks = []
            for f, lo, hi in files:
                f.seek(lo)
                chunks.append(f.read(hi - lo))
        finally:
            for f, _, _ in files:
                f.close()
        return b"".join(chunks), known_seq, known_head

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
            stored = self._stored_checkpoint()
        data, known_seq, known_head = self.snapshot()
        extra = (Checkpoint(known_seq, known_head, b"", self.public_key_raw),) if known_seq else ()
        all_anchors = (*anchors, *((stored,) if stored else ()), *extra)
        return verify_log(data, self.public_key, anchors=all_anchors)


def quarantine_torn_tail(directory: Path, db: Database) -> tuple[int, str] | None:
    """Move a torn last record aside (``audit.log.torn-<offset>``) and record that it was done, signed.

    Returns (bytes moved, their SHA-256), or None if the log had no torn tail. Anything else wrong with the
    log is refused: only a record cut short by a crash is set aside, and never silently.
    """
    path = directory / LOG_FILE
    pieces = log_pieces(directory)
    data, problem = read_log(pieces)
    if problem:
        raise AuditLogDamaged(f"the audit log's segments are damaged, not torn: {problem}")
    base = sum(piece.size for piece in pieces if piece.first_seq)  # a torn record can only be in the active file
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
        f.truncate(good - base)
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
