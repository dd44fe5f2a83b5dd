"""A server killed with -9 loses no acknowledged job, package or approval: running jobs fail as interrupted,
queued ones run once after the restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import Deployment, approve_all


def start_server(catalog_dir: Path, state_dir: Path, pki_dir: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "SAFEROOM_MAX_CONCURRENT_JOBS": "1"}
    command = [sys.executable, "-m", "saferoom.cli.main", "serve", "--data", str(catalog_dir),
               "--state", str(state_dir), "--pki", str(pki_dir), "--listen", "127.0.0.1:0"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match, line
    return proc, int(match.group(1))


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
        assert proc.wait(timeout=30) == 0
