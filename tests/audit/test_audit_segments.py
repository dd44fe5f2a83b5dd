"""Audit log segments: the log rotates into sealed files, one chain runs through them, every reader sees one log,
archived segments verify offline (from genesis or from a saved checkpoint), and a crash at any moment of a
rotation (a real kill -9 of a process rotating after every record) loses no acknowledged record."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferoom.audit import AuditFilter, AuditLog, EventType, load_public_key
from saferoom.audit.crosscheck import check_state_dir
from saferoom.audit.segments import SEGMENTS_DIR, segment_files, segment_name, verify_segments
from saferoom.cli.main import cli
from saferoom.errors import AuditLogDamaged
from saferoom.store import Database

SEGMENT = 4096


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "saferoom.db")
    yield database
    database.close()


def fill(log: AuditLog, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        # An event the state cross-check has no row to compare with (a job would need one in the database).
        log.append(EventType.LOG_VERIFIED, "saferoom", "server", {}, {"ok": True, "n": i})


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_log_rotates_and_reads_as_one(tmp_path: Path, db: Database) -> None:
    audit = tmp_path / "audit"
    log = AuditLog(audit, db, checkpoint_every=25, segment_bytes=SEGMENT)
    fill(log, 200)
    segments = segment_files(audit / SEGMENTS_DIR)
    assert len(segments) >= 5  # ~300 bytes a record: one segment per ~14 records
    assert segments[0][0] == 1 and all(path.stat().st_size >= SEGMENT for _, path in segments)
    records = list(log.read(AuditFilter()))
    assert [r.seq for r in records] == list(range(1, log.last_seq + 1))  # across every boundary, in order
    assert [r.summary["n"] for r in records if r.event == "log_verified"] == list(range(200))
    boundary = segments[2][0]
    assert log.get(boundary) is not None and log.get(boundary - 1) is not None
    assert [r.seq for r in log.read(AuditFilter(after_seq=boundary - 2), limit=3)] == [
        boundary - 1,
        boundary,
        boundary + 1,
    ]
    assert log.verify().ok
    log.close()

    reopened = AuditLog(audit, db, segment_bytes=SEGMENT)  # start-up verifies all of them, as one chain
    fill(reopened, 5, start=200)
    assert reopened.verify().ok and reopened.last_seq > records[-1].seq
    reopened.close()
    assert check_state_dir(tmp_path) == []  # `saferoom state check` reads the segments too


def test_archived_segments_verify_offline(tmp_path: Path, db: Database) -> None:
    audit = tmp_path / "audit"
    log = AuditLog(audit, db, checkpoint_every=10, segment_bytes=SEGMENT)
    fill(log, 120)
    checkpoint = log.checkpoint()
    fill(log, 60, start=120)
    log.close()
    segments = segment_files(audit / SEGMENTS_DIR)
    key = audit / "audit.pub"
    public_key = load_public_key(key.read_bytes())

    archive = tmp_path / "archive"  # every sealed segment, copied elsewhere: verifies from genesis
    archive.mkdir()
    for _, path in segments:
        shutil.copy(path, archive / path.name)
    code, out = invoke("audit", "verify", "--segments", str(archive), "--key", str(key))
    assert code == 0 and "verified" in out, out
    assert verify_segments(archive, public_key).ok

    # Only the segments after the checkpoint's record, with the checkpoint the auditor saved.
    later = tmp_path / "later"
    later.mkdir()
    kept = [(seq, path) for seq, path in segments if seq > checkpoint.covers - 10]
    assert kept and kept[0][0] > 1
    for _, path in kept:
        shutil.copy(path, later / path.name)
    saved = tmp_path / "checkpoint.json"
    saved.write_text(checkpoint.to_json(), encoding="utf-8")
    code, out = invoke("audit", "verify", "--segments", str(later), "--key", str(key))
    assert code == 2 and "checkpoint" in out, out  # without an anchor, later segments are not trusted
    code, out = invoke("audit", "verify", "--segments", str(later), "--checkpoint", str(saved))
    assert code == 0 and "verified" in out, out

    # The whole audit directory (segments and the active file) verifies as the server's log.
    assert verify_segments(audit, public_key).ok


@pytest.mark.parametrize("damage", ["missing", "renamed", "byte"])
def test_damaged_archive_is_refused(tmp_path: Path, db: Database, damage: str) -> None:
    audit = tmp_path / "audit"
    log = AuditLog(audit, db, segment_bytes=SEGMENT)
    fill(log, 120)
    log.close()
    segments = segment_files(audit / SEGMENTS_DIR)
    victim = segments[2][1]
    if damage == "missing":
        victim.unlink()
    elif damage == "renamed":
        victim.rename(victim.with_name(segment_name(segments[2][0] + 1)))
    else:
        data = bytearray(victim.read_bytes())
        data[100] ^= 1
        victim.write_bytes(bytes(data))
    report = verify_segments(audit, load_public_key((audit / "audit.pub").read_bytes()))
    assert not report.ok and report.first_bad_seq is not None
    with pytest.raises(AuditLogDamaged):  # and the server would not start on it
        AuditLog(audit, db, segment_bytes=SEGMENT)


def test_crash_between_rename_and_new_file_loses_nothing(tmp_path: Path, db: Database) -> None:
    """The state a crash leaves after sealing the active file but before the new one exists."""
    audit = tmp_path / "audit"
    log = AuditLog(audit, db, segment_bytes=1 << 30)
    fill(log, 30)
    last = log.last_seq
    log.close()
    (audit / SEGMENTS_DIR).mkdir()
    os.rename(audit / "audit.log", audit / SEGMENTS_DIR / segment_name(1))
    reopened = AuditLog(audit, db, segment_bytes=1 << 30)
    assert [r.seq for r in reopened.read(AuditFilter())][:last] == list(range(1, last + 1))
    fill(reopened, 3)
    assert reopened.verify().ok
    reopened.close()


_WRITER = """
import sys
from pathlib import Path
from saferoom.audit import AuditLog, EventType
from saferoom.store import Database

state = Path(sys.argv[1])
db = Database.open(state / "saferoom.db")
log = AuditLog(state / "audit", db, segment_bytes=1)  # seals the active file after every durable write
i = 0
while True:
    record = log.append(EventType.LOG_VERIFIED, "saferoom", "server", {}, {"n": i})
    print(record.seq, flush=True)  # acknowledged: fsynced, and the rotation after it done or under way
    i += 1
"""


def test_kill_during_rotation_loses_no_acknowledged_record(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    acknowledged = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(state)], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        seen = 0
        deadline = time.monotonic() + 30
        while seen < acknowledged + 5 + round_ * 3:  # let it rotate a few times, then kill it at a varying moment
            line = proc.stdout.readline()
            assert line, "the writer stopped"
            seen = int(line)
            assert time.monotonic() < deadline
        time.sleep(0.003 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for line in proc.stdout:  # anything it printed before dying was acknowledged too
            seen = int(line)
        proc.stdout.close()
        acknowledged = seen
    db = Database.open(state / "saferoom.db")
    try:
        log = AuditLog(state / "audit", db, segment_bytes=1)
        seqs = [r.seq for r in log.read(AuditFilter())]
        assert seqs == list(range(1, log.last_seq + 1)) and log.last_seq >= acknowledged
        assert log.verify().ok
        log.close()
    finally:
        db.close()
    assert check_state_dir(state) == []
    assert len(segment_files(state / "audit" / SEGMENTS_DIR)) >= acknowledged // 2
