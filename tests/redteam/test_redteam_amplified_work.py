"""Red team: amplifying one person's row into work that hits a limit iff a condition on that person holds.

The attack: keep one person iff a condition holds, then cross-join the result (a join on a constant key) with
public tables until the engine worker runs out of memory or time: one bit per job, and seconds of timing. The
layer that must stop it is the admission of ``engine.cost``: the worst case is computed from the catalog and the
plan, so the job is refused before any engine work, with the same message whether the condition holds or not.
Below its worst case an admitted plan's work still depends on the data (a filter keeping everyone or no one):
the server publishes a job's end only once the admitted worst cases of its releases have passed
(``jobs.pipeline.ReleaseDeadline``, ``engine.cost.padded_seconds``), the same either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saferoom.catalog.manifest import Manifest
from saferoom.client import Client
from saferoom.config import WorkerLimits
from saferoom.errors import JobCancelled, LimitExceeded
from saferoom.jobs.pipeline import Isolation, Pipeline, ReleaseDeadline
from saferoom.packages import load_package
from saferoom.server import SaferoomServer
from tests.support import Deployment

PERSON = 42
SOURCE = f"""
def run(ctx, cutoff=0):
    me = ctx.table("population").filter((col("person_id") == {PERSON}) & (col("income") > cutoff))
    blown = me.with_columns(k=lit(1)).select("k", "person_id")
    for name, key in (("bus_stops", "stop_id"), ("schools", "school_id"), ("land_use", "parcel_id")):
        blown = blown.join(ctx.table(name).with_columns(k=lit(1)).select("k", key), on="k")
    return {{"n": blown.group_by("k").agg(n=count())}}
"""
TOML = """name = "amplified-work"
version = "1.0.0"
description = "Red team: one person's row multiplied by cross joins with public tables."
entrypoint = "main.py:run"
datasets = ["population", "bus_stops", "schools", "land_use"]

[parameters]
cutoff = { type = "float", default = 0, min = -1, max = 1000000000 }
"""
HOLDS, FAILS = {"cutoff": -1.0}, {"cutoff": 1e9}  # incomes are >= 0 and < 1e9: the condition holds, or not


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("amplified") / "amplified-work"
    out.mkdir()
    (out / "main.py").write_text(SOURCE)
    (out / "saferoom.toml").write_text(TOML)
    return out


def _pipeline(catalog_dir: Path) -> Pipeline:
    limits = WorkerLimits(memory_mib=512, cpu_seconds=10, wall_seconds=8.0, output_mib=4)
    engine = WorkerLimits(memory_mib=2048, cpu_seconds=30, wall_seconds=30.0, output_mib=16)
    isolation = Isolation(seccomp=False, landlock=False, network_namespace=False)
    return Pipeline(catalog_dir, Manifest.load(catalog_dir), limits, engine, isolation)


@pytest.fixture(scope="module")
def pipeline(catalog_dir: Path) -> Iterator[Pipeline]:
    p = _pipeline(catalog_dir)
    try:
        yield p
    finally:
        p.close()


def test_refused_before_any_engine_work_whatever_the_condition(
    pipeline: Pipeline, package_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine_calls: list[Any] = []
    real = pipeline._engine.run
    monkeypatch.setattr(pipeline._engine, "run", lambda *a, **k: engine_calls.append(a) or real(*a, **k))
    package = load_package(package_dir)
    messages, times = [], []
    for params in (HOLDS, FAILS, HOLDS, FAILS):
        start = time.perf_counter()
        with pytest.raises(LimitExceeded) as caught:
            pipeline.run(package, params)
        times.append(time.perf_counter() - start)
        messages.append((caught.value.code, caught.value.message))
    assert engine_calls == []  # nothing ran over the data
    assert len(set(messages)) == 1  # the same refusal either way
    code, message = messages[0]
    assert code == "limit_exceeded"
    assert message.startswith("refused before running")
    assert "join on k" in message and "rows" in message
    assert str(PERSON) not in message.replace("20,000", "")  # public numbers only: nothing about the person


def test_the_same_plan_without_amplification_is_admitted(pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(
        SOURCE.replace('("bus_stops", "stop_id"), ', "").replace(', ("land_use", "parcel_id")', ",")
    )
    (tmp_path / "saferoom.toml").write_text(TOML.replace("amplified-work", "unamplified"))
    outcome = pipeline.run(load_package(tmp_path), HOLDS)  # 20,000 x 50 schools at worst: runs, is suppressed
    assert [o.name for o in outcome.outputs] == ["n"]


WORK = """
def run(ctx, cutoff=0):
    kept = ctx.table("population").filter(col("income") > cutoff).with_columns(k=lit(1)).select("k", "person_id")
    pairs = kept.join(ctx.table("schools").with_columns(k=lit(1)).select("k", "school_id"), on="k")
    return {"n": pairs.group_by("k").agg(n=count())}
