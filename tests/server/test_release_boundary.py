"""Publishing at the release boundary from a timer (``saferoom.jobs.publishing``): the job slot is free while a job
waits for its boundary, yet nothing of its end shows before it (state, result, audit record, stream)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.errors import JobNotFinished, SaferoomError
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

QUANTUM = 0.3
MANIFEST = """\
name = "boundary"
version = "1.0.0"
entrypoint = "main.py:run"
datasets = ["population"]
[parameters]
keep = { type = "int", default = 1000000000 }
"""
SOURCE = """\
def run(ctx, keep=1000000000):
    people = ctx.table("population").filter(col("person_id") <= keep)
    return {"stats": people.group_by("district").agg(n=count(), income=mean("income"))}
"""


@pytest.fixture(scope="module")
def one_slot(
    catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, str]]:
    """A server with a single job slot (one code phase, one engine slot) and a 300 ms quantum."""
    package = tmp_path_factory.mktemp("boundary") / "boundary"
    package.mkdir()
    (package / "saferoom.toml").write_text(MANIFEST)
    (package / "main.py").write_text(SOURCE)
    state = tmp_path_factory.mktemp("boundary-state")
    config = server_config(
        catalog_dir,
        state,
        deployment.pki,
        release_quantum_ms=int(QUANTUM * 1000),
        max_concurrent_jobs=1,
        max_code_phases=1,
    )
    srv, port = create_server(config)
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            summary, _ = alice.submit_package(package)
            olga.approve_package(summary.hash, days=1)
        yield srv, summary.hash
    finally:
        srv.stop(1.0)


def _observe(srv: SaferoomServer, deployment: Deployment, job_id: str, stop: threading.Event) -> list[tuple]:
    """(time, state, result fetchable, result_released recorded) of ``job_id``, polled until ``stop``."""
    seen: list[tuple] = []
    with deployment.client("alice", srv.port) as alice:
        while not stop.is_set():
            state = alice.get_job(job_id).state
            try:
                alice.get_result(job_id)
                fetched = True
            except SaferoomError:
                fetched = False
            seen.append((time.time(), state, fetched, srv.audit.released_hash(job_id) is not None))
            if state == "succeeded":
                return seen
            time.sleep(0.005)
    return seen


def test_the_slot_is_free_while_a_job_waits_but_its_end_shows_only_at_the_boundary(
    one_slot: tuple[SaferoomServer, str], deployment: Deployment
) -> None:
    srv, package = one_slot
    stop = threading.Event()
    with deployment.client("alice", srv.port) as alice:
        first = alice.run_job(package)
        second = alice.run_job(package)
        seen: list[tuple] = []
        watcher = threading.Thread(target=lambda: seen.extend(_observe(srv, deployment, first.id, stop)))
        watcher.start()
        states = [j.state for j in alice.watch_job(first.id, timeout=30)]  # the stream, too
        a = alice.wait(first.id, timeout=30)
        b = alice.wait(second.id, timeout=30)
        stop.set()
        watcher.join(30)
    assert a.state == b.state == "succeeded"
    assert states[-1] == "succeeded" and "succeeded" not in states[:-1]
    assert a.started_at is not None and a.finished_at is not None and b.started_at is not None
    # The only slot went to the second job while the first waited for its boundary...
    assert b.started_at < a.finished_at
    # ...and the first job's end was published on its grid, a whole number of quanta after it started.
    assert a.finished_at - a.started_at >= QUANTUM
    boundary = a.started_at + QUANTUM  # its earliest possible boundary
    assert seen and seen[-1][1] == "succeeded"
    for at, state, fetched, recorded in seen:
        if at < boundary:  # before the boundary: running or releasing, nothing fetchable, nothing in the audit log
            assert state in ("running", "releasing"), (at - a.started_at, state)
            assert (fetched, recorded) == (False, False), (at - a.started_at, state)


def test_a_cancel_while_waiting_ends_the_job_at_once_without_its_result(
    one_slot: tuple[SaferoomServer, str], deployment: Deployment
) -> None:
    srv, package = one_slot
    with deployment.client("alice", srv.port) as alice:
        first = alice.run_job(package)
        second = alice.run_job(package)  # starts only once the first one's work is done and its slot is free
        while alice.get_job(second.id).state == "queued":
            time.sleep(0.005)
        alice.cancel_job(first.id)
        final = alice.wait(first.id, timeout=30)
        assert final.state == "cancelled"
        assert final.finished_at is not None and final.started_at is not None
        with pytest.raises(SaferoomError):
            alice.get_result(first.id)
        assert srv.audit.released_hash(first.id) is None
        assert alice.wait(second.id, timeout=30).state == "succeeded"


def test_a_result_is_not_fetchable_while_the_job_waits_for_its_boundary(
    one_slot: tuple[SaferoomServer, str], deployment: Deployment
) -> None:
    srv, package = one_slot
    with deployment.client("alice", srv.port) as alice:
        job = alice.run_job(package)
        with pytest.raises(JobNotFinished):
            alice.get_result(job.id)
        assert alice.wait(job.id, timeout=30).state == "succeeded"
        assert alice.get_result(job.id).output("stats").table.num_rows > 0


def test_a_shutdown_while_jobs_wait_for_their_boundary_records_them_interrupted(
    catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    package = tmp_path / "boundary"
    package.mkdir()
    (package / "saferoom.toml").write_text(MANIFEST)
    (package / "main.py").write_text(SOURCE)
    state = tmp_path / "state"
    config = server_config(catalog_dir, state, deployment.pki, release_quantum_ms=30_000)  # the wait outlasts us
    srv, port = create_server(config)
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            summary, _ = alice.submit_package(package)
            olga.approve_package(summary.hash, days=1)
            job = alice.run_job(summary.hash)
            deadline = time.monotonic() + 30
            while srv.jobs._publisher.pending == 0 and time.monotonic() < deadline:  # its work is done
                time.sleep(0.01)
            assert srv.jobs._publisher.pending == 1
    finally:
        srv.stop(1.0)
    srv, port = create_server(config)
    try:
        with deployment.client("alice", port) as alice:
            final = alice.get_job(job.id)
            assert (final.state, final.error_code) == ("failed", "interrupted")
            assert srv.audit.released_hash(job.id) is None
    finally:
        srv.stop(1.0)
