"""Red team: a researcher who hogs the server's shared slots (jobs, streams) or hangs its workers.

Each attack runs against a real server on a loopback port with real confined workers. The layer that must stop
it: the job scheduler (fair slots, ``saferoom.jobs.service``), the stream slots of the auth interceptor
(``saferoom.server.auth``) and the worker pool (``saferoom.sandbox.pool``), which replaces a hung zygote.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saferoom.client import Client
from saferoom.config import WorkerLimits
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, approve_all, server_config

SLOTS = 3


@pytest.fixture(scope="module")
def hogged(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    """A server with three job slots, four stream slots per identity, and packages approved for alice and bob."""
    config = server_config(
        catalog_dir,
        tmp_path_factory.mktemp("hogged"),
        deployment.pki,
        max_concurrent_jobs=SLOTS,
        max_code_phases=SLOTS,  # one kind of slot here: the fair shares alone (the split is tested below)
        max_streams=12,
        max_streams_per_identity=3,
    )
    srv, port = create_server(config)
    try:
        approve_all(deployment, port, algorithms_dir, researcher="alice")
        approve_all(deployment, port, algorithms_dir, researcher="bob")
        yield srv
    finally:
        srv.stop(1.0)


def _states(operator: Client) -> list[tuple[str, str]]:
    jobs, _ = operator.list_jobs(page_size=100)
    return [(j.owner, j.state) for j in jobs]


def test_one_researcher_never_holds_more_than_a_fair_share_of_job_slots_while_others_wait(
    hogged: SaferoomServer, deployment: Deployment
) -> None:
    """bob floods the queue with jobs that run until the sandbox's wall-clock limit; alice's short jobs must
    always find a slot: while any of hers waits, bob runs at most ceil(3 slots / 2 owners) = 2 jobs.

    Before fair slots (round-robin of starts only), every other slot freed by alice's short jobs went to bob,
    whose long jobs then held all three slots while alice's waited."""
    port = hogged.port
    with (
        deployment.client("alice", port) as alice,
        deployment.client("bob", port) as bob,
        deployment.client("olga", port) as olga,
    ):
        hog = [bob.run_job("forever").id for _ in range(2 * SLOTS)]
        while sum(state == "running" for _, state in _states(olga)) < SLOTS:  # bob alone: he may use them all
            time.sleep(0.05)
        good = [alice.run_job("echo", {"n": i}).id for i in range(4)]
        worst = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = _states(olga)
            waiting = any(owner == "alice" and state == "queued" for owner, state in states)
            if not waiting and all(alice.get_job(j).finished for j in good):
                break
            # Without preemption, bob keeps the slots he took while alone until his jobs end: count from the
            # first of them ending on.
            if waiting and any(owner == "bob" and state == "failed" for owner, state in states):
                worst = max(worst, sum(owner == "bob" and state == "running" for owner, state in states))
            time.sleep(0.05)
        for job_id in good:
            assert alice.wait(job_id, timeout=60).state == "succeeded"
        assert worst <= 2, f"bob ran {worst} of {SLOTS} slots while alice's jobs waited"
        for job_id in hog:
            bob.cancel_job(job_id)
        for job_id in hog:
            assert bob.wait(job_id, timeout=60).state in ("cancelled", "failed")


def test_code_that_spins_to_its_limits_keeps_no_engine_slot_from_others(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    """With the code phase apart from the engine's slots (the default), bob's loops, even started while the
    server was idle, take at most max_concurrent_jobs code phases and no engine slot: alice's jobs run at once,
    long before any of bob's loops ends. Before, they waited for his loops to reach the code phase's limits."""
    loops = WorkerLimits(memory_mib=512, cpu_seconds=30, wall_seconds=20.0, output_mib=4)  # cancelled before
    config = server_config(
        catalog_dir, tmp_path / "state", deployment.pki, max_concurrent_jobs=2, max_code_phases=4, sandbox_limits=loops
    )
    srv, port = create_server(config)
    try:
        packages = tmp_path / "packages"
        for name in ("forever", "echo"):
            shutil.copytree(algorithms_dir / name, packages / name)
        approve_all(deployment, port, packages, researcher="alice")
        approve_all(deployment, port, packages, researcher="bob")
        with deployment.client("alice", port) as alice, deployment.client("bob", port) as bob:
            hog = [bob.run_job("forever").id for _ in range(6)]
            deadline = time.monotonic() + 30
            while sum(bob.get_job(j).state == "running" for j in hog) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert sum(bob.get_job(j).state == "running" for j in hog) == 2  # his cap: the engine's slots
            started = time.monotonic()
            for n in range(3):
                assert alice.wait(alice.run_job("echo", {"n": n}).id, timeout=60).state == "succeeded"
            took = time.monotonic() - started
            assert all(not bob.get_job(j).finished for j in hog[:2]), "bob's loops ended first: nothing shown"
            assert took < 10.0, f"alice's three jobs took {took:.1f} s next to bob's loops"
            for job_id in hog:
                bob.cancel_job(job_id)
            for job_id in hog:
                assert bob.wait(job_id, timeout=60).state == "cancelled"
    finally:
        srv.stop(1.0)


def test_a_cancelled_queued_job_gives_up_its_turn(hogged: SaferoomServer, deployment: Deployment) -> None:
    """Cancelling a job that waits removes it from the queue at once (it does not linger as a waiting job)."""
    port = hogged.port
    with deployment.client("bob", port) as bob:
        hog = [bob.run_job("forever").id for _ in range(SLOTS + 2)]
        queued = hog[-1]
        assert bob.cancel_job(queued).state == "cancelled"
        for job_id in hog:
            bob.cancel_job(job_id)
        for job_id in hog:
            assert bob.wait(job_id, timeout=60).state == "cancelled"


def _watch_health(channel: grpc.Channel) -> Iterator[health_pb2.HealthCheckResponse]:
    """A stream any authenticated identity may open and hold for as long as it likes (health Watch)."""
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)  # type: ignore[no-any-return]


