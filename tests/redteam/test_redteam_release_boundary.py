"""Red team: reading the data off when a job's end becomes visible, now that the end is published by a timer thread
and the job slot is free during the wait (``saferoom.jobs.publishing``).

The attack: a filter that keeps everyone (the most work, every cell released) or one person (little work, every
cell withheld by the subset rule), run back to back on a server with a single job slot, so that the second job
runs while the first waits for its boundary. If the timer path published an end when the work finished, or if
freeing the slot let one job's end move with the other's work, the duration would tell the two apart. The layer
that must stop it: the publisher, which records each end at its own boundary (a whole number of quanta after the
job started), never before, whatever the data made of the work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

QUANTUM = 1.0  # far above the work: on an idle machine every job's end falls on its first grid line
MANIFEST = """\
name = "boundary-attack"
version = "1.0.0"
entrypoint = "main.py:run"
datasets = ["population"]
[parameters]
keep = { type = "int", default = 1000000000 }
"""
SOURCE = """\
def run(ctx, keep=1000000000):
    people = ctx.table("population").filter(col("person_id") <= keep)
    return {"stats": people.group_by("district", "sex").agg(n=count(), income=mean("income"))}
"""
EVERYONE, ONE = {"keep": 10**9}, {"keep": 1}


@pytest.fixture(scope="module")
def single_slot(
    catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, str]]:
    package = tmp_path_factory.mktemp("boundary-attack") / "boundary-attack"
    package.mkdir()
    (package / "saferoom.toml").write_text(MANIFEST)
    (package / "main.py").write_text(SOURCE)
    config = server_config(
        catalog_dir,
        tmp_path_factory.mktemp("boundary-attack-state"),
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


def test_when_an_end_shows_does_not_depend_on_the_data_on_the_timer_path(
    single_slot: tuple[SaferoomServer, str], deployment: Deployment
) -> None:
    srv, package = single_slot
    published: dict[str, list[float]] = {"everyone": [], "one": []}
    with deployment.client("alice", srv.port) as alice:
        for order in ((EVERYONE, ONE), (ONE, EVERYONE)):  # each kind both first and second in the single slot
            jobs = [alice.run_job(package, params) for params in order]
            ends = [alice.wait(job.id, timeout=60) for job in jobs]
            assert ends[1].started_at is not None and ends[0].finished_at is not None
            assert ends[1].started_at < ends[0].finished_at  # the second ran while the first waited: slot free
            for params, end in zip(order, ends, strict=True):
                assert end.state == "succeeded" and end.started_at is not None and end.finished_at is not None
                cells = alice.get_result(end.id).output("stats").table.column("cell_status").to_pylist()
                released = cells.count("released")
                assert released == 0 if params is ONE else released > 0  # the work and the outcome did differ
                published["one" if params is ONE else "everyone"].append(end.finished_at - end.started_at)
    for kind, durations in published.items():
        for took in durations:
            # A whole number of quanta after the start (one on an idle machine; more when a loaded machine slows
            # every job alike), plus what storing the result takes: never before a line, never between two.
            assert took >= QUANTUM and took % QUANTUM < 0.45 * QUANTUM, (kind, took)
