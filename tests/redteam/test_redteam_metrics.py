"""Red team, the metrics endpoint as a timing side channel: whoever can scrape must learn nothing about the data.

The attack: the same approved code, run with a filter that keeps every person or one, does different amounts
of engine work; a scraper who sees each job's engine time learns which (and, with a cleverer filter, one
person's value). The defence (``saferoom.metrics``): by default only the queue, the code phase and the padded
remainder (ending on the release quantum's grid) are exported, so every series moves the same way for both
kinds of job, and each job's exported phases add up to a whole number of quanta.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from saferoom.metrics import Metrics
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
# Series that move with the scraper's own calls or with the disk, not with a job's data; and the queue and code
# phases' buckets, whose noise (data-independent: nothing has read data yet) may cross a bucket edge between runs.
IGNORED = ("saferoom_request", "saferoom_audit_fsync")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def timed(
    catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, str]]:
    package = tmp_path_factory.mktemp("timing") / "timing"
    package.mkdir()
    (package / "saferoom.toml").write_text(MANIFEST)
    (package / "main.py").write_text(SOURCE)
    config = server_config(
        catalog_dir,
        tmp_path_factory.mktemp("metrics-timing"),
        deployment.pki,
        release_quantum_ms=int(QUANTUM * 1000),
        metrics_listen="127.0.0.1:0",
    )
    srv, port = create_server(config)
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            summary, _ = alice.submit_package(package)
            olga.approve_package(summary.hash, days=1)
        yield srv, summary.hash
    finally:
        srv.stop(1.0)


def test_nothing_exported_varies_with_the_data(timed, deployment: Deployment) -> None:
    srv, package = timed
    port = srv.metrics_port
    moved: dict[int, list[dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    with deployment.client("alice", srv.port) as alice:
        for keep in (10**9, 1, 10**9, 1):  # every person kept, or one: different work in the engine
            before = scrape(port)
            job = alice.run_job(package, {"keep": keep})
            assert alice.wait(job.id, timeout=30).state == "succeeded"
            time.sleep(0.2)  # the job's phases are observed as its thread finishes, just after it is published
            after = scrape(port)
            delta = {k: after[k] - before.get(k, 0.0) for k in after}
            moved.setdefault(keep, []).append(delta)
            # The unpadded phases are not there at all, and the exported ones add up to whole quanta.
            assert not any(dict(labels).get("phase") in ("engine", "release", "quantum") for _, labels in after)
            code = delta[("saferoom_job_phase_seconds_sum", (("phase", "code"),))]
            padded = delta[("saferoom_job_phase_seconds_sum", (("phase", "padded"),))]
            quanta = (code + padded) / QUANTUM
            assert quanta >= 1 and abs(quanta - round(quanta)) < 0.001, (code, padded)

    def visible(delta: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[object, float]:
        return {
            key: round(v, 9)
            for key, v in delta.items()
            if not key[0].startswith(IGNORED)
            and not key[0].endswith(("_sum", "_created"))
            and not (
                key[0] == "saferoom_job_phase_seconds_bucket" and key[1][-1] in (("phase", "code"), ("phase", "queue"))
            )
        }

    everyone, one = moved[10**9], moved[1]
    assert visible(everyone[0]) == visible(one[0]) == visible(everyone[1]) == visible(one[1])


def test_polling_during_a_job_shows_nothing_that_moves_when_the_engine_ends(timed, deployment: Deployment) -> None:
    """A scraper polling while a job runs sees every series at each moment: a gauge of engine slots in use fell
    when the engine finished on the data (before the padded release). Every gauge read while the job runs must
    take only values that do not depend on when the engine ended: none of the slot gauges is exported."""
    srv, package = timed
    port = srv.metrics_port
    seen: set[str] = set()
    with deployment.client("alice", srv.port) as alice:
        job = alice.run_job(package, {"keep": 1})
        while alice.get_job(job.id).state not in ("succeeded", "failed"):
            seen |= {name for name, _ in scrape(port)}
            time.sleep(0.02)
    assert seen and not any(name.startswith("saferoom_job_slots") for name in seen)


def test_the_unpadded_phases_exist_only_when_asked_for() -> None:
    phases = {"queue": 0.1, "code": 0.05, "engine": 0.3, "release": 0.2, "quantum": 0.35}
    default, detailed = Metrics(), Metrics(phase_detail=True)
    for metrics in (default, detailed):
        metrics.observe_job(dict(phases))
    shown = default.exposition().decode()
    assert 'phase="padded"' in shown and 'phase="engine"' not in shown and 'phase="quantum"' not in shown
    assert 'phase="engine"' in detailed.exposition().decode()


def test_recording_an_end_late_does_not_move_its_padded_phase() -> None:
    """The padded phase ends at the boundary the end was due, however long recording it took after (SQLite, the
    audit log's fsync, a loaded machine): that jitter once moved a job across a histogram bucket's edge."""
    metrics = Metrics()
    timer = metrics.job_started(0.0)
    time.sleep(0.01)
    timer.mark("code")
    due = time.monotonic() + 0.02
    time.sleep(0.05)  # recorded well after the boundary
    timer.mark("quantum")
    timer.published_at(due)
    timer.done()
    sums = {
        s.labels["phase"]: s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name == "saferoom_job_phase_seconds_sum"
    }
    assert sums["padded"] == pytest.approx(0.02, abs=0.002)
