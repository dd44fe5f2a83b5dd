"""Backing up a state directory while the server serves, and restoring it: ``saferoom state backup/restore``.

A backup is consistent when its database and its log tell one story, as a crash would have left them:

1. the database is copied with SQLite's online backup API, in one step: a snapshot of one committed moment,
   taken while the server goes on writing (WAL readers do not block the writer);
2. the log is copied *after* it, and cut at the snapshot's story: up to the head the snapshot recorded
   (``audit_head``, migration 8), plus the records right after it that the snapshot's outbox holds (appended
   but not yet settled when the snapshot was taken) and checkpoints among them; anything later describes
   changes the snapshot does not have. The log only grows and everything up to the head was appended before the
   snapshot settled it, so the copy always reaches the head (a rotation racing the copy is retried). What the
   outbox holds beyond the cut is appended by the restored server at its start, as after a crash;
3. package files the snapshot names, and the audit keys (the restored server signs on with the same key: the
   backup directory holds a secret and is created owner-only);
4. ``backup.json``: what was copied, with the SHA-256 of every file, checked again by ``restore``.

Results are rows of the database, so they come with it. ``restore`` refuses a non-empty target, checks every
file against ``backup.json``, copies them, and runs ``saferoom state check`` on the copy; given an auditor's
saved checkpoint it also refuses a backup whose log ends before what that checkpoint covers (and the server,
started with ``audit_anchor``, refuses the same).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saferoom import __version__
from saferoom.audit.log import KEY_FILE, PUBLIC_KEY_FILE
from saferoom.audit.outbox import read_head, read_outbox
from saferoom.audit.record import HEADER, EventType
from saferoom.audit.segments import ACTIVE_FILE, SEGMENTS_DIR, Piece, log_pieces, read_log, segment_name
from saferoom.audit.verify import Checkpoint, _Bad, iter_frames, load_public_key, verify_log
from saferoom.errors import FailedPrecondition, InvalidRequest, StateDamaged
from saferoom.store.database import SCHEMA_VERSION

__all__ = ["BackupSummary", "backup_state", "restore_state"]

MANIFEST = "backup.json"
DB_FILE = "saferoom.db"
_ATTEMPTS = 5


@dataclass(frozen=True)
class BackupSummary:
    """What a backup holds."""

    records: int  # the log's last record in the backup
    head: str
    outbox: int  # records committed but not yet in the backup's log (appended when it is restored)
    packages: int
    files: int


def backup_state(state_dir: Path, target: Path) -> BackupSummary:
    """Copy ``state_dir`` (a running server's, or a stopped one's) into the new directory ``target``."""
    if not (state_dir / DB_FILE).exists():
        raise InvalidRequest(f"{state_dir} holds no {DB_FILE}: not a saferoom state directory")
    _empty_target(target)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.chmod(0o700)
    db_copy = target / DB_FILE
    source = sqlite3.connect(state_dir / DB_FILE, timeout=30)  # only read; WAL: the server writes on meanwhile
    copy = sqlite3.connect(db_copy)
    try:
        source.backup(copy)  # pages=-1: one step, one consistent snapshot
        copy.row_factory = sqlite3.Row
        head = read_head(copy)
        outbox = read_outbox(copy)
        packages = [str(r[0]) for r in copy.execute("SELECT hash FROM packages ORDER BY hash")]
    finally:
        copy.close()
        source.close()
    if head is None or head[0] < 0:
        raise StateDamaged("the database has no known audit head: start the server once before backing it up")
    audit_dir = state_dir / "audit"
    kept, pieces, data = _log_upto(audit_dir, head, outbox)
    files = [DB_FILE, *_write_log(target / "audit", pieces, data, kept)]
    for name in (KEY_FILE, PUBLIC_KEY_FILE):
        shutil.copy2(audit_dir / name, target / "audit" / name)
        files.append(f"audit/{name}")
    for digest in packages:
        relative = f"packages/{digest[:2]}/{digest}.zip"
        (target / relative).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(state_dir / relative, target / relative)
        files.append(relative)
    records = _count(data[:kept])
    appended = sum(1 for _ in _after_head(data[:kept], head[0]))
    manifest: dict[str, Any] = {
        "saferoom": __version__,
        "schema_version": SCHEMA_VERSION,
        "created_at": time.time(),
        "audit": {"records": records, "head": _last_hash(data[:kept]), "db_head": head[0]},
        "files": {name: _sha256(target / name) for name in files},
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    _fsync_tree(target)
    return BackupSummary(records, manifest["audit"]["head"], len(outbox) - appended, len(packages), len(files))


def restore_state(backup: Path, state_dir: Path, anchors: tuple[Checkpoint, ...] = ()) -> list[str]:
    """Copy a backup into the new state directory ``state_dir``; returns ``saferoom state check``'s problems
    on the copy (empty: it is consistent). Raises if the backup is damaged or ends before an anchor."""
    from saferoom.audit.crosscheck import check_state_dir

    try:
        manifest = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, str] = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"{backup} is not a saferoom backup ({MANIFEST}: {exc})") from None
    if int(manifest.get("schema_version", 0)) > SCHEMA_VERSION:
        raise FailedPrecondition(
            f"the backup was made by a newer saferoom (schema {manifest['schema_version']}, this one knows up to "
            f"{SCHEMA_VERSION}): restore it with that version"
        )
    for name, digest in sorted(files.items()):
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise StateDamaged(f"the backup names a file outside itself: {name[:80]}")
        path = backup / name
        if not path.is_file() or _sha256(path) != digest:
            raise StateDamaged(f"the backup's {name} is missing or was changed since the backup was taken")
    if anchors:
        public_key = load_public_key((backup / "audit" / PUBLIC_KEY_FILE).read_bytes())
        data, problem = read_log(log_pieces(backup / "audit"))
        report = verify_log(data, public_key, anchors=anchors)
        if problem or not report.ok or any(not a.verify(public_key) for a in anchors):
            raise StateDamaged(
                "the backup's audit log does not hold what the auditor's checkpoint covers: "
                + (problem or report.reason or "the checkpoint is not signed by this log's key")
            )
    _empty_target(state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    for name in sorted(files):
        (state_dir / name).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(backup / name, state_dir / name)
    _fsync_tree(state_dir)
    return check_state_dir(state_dir)


# ---------------------------------------------------------------------- the log, cut at the snapshot


def _log_upto(audit_dir: Path, head: tuple[int, str], outbox: list[Any]) -> tuple[int, list[Piece], bytes]:
    """(bytes to keep, the pieces read, their bytes): the log up to the snapshot's head and outbox records."""
    for _ in range(_ATTEMPTS):
        pieces = log_pieces(audit_dir)
        data, problem = read_log(pieces)
        if problem:
            raise StateDamaged(f"the audit log's segments are damaged: {problem}")
        kept = _cut(data, head, outbox)
        if kept is not None:
            return kept, pieces, data
        time.sleep(0.05)  # the active file was sealed while we read it: list the files again
    raise StateDamaged(f"the audit log does not reach record {head[0]}, the head the database recorded")


