"""`jobs run` shows queued -> running -> releasing -> succeeded: with timing protection on, a job's data phase
(engine work under the release rules, then the wait for the release quantum's grid) is its own state. Through
the real CLI and a real server whose release quantum is on."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferoom.cli.main import cli
from saferoom.errors import JobNotFinished
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, approve_all, server_config

QUANTUM_MS = 1500  # long enough for the CLI's 0.25 s polling to see the wait, short enough for a test


@pytest.fixture(scope="module")
def padded(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    state = tmp_path_factory.mktemp("releasing-state")
    srv, port = create_server(server_config(catalog_dir, state, deployment.pki, release_quantum_ms=QUANTUM_MS))
    try:
        approve_all(deployment, port, algorithms_dir)
        yield srv
    finally:
        srv.stop(1.0)


def test_jobs_run_shows_the_releasing_state(padded: SaferoomServer, deployment: Deployment) -> None:
    profile = deployment.pki / "identities" / "alice" / "profile.toml"
    args = ["--profile", str(profile), "jobs", "run", "echo", "--param", "n=2", "--server", f"127.0.0.1:{padded.port}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    states = re.findall(r"^job [0-9a-f]{8,32} (\w+)", result.stderr, re.M)
    assert states[0] == "queued" and "releasing" in states, result.stderr
    assert states[-2:] == ["releasing", "succeeded"], states  # releasing last, then the result
    order = ["queued", "running", "releasing", "succeeded"]  # (running may pass between two polls)
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)


def test_the_states_in_order_and_releasing_is_not_a_result(padded: SaferoomServer, deployment: Deployment) -> None:
    with deployment.client("alice", padded.port) as alice:
        job = alice.run_job("echo", {"n": 1})
        deadline = time.monotonic() + 60
        while (state := alice.get_job(job.id).state) != "releasing":  # one read per turn: it may move between two
            assert state in ("queued", "running") and time.monotonic() < deadline, state
            time.sleep(0.05)
        listed, _ = alice.list_jobs(states=["releasing"])
        assert job.id in {j.id for j in listed} and all(j.state == "releasing" for j in listed)
        with pytest.raises(JobNotFinished, match="releasing"):  # no result before the job publishes its end
            alice.get_result(job.id)
        seen = [j.state for j in alice.watch_job(job.id)]
        assert seen == ["releasing", "succeeded"], seen
        assert alice.get_result(job.id).output("n").value == 2  # echo doubles n


def test_without_timing_protection_there_is_no_releasing_state(server: SaferoomServer, deployment: Deployment) -> None:
    with deployment.client("alice", server.port) as alice:  # the shared test server: quantum 0
        job = alice.run_job("echo", {"n": 1})
        seen = [j.state for j in alice.watch_job(job.id)]
    assert "releasing" not in seen and seen[-1] == "succeeded"