def test_three_identities_cannot_hold_all_stream_slots(hogged: SaferoomServer, deployment: Deployment) -> None:
    """alice, bob and rex each open streams until refused (at 3 each); then audrey and olga still get theirs.
    The one over its share gets RESOURCE_EXHAUSTED naming the limits. Before, 8 per identity of 24 in all: three
    identities held every slot."""
    channels = {n: deployment.channel(n, hogged.port) for n in ("alice", "bob", "rex", "audrey", "olga")}
    held = []
    try:
        for name in ("alice", "bob", "rex"):
            for _ in range(3):
                stream = _watch_health(channels[name])
                assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
                held.append(stream)
            refused = _watch_health(channels[name])
            with pytest.raises(grpc.RpcError) as info:
                next(refused)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "per identity" in (info.value.details() or "")
        for name in ("audrey", "olga"):
            stream = _watch_health(channels[name])
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            held.append(stream)
        with deployment.client("alice", hogged.port) as alice:  # and unary calls are served meanwhile
            assert alice.list_datasets()
    finally:
        for stream in held:
            stream.cancel()  # type: ignore[attr-defined]
        for channel in channels.values():
            channel.close()
    # the slots come back once the streams end
    with deployment.channel("alice", hogged.port) as channel:
        deadline = time.monotonic() + 10
        while True:
            try:
                stream = _watch_health(channel)
                next(stream)
                stream.cancel()  # type: ignore[attr-defined]
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.1)


def _spares(server: SaferoomServer) -> set[int]:
    """The pools' spare workers (``saferoom.sandbox.pool``): forked and confined, waiting for their task."""
    pools = (server.pipeline._sandbox, server.pipeline._engine)
    return {pid for pid in (p.spare_pid for p in pools) if pid is not None}


def _stop_zygotes(server: SaferoomServer) -> set[int]:
    """SIGSTOP both zygotes, and kill the spare workers forked before (which would run the next task without
    asking the zygote): the next fork meets the stopped zygote."""
    before = _zygotes(server)
    for pid in before:
        os.kill(pid, signal.SIGSTOP)
    server.pipeline._sandbox.discard_spare()
    server.pipeline._engine.discard_spare()
    return before


def _zygotes(server: SaferoomServer) -> set[int]:
    """The server's zygote processes (its sandbox's and its engine's)."""
    return {pid for pid in server.pipeline.zygote_pids.values() if pid is not None}


def test_a_stopped_zygote_is_replaced_and_jobs_still_end(hogged: SaferoomServer, deployment: Deployment) -> None:
    """SIGSTOP both zygotes of a running server: the next job detects them hung (no answer within a few
    seconds), kills them, forks from fresh ones and succeeds; before, it hung forever and cancel did nothing."""
    before = _stop_zygotes(hogged)
    assert len(before) >= 2
    try:
        with deployment.client("alice", hogged.port) as alice:
            started = time.monotonic()
            job = alice.run_job("echo", {"n": 3})
            final = alice.wait(job.id, timeout=90)
            assert final.state == "succeeded", final.error_message
            assert time.monotonic() - started < 60
        after = _zygotes(hogged)
        assert before.isdisjoint(after), "the stopped zygotes are still there"
    finally:
        for pid in before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_cancel_ends_a_job_whose_zygote_is_stopped(hogged: SaferoomServer, deployment: Deployment) -> None:
    """A job waiting on a stopped zygote ends as cancelled promptly when cancelled."""
    before = _stop_zygotes(hogged)
    try:
        with deployment.client("alice", hogged.port) as alice:
            job = alice.run_job("echo", {"n": 4})
            while alice.get_job(job.id).state == "queued":
                time.sleep(0.02)
            time.sleep(0.3)  # waiting on the stopped zygote now
            cancelled_at = time.monotonic()
            alice.cancel_job(job.id)
            final = alice.wait(job.id, timeout=60)
            assert final.state == "cancelled", (final.state, final.error_message)
            assert time.monotonic() - cancelled_at < 10
    finally:
        for pid in before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_cancel_ends_a_job_whose_worker_is_stopped(hogged: SaferoomServer, deployment: Deployment) -> None:
    """A job whose sandbox worker was SIGSTOPped mid-task (a hung worker) ends as cancelled."""
    with deployment.client("alice", hogged.port) as alice:
        job = alice.run_job("forever")
        worker = None
        deadline = time.monotonic() + 30
        while worker is None and time.monotonic() < deadline:
            spares = _spares(hogged)  # forked ahead for the next task: not this job's worker
            for zygote in _zygotes(hogged):
                for task in Path(f"/proc/{zygote}/task").iterdir():
                    children = [int(c) for c in (task / "children").read_text().split()]
                    busy = set(children) - spares - _spares(hogged)
                    if busy and worker is None:
                        worker = busy.pop()
                        try:
                            os.kill(worker, signal.SIGSTOP)
                        except ProcessLookupError:  # a spare taken and killed meanwhile: look again
                            worker = None
            time.sleep(0.05)
        assert worker is not None
        alice.cancel_job(job.id)
        assert alice.wait(job.id, timeout=30).state == "cancelled"
