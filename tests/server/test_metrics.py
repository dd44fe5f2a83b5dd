"""The metrics endpoint, scraped over real HTTP from a real server during a real burst of jobs, checked against
what happened; the probes; and one JSON log line per call that carries nothing a client or the data said."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from saferoom.errors import PermissionDenied, SaferoomError
from saferoom.server import SaferoomServer, create_server
from saferoom.server.observe import JsonLines
from tests.support import Deployment, approve_all, server_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port: int) -> Samples:
    status, text = scrape(port)
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def observed(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    state = tmp_path_factory.mktemp("metrics-state")
    config = server_config(
        catalog_dir, state, deployment.pki, metrics_listen="127.0.0.1:0", max_concurrent_jobs=1, max_code_phases=1
    )
    srv, port = create_server(config)
    try:
        approve_all(deployment, port, algorithms_dir)
        with deployment.client("bob", port) as bob:
            bob.submit_package(algorithms_dir / "echo")  # approved already: bob may run it too
        yield srv
    finally:
        srv.stop(1.0)


def test_metrics_during_a_burst_match_what_happened(observed: SaferoomServer, deployment: Deployment) -> None:
    port = observed.metrics_port
    assert port is not None
    before = samples(port)
    # Scraped all through the burst and the deepest sample kept: a trivial job takes milliseconds, so one
    # scrape after the submissions could come when every job has already run (seen in CI).
    polled: list[Samples] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            polled.append(samples(port))

    poller = threading.Thread(target=poll)
    poller.start()
    with deployment.client("alice", observed.port) as alice, deployment.client("bob", observed.port) as bob:
        # Submitted side by side: one after the other, the first jobs could finish before the last is queued.
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            jobs = list(pool.map(lambda i: alice.run_job("echo", {"n": i}), range(6)))
        jobs.append(bob.run_job("echo", {"n": 1}))
        with pytest.raises(PermissionDenied):
            alice.list_pending()  # a researcher may not see the review queue: refused, counted
        finals = [alice.wait(j.id, timeout=60) for j in jobs[:6]] + [bob.wait(jobs[6].id, timeout=60)]
    done.set()
    poller.join()
    # One job runs at a time: the rest wait, and alice's queue is the deeper one.
    during = max(polled, key=lambda p: value(p, "saferoom_queue_depth", researcher="alice"))
    assert all(f.state == "succeeded" for f in finals)
    assert value(during, "saferoom_queue_depth", researcher="alice") >= 3
    assert value(during, "saferoom_queue_depth", researcher="alice") >= value(
        during, "saferoom_queue_depth", researcher="bob"
    )
    after = samples(port)
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}

    assert (
        value(after, "saferoom_jobs", state="succeeded", code="")
        - value(before, "saferoom_jobs", state="succeeded", code="")
        == 7
    )
    assert value(after, "saferoom_queue_depth", researcher="alice") == 0
    for phase in ("queue", "code", "padded"):
        assert delta[("saferoom_job_phase_seconds_count", (("phase", phase),))] == 7
    assert not any(
        dict(labels).get("phase") in ("engine", "release", "quantum") for name, labels in after
    )  # unpadded phases only with metrics_phase_detail
    assert delta[("saferoom_requests_total", (("code", "OK"), ("method", "/saferoom.v1.JobsService/RunJob")))] == 7
    assert delta[("saferoom_refusals_total", (("code", "PERMISSION_DENIED"),))] == 1
    # Every record the burst appended is counted, each write fsynced and timed; the gauge is the log's head.
    assert value(after, "saferoom_audit_last_seq") == observed.audit.last_seq
    assert delta[("saferoom_audit_appends_total", ())] >= 7 * 4 + 1  # queued, started, released, finished; refused
    assert delta[("saferoom_audit_fsync_seconds_count", ())] >= 7
    assert value(after, "saferoom_worker_pool_up", pool="engine") == 1
    # When an engine slot frees is when the engine ended (data-dependent, and polled at will): not by default.
    assert not any(name == "saferoom_job_slots_busy" for name, _ in after)
    assert ("saferoom_sandbox_layer", (("layer", "seccomp"),)) in after


def test_probes_and_hostile_http(observed: SaferoomServer) -> None:
    port = observed.metrics_port
    assert port is not None
    assert scrape(port, "/healthz") == (200, "ok\n")
    assert scrape(port, "/readyz") == (200, "ready\n")
    assert scrape(port, "/../etc/passwd")[0] == 404
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/metrics", body=b"x" * 10_000)
    assert connection.getresponse().status == 405
    connection.close()
    # Clients that connect and never send a request line hold no slot for long: the endpoint still answers.
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if scrape(port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "idle connections starved the endpoint"
            time.sleep(0.5)
    finally:
        for s in idle:
            s.close()
    # A client dribbling its headers a byte a second (never silent long enough to time out) is cut off.
    dribbler = socket.create_connection(("127.0.0.1", port))
    try:
        dribbler.sendall(b"GET /metrics HTTP/1.1\r\n")
        began = time.monotonic()
        with pytest.raises(OSError):
            while time.monotonic() - began < 30:
                dribbler.sendall(b"X")
                time.sleep(1)
        assert time.monotonic() - began < 20
    finally:
        dribbler.close()


def test_one_json_line_per_call_with_nothing_from_the_client(
    observed: SaferoomServer, deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-label-from-the-client"
    with caplog.at_level(logging.INFO, logger="saferoom.requests"), deployment.client("alice", observed.port) as alice:
        job = alice.run_job("echo", {"label": secret})
        alice.wait(job.id, timeout=60)
        with pytest.raises(SaferoomError):
            alice.get_job("f" * 32)  # NOT_FOUND, its message quoting what the client sent
    lines = [JsonLines().format(r) for r in caplog.records if r.name == "saferoom.requests"]
    parsed = [json.loads(line) for line in lines]
    assert all(
        set(p) == {"ts", "level", "logger", "method", "identity", "code", "error", "duration_ms"} for p in parsed
    )
    run = next(p for p in parsed if p["method"] == "/saferoom.v1.JobsService/RunJob")
    assert run["identity"] == "alice" and run["code"] == "OK" and run["duration_ms"] >= 0
    missing = next(p for p in parsed if p["method"] == "/saferoom.v1.JobsService/GetJob" and p["code"] != "OK")
    assert missing["code"] == "NOT_FOUND" and missing["error"]
    assert not any(secret in line or "f" * 32 in line for line in lines)


def test_readyz_says_stopping_and_the_endpoint_closes(
    catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    srv, _ = create_server(server_config(catalog_dir, tmp_path / "state", deployment.pki, metrics_listen="127.0.0.1:0"))
    port = srv.metrics_port
    assert port is not None and scrape(port, "/readyz")[0] == 200
    stopper = threading.Thread(target=srv.stop, args=(1.0,))
    stopper.start()
    stopper.join(30)
    with pytest.raises(OSError):
        scrape(port, "/healthz")


def test_readyz_is_503_with_the_reason_once_the_audit_log_cannot_be_written(
    catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    """A load balancer must stop sending work to a server that refuses every action: the disk under the audit log
    goes away (its descriptor now refuses writes), an action fails, and /readyz says why while /healthz stays up."""
    import os

    srv, port = create_server(
        server_config(catalog_dir, tmp_path / "state", deployment.pki, metrics_listen="127.0.0.1:0")
    )
    try:
        metrics = srv.metrics_port
        assert metrics is not None and scrape(metrics, "/readyz") == (200, "ready\n")
        audit = srv.audit
        with audit._lock:  # the descriptor is the log's own: swapped while no write is under way
            assert audit._fd is not None
            os.close(audit._fd)
            audit._fd = os.open(os.devnull, os.O_RDONLY)
        package = Path(__file__).resolve().parents[2] / "algorithms" / "population_profile"
        with deployment.client("alice", port) as alice, pytest.raises(SaferoomError, match="refuses actions"):
            alice.submit_package(package)  # not acknowledged: its records wait in the outbox, as after a crash
        status, body = scrape(metrics, "/readyz")
        assert status == 503 and "audit log cannot be written" in body
        assert scrape(metrics, "/healthz") == (200, "ok\n")  # the process answers: not to be restarted blindly
    finally:
        srv.stop(1.0)


def test_detailed_phases_split_the_engine_from_the_release_work(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    """With ``metrics_phase_detail`` (a scraper trusted like the server), a job's data phase is exported as the
    time its engine runs took, the server's release work around them, and the wait for the quantum's boundary;
    the three add up to the padded phase."""
    config = server_config(
        catalog_dir,
        tmp_path / "state",
        deployment.pki,
        metrics_listen="127.0.0.1:0",
        metrics_phase_detail=True,
        release_quantum_ms=100,
    )
    srv, port = create_server(config)
    try:
        approve_all(deployment, port, algorithms_dir)
        metrics = srv.metrics_port
        assert metrics is not None
        with deployment.client("alice", port) as alice:
            for _ in range(2):
                job = alice.run_job("population-profile", {})
                assert alice.wait(job.id, timeout=120).state == "succeeded"
        found = samples(metrics)
        count = {p: value(found, "saferoom_job_phase_seconds_count", phase=p) for p in ("engine", "release", "quantum")}
        total = {p: value(found, "saferoom_job_phase_seconds_sum", phase=p) for p in ("engine", "release", "quantum")}
        assert count == {"engine": 2, "release": 2, "quantum": 2}
        assert total["engine"] > 0 and total["release"] > 0  # both real work: the engine workers, the rules
        # The padded phase ends at the boundary; the quantum mark when the end was recorded, just after it.
        padded = value(found, "saferoom_job_phase_seconds_sum", phase="padded")
        assert total["engine"] + total["release"] < padded <= sum(total.values()) + 0.01
    finally:
        srv.stop(1.0)
