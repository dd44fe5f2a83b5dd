"""A server killed with -9 loses no acknowledged job: running ones fail as interrupted, queued ones run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from saferoom.client import Client


def start_server(
    catalog_dir: Path, state_dir: Path, algorithms_dir: Path
) -> tuple[subprocess.Popen[str], int]:
    env = {
        **os.environ,
        "SAFEROOM_MAX_CONCURRENT_JOBS": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "saferoom.cli.main",
            "serve",
            "--data",
            str(catalog_dir),
            "--state",
            str(state_dir),
            "--algorithms",
            str(algorithms_dir),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
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
    catalog_dir: Path, algorithms_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    proc, port = start_server(catalog_dir, state, algorithms_dir)
    try:
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            running = client.run_job("forever")
            queued = client.run_job("echo", {"n": 1})
            deadline = time.monotonic() + 20
            while client.get_job(running.id).state != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert client.get_job(queued.id).state == "queued"
    finally:
        kill_hard(proc)

    proc, port = start_server(catalog_dir, state, algorithms_dir)
    try:
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            interrupted = client.get_job(running.id)
            assert interrupted.state == "failed"
            assert interrupted.error_code == "interrupted"
            resumed = client.wait(queued.id, timeout=60)
            assert resumed.state == "succeeded", resumed.error_message
            assert client.get_result(queued.id).output("n").value == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