"""


def _published(p: Pipeline, package: Any, params: dict[str, Any]) -> tuple[float, float]:
    """Run as the server does with timing protection: (seconds from the first release's start to the moment the
    job may publish its end, the admitted worst case the deadline was extended by)."""
    deadline = ReleaseDeadline()
    calls: list[tuple[float, float]] = []
    extend = deadline.extend

    def spy(seconds: float) -> None:
        calls.append((time.monotonic(), seconds))
        extend(seconds)

    deadline.extend = spy  # type: ignore[method-assign]
    p.run(package, params, deadline=deadline)
    deadline.wait()
    ((started, seconds),) = calls  # one release
    return time.monotonic() - started, seconds


def test_an_admitted_job_ends_at_its_worst_case_whatever_the_data(pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(WORK)
    (tmp_path / "saferoom.toml").write_text(TOML.replace("amplified-work", "data-dependent-work"))
    package = load_package(tmp_path)
    everyone, no_one = HOLDS, FAILS  # every person's income is > -1, nobody's is > 1e9
    took: dict[str, list[float]] = {"everyone": [], "no one": []}
    for _ in range(3):  # without protection the work shows: interleaved, the fastest of each (load only adds)
        for kind, params in (("everyone", everyone), ("no one", no_one)):
            start = time.monotonic()
            pipeline.run(package, params)
            took[kind].append(time.monotonic() - start)
    assert min(took["everyone"]) > min(took["no one"]), took  # 20,000 x 50 rows joined, or none
    published = [_published(pipeline, package, params) for params in (everyone, no_one, everyone, no_one)]
    worst = {padded for _, padded in published}
    assert len(worst) == 1  # the worst case is the plan's and the catalog's, not the data's
    for elapsed, padded in published:
        assert padded <= elapsed < padded + 0.25  # published at the deadline: the same for both


def test_refused_through_a_real_server(server: SaferoomServer, deployment: Deployment, package_dir: Path) -> None:
    with deployment.client("alice", server.port) as alice, deployment.client("olga", server.port) as olga:
        summary, _ = alice.submit_package(package_dir)
        olga.approve_package(summary.hash, days=1)
        jobs = [_run(alice, summary.hash, params) for params in (HOLDS, FAILS)]
    assert [j.state for j in jobs] == ["failed", "failed"]
    assert {j.error_code for j in jobs} == {"limit_exceeded"}
    assert jobs[0].error_message == jobs[1].error_message
    assert "refused before running" in jobs[0].error_message


def _run(client: Client, package_hash: str, params: dict[str, Any]) -> Any:
    job = client.run_job(package_hash, params)
    return client.wait(job.id, timeout=120)


def test_a_cancel_during_the_padding_ends_the_job_as_cancelled(pipeline: Pipeline, tmp_path: Path) -> None:
    """Cancelling while a job waits out its worst case ends it as cancelled, at once: never with its result
    published early (that would tell when the work had really finished)."""
    (tmp_path / "main.py").write_text(WORK)
    (tmp_path / "saferoom.toml").write_text(TOML.replace("amplified-work", "data-dependent-work"))
    deadline, cancel = ReleaseDeadline(), threading.Event()
    pipeline.run(load_package(tmp_path), FAILS, deadline=deadline)
    assert deadline.at is not None and deadline.at > time.monotonic()
    threading.Timer(0.05, cancel.set).start()
    with pytest.raises(JobCancelled):
        deadline.wait(cancel)
    assert time.monotonic() < deadline.at  # ended by the cancel, before the deadline
