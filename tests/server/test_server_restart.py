"""A server killed with -9 loses no acknowledged job, package or approval: running jobs fail as interrupted,
queued ones run once after the restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support import Deployment, approve_all, serve_process


def start_server(catalog_dir: Path, state_dir: Path, pki_dir: Path) -> tuple[subprocess.Popen[str], int]:
    return serve_process(catalog_dir, state_dir, pki_dir, {"SAFEROOM_MAX_CONCURRENT_JOBS": "1"})


def kill_hard(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the server and its worker processes, as a crash would
    proc.wait(timeout=10)


def test_kill_9_then_restart_accounts_for_every_job(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    proc, port = start_server(catalog_dir, state, deployment.pki)
    try:
        approve_all(deployment, port, algorithms_dir)
        with deployment.client("alice", port, timeout=30) as client:
            running = client.run_job("forever")
            queued = [client.run_job("echo", {"n": i}) for i in range(1, 6)]
            deadline = time.monotonic() + 20
            while client.get_job(running.id).state != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert all(client.get_job(j.id).state == "queued" for j in queued)
            packages_before = {p.hash: p.status for p in client.list_packages()}
    finally:
        kill_hard(proc)

    proc, port = start_server(catalog_dir, state, deployment.pki)
    try:
        with deployment.client("alice", port, timeout=30) as client:
            assert {p.hash: p.status for p in client.list_packages()} == packages_before  # approvals survived
            interrupted = client.get_job(running.id)
            assert interrupted.state == "failed"
            assert interrupted.error_code == "interrupted"
            for i, job in enumerate(queued, start=1):
                resumed = client.wait(job.id, timeout=60)
                assert resumed.state == "succeeded", resumed.error_message
                assert client.get_result(job.id).output("n").value == 2 * i
            jobs, _ = client.list_jobs(page_size=100)
            assert sorted(j.id for j in jobs) == sorted([running.id, *(j.id for j in queued)])  # none twice
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0  # generous: CI machines can be slow


def test_kill_9_in_a_burst_leaves_a_log_that_verifies_with_every_acknowledged_job(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    import threading

    from saferoom.audit import load_public_key, verify_log
    from saferoom.errors import SaferoomError

    state = tmp_path / "state"
    proc, port = start_server(catalog_dir, state, deployment.pki)
    acknowledged: list[str] = []
    lock = threading.Lock()
    try:
        with deployment.client("alice", port, timeout=10) as alice:
            summary, _ = alice.submit_package(algorithms_dir / "echo")
            with deployment.client("olga", port) as olga:
                olga.approve_package(summary.hash, days=1)

            def burst() -> None:
                for i in range(200):
                    try:
                        job = alice.run_job(summary.hash, {"n": 1 + i % 5})
                    except SaferoomError:
                        return  # the server died under us: not acknowledged
                    with lock:
                        acknowledged.append(job.id)

            threads = [threading.Thread(target=burst) for _ in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while len(acknowledged) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            kill_hard(proc)  # in the middle of the burst
            for t in threads:
                t.join(timeout=30)
    finally:
        if proc.poll() is None:
            kill_hard(proc)
    assert len(acknowledged) >= 40

    log = (state / "audit" / "audit.log").read_bytes()
    key = load_public_key((state / "audit" / "audit.pub").read_bytes())
    assert verify_log(log, key).ok  # the copy left by the crash verifies on its own

    proc, port = start_server(catalog_dir, state, deployment.pki)  # start-up verifies it too
    try:
        with deployment.client("audrey", port) as audrey:
            assert audrey.verify_log().ok
            queued = {r.objects["job"] for r in audrey.read_log(events=["job_queued"])}
            assert set(acknowledged) <= queued
            started = [r for r in audrey.read_log(events=["server_started"])]
            assert len(started) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0  # generous: CI machines can be slow
