"""A full disk is survived (issue 13): on a real tmpfs holding the server's state, filled with a file and then
freed, actions are refused with RESOURCE_EXHAUSTED while it is full (nothing acknowledged that is not recorded,
no torn record in the log), job threads keep going (a job whose final record cannot be written is recorded
once space returns), and the server resumes by itself, without a restart or ``audit recover``."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from saferoom._proto.saferoom.v1 import budgets_pb2, budgets_pb2_grpc
from saferoom.audit import load_public_key, verify_log
from saferoom.audit.crosscheck import check_state_dir
from saferoom.audit.record import HEADER, SIGNATURE_BYTES
from saferoom.audit.verify import iter_frames
from saferoom.errors import SaferoomError
from saferoom.server import create_server
from tests.support import Deployment, server_config

PACKAGES = Path(__file__).resolve().parents[1] / "fixtures" / "packages"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (2**20, 2**12, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def whole_records(log: Path) -> bool:
    data = log.read_bytes()
    ends = [f.offset + HEADER.size + len(f.body) + SIGNATURE_BYTES for f in iter_frames(data)]
    return (ends[-1] if ends else 0) == len(data)


def test_a_full_disk_is_refused_then_survived_without_a_restart(
    small_disk: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    state = small_disk / "state"
    srv, port = create_server(
        server_config(dp_catalog_dir, state, deployment.pki, max_concurrent_jobs=1, audit_checkpoint_every=5)
    )
    died: list[str] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: died.append(f"{args.thread.name if args.thread else '?'}: {args.exc_value!r}")
    log = state / "audit" / "audit.log"
    try:
        with deployment.client("alice", port, timeout=30) as alice, deployment.client("olga", port) as olga:
            hashes = {}
            for name in ("echo", "forever"):
                summary, _ = alice.submit_package(PACKAGES / name)
                olga.approve_package(summary.hash, days=1)
                hashes[name] = summary.hash
            olga.set_budget("alice", "population", 1.0, 1e-6)
            stuck = alice.run_job(hashes["forever"])  # it ends at its wall limit while the disk is full
            deadline = time.monotonic() + 30
            while alice.get_job(stuck.id).state != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            acknowledged = [stuck.id]

            filler = fill(small_disk)
            for i in range(6):  # every kind of action is refused, none with INTERNAL
                for action in (
                    lambda i=i: alice.run_job(hashes["echo"], {"n": i}, request_id=f"full-{i}"),
                    lambda i=i: olga.set_budget("alice", "population", 2.0 + i, 1e-6),
                    lambda i=i: alice.submit_package({**_files("echo"), "extra.py": b"x = %d\n" % i}),
                ):
                    with pytest.raises(SaferoomError) as failed:
                        action()
                    assert failed.value.code == "storage_full", failed.value
                assert whole_records(log)  # whole records or nothing on disk
            with deployment.channel("olga", port) as channel:  # the status itself, on the wire
                stub = budgets_pb2_grpc.BudgetsServiceStub(channel)
                request = budgets_pb2.SetBudgetRequest(researcher="alice", dataset="population", epsilon=3, delta=1e-6)
                with pytest.raises(grpc.RpcError) as status:
                    stub.SetBudget(request, timeout=30)
                assert status.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            time.sleep(5)  # the stuck job reaches its wall limit: its failure cannot be recorded yet
            assert alice.get_job(stuck.id).state == "running"
            assert all(worker.is_alive() for worker in srv.jobs._workers)

            filler.unlink()  # space returns: no restart, no `audit recover`
            deadline = time.monotonic() + 60
            while True:
                try:
                    job = alice.run_job(hashes["echo"], {"n": 7}, request_id="after")
                    break
                except SaferoomError as exc:
                    assert exc.code == "storage_full"
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            acknowledged.append(job.id)
            assert alice.wait(job.id, timeout=60).state == "succeeded"
            assert alice.get_result(job.id).output("n").value == 14  # echo doubles n
            assert alice.wait(stuck.id, timeout=60).state == "failed"  # recorded once space returned
            assert olga.set_budget("alice", "population", 4.0, 1e-6).epsilon_total == 4.0
        with deployment.client("audrey", port) as audrey:
            assert audrey.verify_log().ok
            queued = {r.objects["job"] for r in audrey.read_log(events=["job_queued"])}
            assert set(acknowledged) <= queued
            failed_records = [r for r in audrey.read_log(events=["job_failed"]) if r.objects["job"] == stuck.id]
            assert len(failed_records) == 1
    finally:
        threading.excepthook = previous_hook
        srv.stop(1.0)
    assert not died, died
    assert verify_log(log.read_bytes(), load_public_key((state / "audit" / "audit.pub").read_bytes())).ok
    assert check_state_dir(state) == []  # what was committed while full was recorded once space returned


def _files(name: str) -> dict[str, bytes]:
    root = PACKAGES / name
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def test_a_log_write_cut_short_by_a_full_disk_leaves_whole_records_and_resumes(
    small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database on another disk, the log on the full one: the change commits, its record cannot be
    appended; the file is cut back to its last whole record, later changes are refused before they change
    anything, and the first commit after space returns appends the waiting records in order."""
    from saferoom.audit import AuditFilter, AuditLog, EventType
    from saferoom.errors import StorageFull
    from saferoom.store import Database

    db = Database.open(tmp_path / "saferoom.db")
    log = AuditLog(small_disk / "audit", db)
    try:
        log.append(EventType.SERVER_STARTED, "saferoom", "server")
        size = log.path.stat().st_size
        filler = fill(small_disk)
        os.truncate(filler, filler.stat().st_size - 8192)  # room for part of the next record: a short write
        big = {"note": "x" * 20_000}

        def change(conn) -> int:  # type: ignore[no-untyped-def]
            conn.execute("INSERT INTO identities VALUES ('ab', 'zoe', 'researcher', 0, x'00', 0)")
            return 1

        with pytest.raises(StorageFull):
            log.commit(change, lambda _: [(EventType.IDENTITY_ISSUED, "authority", "ca", {}, big)])
        assert log.path.stat().st_size == size and whole_records(log.path) and log.pending  # cut back
        assert any("short write" in r.getMessage() for r in caplog.records)  # part of it had been written
        with db.reading() as conn:  # committed, its record waiting in the outbox
            assert conn.execute("SELECT count(*) FROM identities").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM audit_outbox").fetchone()[0] == 1

        def other(conn) -> int:  # type: ignore[no-untyped-def]
            conn.execute("INSERT INTO identities VALUES ('cd', 'yan', 'researcher', 0, x'00', 0)")
            return 1

        with pytest.raises(StorageFull):  # refused before it changes anything
            log.commit(other, lambda _: [(EventType.IDENTITY_ISSUED, "authority", "ca", {}, {"n": 2})])
        with db.reading() as conn:
            assert conn.execute("SELECT count(*) FROM identities").fetchone()[0] == 1
        assert whole_records(log.path)

        filler.unlink()
        log.commit(other, lambda _: [(EventType.IDENTITY_ISSUED, "authority", "ca", {}, {"n": 2})])
        assert not log.pending
        issued = [r.summary for r in log.read(AuditFilter(events=frozenset({"identity_issued"})))]
        assert issued == [big, {"n": 2}]  # the waiting record first, each once
        with db.reading() as conn:
            assert conn.execute("SELECT count(*) FROM audit_outbox").fetchone()[0] == 0
    finally:
        log.close()
        db.close()
