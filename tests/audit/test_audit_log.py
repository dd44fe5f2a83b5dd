"""The audit log on its own: appending, reading, and every kind of tampering, each caught at the right record."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from saferoom.audit import (
    AuditFilter,
    AuditLog,
    Checkpoint,
    EventType,
    load_public_key,
    quarantine_torn_tail,
    verify_log,
)
from saferoom.audit.record import SIGNATURE_PREFIX, AuditRecord, encode_body, frame_hash, now_iso
from saferoom.audit.verify import iter_frames
from saferoom.errors import AuditLogDamaged
from saferoom.store import Database

RECORDS = 20


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "state.db")
    yield database
    database.close()


def write_log(directory: Path, db: Database, count: int = RECORDS, every: int = 1000) -> AuditLog:
    log = AuditLog(directory, db, checkpoint_every=every)
    for i in range(count):
        log.append(
            EventType.JOB_QUEUED,
            f"user{i % 3}",
            "researcher",
            {"job": f"job{i}", "package": "p" * 64},
            {"params": {"n": i}},
        )
    return log


def frames(data: bytes) -> list[bytes]:
    out, items = [], list(iter_frames(data))
    for i, frame in enumerate(items):
        end = items[i + 1].offset if i + 1 < len(items) else len(data)
        out.append(data[frame.offset : end])
    return out


def forge(
    prev_frame: bytes | None,
    seq: int,
    key: ed25519.Ed25519PrivateKey,
    event: EventType = EventType.JOB_FINISHED,
    summary: dict | None = None,
) -> bytes:
    """A well-formed frame chained to ``prev_frame``, signed with ``key``."""
    prev = frame_hash(prev_frame) if prev_frame is not None else "0" * 64
    record = AuditRecord(seq, now_iso(), event.value, "mallory", "operator", {}, summary or {}, prev)
    body = encode_body(record)
    return struct.pack(">I", len(body)) + body + key.sign(SIGNATURE_PREFIX + body)


@pytest.fixture
def sealed(tmp_path: Path, db: Database) -> tuple[bytes, ed25519.Ed25519PublicKey, Checkpoint]:
    """A closed log of 20 records + a final checkpoint, its public key, and a checkpoint an auditor saved."""
    log = write_log(tmp_path / "audit", db)
    anchor = log.checkpoint()
    log.close()
    return (tmp_path / "audit" / "audit.log").read_bytes(), log.public_key, anchor


def test_a_clean_log_verifies_online_and_offline(tmp_path: Path, db: Database, sealed) -> None:
    data, key, anchor = sealed
    report = verify_log(data, key, anchors=(anchor,))
    assert report.ok and report.records == RECORDS + 1 and report.checkpoints == 1
    assert load_public_key((tmp_path / "audit" / "audit.pub").read_bytes()).public_bytes_raw() == key.public_bytes_raw()
    assert (tmp_path / "audit" / "audit.key").stat().st_mode & 0o777 == 0o600
    reopened = AuditLog(tmp_path / "audit", db)
    assert reopened.last_seq == RECORDS + 1 and reopened.verify().ok
    reopened.close()


def tampered(data: bytes, how: str, key: ed25519.Ed25519PublicKey) -> bytes:
    parts = frames(data)
    attacker = ed25519.Ed25519PrivateKey.generate()
    if how == "changed byte in record 7":
        frame = bytearray(parts[6])
        frame[len(frame) // 2] ^= 0x01
        parts[6] = bytes(frame)
    elif how == "changed signature of record 7":
        parts[6] = parts[6][:-1] + bytes([parts[6][-1] ^ 0xFF])
    elif how == "record 7 deleted":
        del parts[6]
    elif how == "records 7 and 8 swapped":
        parts[6], parts[7] = parts[7], parts[6]
    elif how == "forged record 22 appended with a recomputed chain":
        parts.append(forge(parts[-1], len(parts) + 1, attacker))
    elif how == "checkpoint 22 signed by another key":
        parts.append(forge(parts[-1], len(parts) + 1, attacker, EventType.CHECKPOINT, {"covers": 21, "head": "x"}))
    elif how == "tail truncated mid-record":
        return b"".join(parts)[:-40]
    return b"".join(parts)


@pytest.mark.parametrize(
    ("how", "first_bad"),
    [
        ("changed byte in record 7", 7),
        ("changed signature of record 7", 7),
        ("record 7 deleted", 7),
        ("records 7 and 8 swapped", 7),
        ("forged record 22 appended with a recomputed chain", 22),
        ("checkpoint 22 signed by another key", 22),
        ("tail truncated mid-record", 21),
    ],
)
def test_tampering_is_caught_at_the_first_bad_record(sealed, how: str, first_bad: int) -> None:
    data, key, _ = sealed
    report = verify_log(tampered(data, how, key), key)
    assert not report.ok
    assert report.first_bad_seq == first_bad, report.reason


def test_a_cleanly_truncated_tail_needs_a_checkpoint_to_be_seen(sealed) -> None:
    data, key, anchor = sealed
    shorter = b"".join(frames(data)[:15])
    assert verify_log(shorter, key).ok  # a prefix of a valid log is valid on its own ...
    report = verify_log(shorter, key, anchors=(anchor,))
    assert not report.ok and report.first_bad_seq == 16 and "truncated" in report.reason  # ... not against a checkpoint


def test_a_key_holder_rewriting_history_is_caught_by_an_earlier_checkpoint(tmp_path: Path, db: Database) -> None:
    log = write_log(tmp_path / "audit", db, count=10)
    anchor = log.checkpoint()  # the auditor keeps this
    log.close()
    key = ed25519.Ed25519PrivateKey.generate()  # the attacker re-signs everything with a key ...
    rewritten = [forge(None, 1, key)]
    for seq in range(2, 12):
        rewritten.append(forge(rewritten[-1], seq, key))
    forged = b"".join(rewritten)
    public = key.public_key()
    assert verify_log(forged, public).ok  # ... and the public key: on its own it verifies ...
    anchored = Checkpoint(anchor.covers, anchor.head, anchor.signature, anchor.public_key)
    report = verify_log(forged, public, anchors=(anchored,))
    assert not report.ok and report.first_bad_seq == anchor.covers  # ... but not against what was sealed before


@pytest.mark.parametrize("how", ["changed byte in record 7", "record 7 deleted", "records 7 and 8 swapped"])
def test_the_server_refuses_to_start_on_a_tampered_log(tmp_path: Path, db: Database, sealed, how: str) -> None:
    data, key, _ = sealed
    (tmp_path / "audit" / "audit.log").write_bytes(tampered(data, how, key))
    with pytest.raises(AuditLogDamaged, match="record 7"):
        AuditLog(tmp_path / "audit", db)


def test_a_truncated_file_is_caught_at_start_by_the_checkpoint_in_sqlite(tmp_path: Path, db: Database, sealed) -> None:
    data, _, _ = sealed
    (tmp_path / "audit" / "audit.log").write_bytes(b"".join(frames(data)[:12]))
    with pytest.raises(AuditLogDamaged, match="truncated"):
        AuditLog(tmp_path / "audit", db)


def test_a_torn_last_record_is_reported_then_quarantined_on_request(tmp_path: Path, db: Database, sealed) -> None:
    data, key, _ = sealed
    torn = data + struct.pack(">I", 500) + b'{"seq": 22, "ts'  # a crash in the middle of a write
    (tmp_path / "audit" / "audit.log").write_bytes(torn)
    with pytest.raises(AuditLogDamaged, match="torn"):
        AuditLog(tmp_path / "audit", db)
    moved = quarantine_torn_tail(tmp_path / "audit", db)
    assert moved is not None and moved[0] == len(torn) - len(data)
    assert (tmp_path / "audit" / f"audit.log.torn-{len(data)}").read_bytes() == torn[len(data) :]
    log = AuditLog(tmp_path / "audit", db)
    last = list(log.read(AuditFilter(after_seq=log.last_seq - 2)))
    assert [r.event for r in last] == ["log_tail_quarantined", "checkpoint"]
    assert last[0].summary["sha256"] == moved[1]
    assert log.verify().ok
    log.close()
    assert quarantine_torn_tail(tmp_path / "audit", db) is None
    (tmp_path / "audit" / "audit.log").write_bytes(tampered(data, "record 7 deleted", key) + b"\x00\x00")
    with pytest.raises(AuditLogDamaged, match="not torn"):
        quarantine_torn_tail(tmp_path / "audit", db)  # only a torn tail is ever set aside


def test_checkpoints_every_n_records_and_at_close(tmp_path: Path, db: Database) -> None:
    log = write_log(tmp_path / "audit", db, count=25, every=10)
    log.close()
    events = [f.record.event for f in iter_frames((tmp_path / "audit" / "audit.log").read_bytes())]
    # 25 records: 10 and a checkpoint, 10 and a checkpoint, 5 and the checkpoint at close
    assert [i + 1 for i, e in enumerate(events) if e == "checkpoint"] == [11, 22, 28]


def test_filters_resume_and_follow(tmp_path: Path, db: Database) -> None:
    log = write_log(tmp_path / "audit", db)
    assert [r.seq for r in log.read(AuditFilter(actor="user1"))] == [2, 5, 8, 11, 14, 17, 20]
    assert [r.seq for r in log.read(AuditFilter(job="job4"))] == [5]
    assert [r.seq for r in log.read(AuditFilter(after_seq=18))] == [19, 20]
    assert list(log.read(AuditFilter(events=frozenset({"job_failed"})))) == []
    first = next(log.read(AuditFilter()))
    assert [r.seq for r in log.read(AuditFilter(since=first.timestamp, until=first.timestamp + 1e-6))] == [1]
    seen: list[int] = []
    done = threading.Event()

    def follower() -> None:
        for record in log.follow(AuditFilter(after_seq=19, events=frozenset({"job_queued"})), stop=done.is_set):
            seen.append(record.seq)
            if record.seq == 22:
                done.set()

    thread = threading.Thread(target=follower)
    thread.start()
    log.append(EventType.JOB_QUEUED, "late", "researcher")
    log.append(EventType.JOB_QUEUED, "later", "researcher")
    thread.join(timeout=10)
    assert seen == [20, 21, 22]
    log.close()


def test_a_failed_write_stops_all_further_writes(tmp_path: Path, db: Database) -> None:
    log = write_log(tmp_path / "audit", db, count=3)
    assert log._fd is not None
    import os

    os.close(log._fd)  # the disk goes away under it
    log._fd = os.open(os.devnull, os.O_RDONLY)  # writes now fail
    with pytest.raises(AuditLogDamaged):
        log.append(EventType.JOB_QUEUED, "a", "researcher")
    with pytest.raises(AuditLogDamaged, match="refuses actions"):
        log.append(EventType.JOB_QUEUED, "b", "researcher")


def test_reading_goes_window_by_window(tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    import saferoom.audit.log as audit_log

    log = write_log(tmp_path / "audit", db, count=50)
    monkeypatch.setattr(audit_log, "_READ_WINDOW", 700)  # a couple of records per window, frames cut at edges
    assert [r.seq for r in log.read(AuditFilter())] == list(range(1, 51))
    assert [r.seq for r in log.read(AuditFilter(actor="user2", after_seq=30))] == [33, 36, 39, 42, 45, 48]
    log.close()