def _cut(data: bytes, head: tuple[int, str], outbox: list[Any]) -> int | None:
    """The end offset of the last record of the snapshot's story; None if ``data`` does not reach the head."""
    seq, digest = head
    end, waiting = 0, list(outbox)
    try:
        for frame in iter_frames(data):
            frame_end = frame.offset + HEADER.size + len(frame.body) + len(frame.signature)
            record = frame.record
            if record.seq <= seq:
                if record.seq == seq and record.hash != digest:
                    raise StateDamaged(f"record {seq} of the audit log is not the one the database recorded")
                end = frame_end
                continue
            if record.event == EventType.CHECKPOINT:
                end = frame_end
            elif waiting and waiting[0].describes(record):
                waiting.pop(0)
                end = frame_end
            else:
                break
    except _Bad:  # a record being appended as we read: the story ends before it
        pass
    reached = _count(data[:end])
    return end if reached >= seq else None


def _write_log(target: Path, pieces: list[Piece], data: bytes, kept: int) -> list[str]:
    """The kept bytes as the same files (sealed segments, then the rest as the active file)."""
    (target / SEGMENTS_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
    written, rest = [], 0
    for piece in pieces:
        if piece.first_seq and piece.base + piece.size <= kept:
            name = f"{SEGMENTS_DIR}/{segment_name(piece.first_seq)}"
            (target / name).write_bytes(data[piece.base : piece.base + piece.size])
            written.append(f"audit/{name}")
            rest = piece.base + piece.size
    (target / ACTIVE_FILE).write_bytes(data[rest:kept])
    written.append(f"audit/{ACTIVE_FILE}")
    return written


def _count(data: bytes) -> int:
    return sum(1 for _ in iter_frames(data))


def _after_head(data: bytes, seq: int) -> Any:
    return (f for f in iter_frames(data) if f.record.seq > seq and f.record.event != EventType.CHECKPOINT)


def _last_hash(data: bytes) -> str:
    last = ""
    for frame in iter_frames(data):
        last = frame.record.hash
    return last


# ---------------------------------------------------------------------- files


def _empty_target(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidRequest(f"{path} exists and is not empty: give a new directory")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    for directory, _, names in os.walk(root):
        for name in names:
            fd = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
