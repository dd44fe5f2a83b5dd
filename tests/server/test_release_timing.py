"""The release quantum: a job's end is published only on a time grid from its start, whatever the data made of
it, and a cancel during the wait cannot reveal when the work really finished."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.errors import SaferoomError
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

QUANTUM = 1.0
MANIFEST = """\
name = "timing"
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
def timed(
    catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, str]]:
    package = tmp_path_factory.mktemp("timing") / "timing"
    package.mkdir()
    (package / "saferoom.toml").write_text(MANIFEST)
    (package / "main.py").write_text(SOURCE)
    state = tmp_path_factory.mktemp("timing-state")
    srv, port = create_server(server_config(catalog_dir, state, deployment.pki, release_quantum_ms=int(QUANTUM * 1000)))
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            summary, _ = alice.submit_package(package)
            olga.approve_package(summary.hash, days=1)
        yield srv, summary.hash
    finally:
        srv.stop(1.0)


@pytest.mark.parametrize(("keep", "rows"), [(10**9, 6), (1, 0)])  # released / withheld by the subset rule
def test_released_and_withheld_jobs_end_on_the_same_grid(timed, deployment: Deployment, keep: int, rows: int) -> None:
    srv, package = timed
    with deployment.client("alice", srv.port) as alice:
        start = time.monotonic()
        job = alice.run_job(package, {"keep": keep})
        final = alice.wait(job.id, timeout=30)
        elapsed = time.monotonic() - start
        assert final.state == "succeeded"
        table = alice.get_result(job.id).output("stats").table
        assert table.column("cell_status").to_pylist().count("released") == rows  # withheld: all read suppressed
    # Both kinds end on the grid, a whole number of quanta after they started (one on an idle machine: the work
    # takes well under a quantum; more when a loaded machine slows it), never in between. What the client sees
    # beyond the grid line is the time of its own two calls.
    assert elapsed >= QUANTUM
    assert elapsed % QUANTUM < 0.45 * QUANTUM, elapsed


def test_a_cancel_while_waiting_for_the_grid_ends_the_job_without_its_result(timed, deployment: Deployment) -> None:
    srv, package = timed
    with deployment.client("alice", srv.port) as alice:
        job = alice.run_job(package)
        time.sleep(QUANTUM / 2)  # the work is done by now; the job waits for the grid
        alice.cancel_job(job.id)
        final = alice.wait(job.id, timeout=30)
        assert final.state == "cancelled"
        with pytest.raises(SaferoomError):
            alice.get_result(job.id)
