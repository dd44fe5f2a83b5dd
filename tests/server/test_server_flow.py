"""The whole flow against a real server on loopback: real Arrow files, real worker processes."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from saferoom.client import Client
from saferoom.errors import (
    CodeRefused,
    DatasetNotFound,
    InvalidRequest,
    JobFailed,
    JobNotFound,
    NotApproved,
    PackageNotFound,
)
from saferoom.server import SaferoomServer


def run_to_end(client: Client, package: str, params: dict[str, object] | None = None, timeout: float = 120):
    job = client.run_job(package, params or {})
    assert job.state == "queued"
    return client.wait(job.id, timeout=timeout)


def test_site_selection_releases_only_aggregates(client: Client) -> None:
    job = run_to_end(client, "site-selection", {"top": 5, "cell_m": 1000})
    assert job.state == "succeeded", job.error_message
    result = client.get_result(job.id)
    candidates = result.output("candidates")
    assert candidates.kind == "aggregate"
    assert candidates.table is not None
    assert 1 <= candidates.table.num_rows <= 5
    assert "score" in candidates.table.column_names
    assert not [c for c in candidates.table.column_names if c.startswith("_")]
    scores = candidates.table.column("score").to_pylist()
    assert scores == sorted(scores, reverse=True)
    assert any(r["rule"] == "min_contributors" for r in candidates.report["rules"])


def test_population_profile_by_district(client: Client) -> None:
    job = run_to_end(client, "population-profile")
    assert job.state == "succeeded", job.error_message
    result = client.get_result(job.id)
    tables = {o.name: o.table for o in result.outputs if o.table is not None}
    assert tables, "the profile releases at least one table"
    districts = set()
    for table in tables.values():
        if "district" in table.column_names:
            districts |= set(table.column("district").to_pylist())
    assert {"Siming", "Huli"} <= districts


def test_small_cells_are_suppressed_with_their_keys(client: Client) -> None:
    job = run_to_end(client, "small-cells")
    assert job.state == "succeeded", job.error_message
    result = client.get_result(job.id)
    by_person = result.output("by_person")
    assert by_person.table is not None and by_person.table.num_rows == 0
    fine = result.output("fine")
    assert fine.table is not None
    assert 0 < fine.table.num_rows < 1000  # of the 6 x 97 x 2 district, age and sex cells: many suppressed
    assert min(fine.table.column("n").to_pylist(), default=10) >= 10
    coarse = result.output("coarse")
    for output in (by_person, fine, coarse):  # the researcher's report has no count of them (exact data)
        assert output.report["suppressed_cells"] == 0
    assert sum(coarse.table.column("n").to_pylist()) == 20_000


def test_row_level_personal_data_is_refused(client: Client) -> None:
    job = run_to_end(client, "row-leak")
    assert job.state == "failed"
    assert job.error_code == "release_refused"
    assert "population" in job.error_message
    with pytest.raises(JobFailed) as info:
        client.get_result(job.id)
    assert info.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]


def test_values_params_printed_and_public_rows(client: Client) -> None:
    job = run_to_end(client, "echo", {"n": 4, "label": "hi", "ratio": 0.25, "flag": True})
    assert job.state == "succeeded", job.error_message
    assert job.params == {"n": 4, "label": "hi", "ratio": 0.25, "flag": True}
    result = client.get_result(job.id)
    assert result.output("n").value == 8
    assert result.output("label").value == "hi"
    assert result.output("flag").value is True
    stops = result.output("stops")
    assert stops.kind == "public"
    assert stops.table is not None and stops.table.num_rows == 4
    assert "echo 4 hi" in result.printed


def test_refused_code_is_refused_at_submission_with_its_line(client: Client) -> None:
    package = Path(__file__).resolve().parents[1] / "fixtures" / "refused" / "refused_code"
    with pytest.raises(CodeRefused) as caught:
        client.submit_package(package)
    assert caught.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "main.py, line 1" in caught.value.message
    assert "/" not in caught.value.message.replace("main.py", "")
    assert all(p.name != "refused-code" for p in client.list_packages())  # nothing stored


@pytest.mark.parametrize(
    ("package", "codes"),
    [
        ("forever", {"timeout"}),
        ("memory-bomb", {"limit_exceeded"}),
        ("engine-bomb", {"limit_exceeded", "timeout"}),
    ],
)
def test_hostile_job_fails_alone(client: Client, package: str, codes: set[str]) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bad = pool.submit(run_to_end, client, package)
        good = pool.submit(run_to_end, client, "echo", {"n": 2})
        good_job, bad_job = good.result(timeout=180), bad.result(timeout=180)
    assert good_job.state == "succeeded", good_job.error_message
    assert bad_job.state == "failed"
    assert bad_job.error_code in codes, (bad_job.error_code, bad_job.error_message)
    # and the server keeps serving
    assert run_to_end(client, "echo").state == "succeeded"


def test_cancel_a_running_job(client: Client) -> None:
    job = client.run_job("forever")
    for update in client.watch_job(job.id, timeout=30):
        if update.state == "running":
            break
    cancelled = client.cancel_job(job.id)
    final = client.wait(cancelled.id, timeout=30)
    assert final.state == "cancelled"


def test_list_jobs_pages_newest_first(client: Client) -> None:
    ids = [client.run_job("echo", {"n": i}).id for i in range(3)]
    for job_id in ids:
        client.wait(job_id, timeout=60)
    first, token = client.list_jobs(page_size=2)
    assert [j.id for j in first] == ids[::-1][:2]
    assert token
    second, _ = client.list_jobs(page_size=2, page_token=token)
    assert second[0].id == ids[0]


@pytest.mark.parametrize(
    ("call", "error", "status"),
    [
        (lambda c: c.describe_dataset("no_such_dataset"), DatasetNotFound, grpc.StatusCode.NOT_FOUND),
        (lambda c: c.get_job("0" * 32), JobNotFound, grpc.StatusCode.NOT_FOUND),
        (lambda c: c.get_job("../../etc/passwd"), InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (lambda c: c.run_job("no-such-package"), PackageNotFound, grpc.StatusCode.NOT_FOUND),
        # parameters outside the approved schema: the approval does not cover them
        (lambda c: c.run_job("echo", {"n": 1000}), NotApproved, grpc.StatusCode.FAILED_PRECONDITION),
        (lambda c: c.run_job("echo", {"n": "three"}), NotApproved, grpc.StatusCode.FAILED_PRECONDITION),
        (lambda c: c.run_job("echo", {"nope": 1}), NotApproved, grpc.StatusCode.FAILED_PRECONDITION),
        (lambda c: c.run_job("echo", datasets=["population"]), NotApproved, grpc.StatusCode.FAILED_PRECONDITION),
        (lambda c: c.run_job("echo", {"x" * 500: 1}), InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (lambda c: c.run_job("echo\x00; rm -rf /"), InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (lambda c: c.list_jobs(page_size=100_000), InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda c: c.download_mock("population", rows=10**9),
            InvalidRequest,
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
def test_bad_requests_get_precise_status_codes(client: Client, call, error, status) -> None:
    with pytest.raises(error) as info:
        call(client)
    assert info.value.grpc_code == status  # type: ignore[attr-defined]
    assert client.list_datasets()  # still serving


def test_result_of_unfinished_job_is_failed_precondition(client: Client) -> None:
    job = client.run_job("forever")
    with pytest.raises(Exception) as info:
        client.get_result(job.id)
    assert info.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    client.cancel_job(job.id)


def test_watch_unknown_job_is_not_found_and_cancel_of_finished_job_is_harmless(client: Client) -> None:
    with pytest.raises(JobNotFound) as info:
        list(client.watch_job("a" * 32, timeout=10))
    assert info.value.grpc_code == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    done = run_to_end(client, "echo")
    assert client.cancel_job(done.id).state == "succeeded"


def test_concurrent_clients_get_their_own_results(client: Client) -> None:
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(lambda n: run_to_end(client, "echo", {"n": n}), range(6)))
    for n, job in enumerate(jobs):
        assert job.state == "succeeded"
        assert client.get_result(job.id).output("n").value == 2 * n


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_a_crashing_worker_fails_its_job_alone(client: Client, server) -> None:
    zygote = server.pipeline._sandbox.zygote_pid
    victim = client.run_job("forever")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        good = pool.submit(run_to_end, client, "echo", {"n": 3})
        deadline = time.monotonic() + 20
        while client.get_job(victim.id).state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        workers: set[int] = set()
        while not workers:  # the long-lived worker is the looping job's (echo's lives milliseconds)
            first = set(_children(zygote)) - {server.pipeline._sandbox.spare_pid}
            time.sleep(0.3)
            workers = first & set(_children(zygote)) - {server.pipeline._sandbox.spare_pid}  # not the spare
            assert time.monotonic() < deadline
        for pid in workers:  # as a segfault in native code would
            os.kill(pid, signal.SIGSEGV)
        crashed = client.wait(victim.id, timeout=30)
        assert good.result(timeout=60).state == "succeeded"
    assert crashed.state == "failed"
    assert crashed.error_code == "worker_crashed"
    assert run_to_end(client, "echo").state == "succeeded"


def test_differencing_through_the_server_is_withheld_by_the_subset_rule(client: Client, catalog_dir: Path) -> None:
    from saferoom.catalog import Catalog

    with Catalog.open(catalog_dir) as catalog:
        table = catalog.table("population")
        districts = table.column("district").to_pylist()
        person = int(table.column("person_id")[districts.index("Siming")].as_py())
    job = run_to_end(client, "differencing", {"person": person})
    assert job.state == "succeeded", job.error_message
    result = client.get_result(job.id)
    assert result.output("everyone").table is not None and result.output("everyone").table.num_rows == 1
    withheld = result.output("all_but_one")
    assert withheld.table is not None and withheld.table.num_rows == 0
    # The researcher reads which rules ran, not that this one withheld the output (that would be one more bit).
    assert any(r["rule"] == "subset" for r in withheld.report["rules"])
    assert not any("withheld:" in r["explanation"] for r in withheld.report["rules"])


def test_jobs_are_served_fairly_between_researchers(
    catalog_dir: Path, algorithms_dir: Path, deployment, tmp_path: Path, make_config
) -> None:
    """One worker, alice queues four jobs, then bob one: bob's runs first of them, not fifth (alice's blocker just
    held the slot for seconds: she has used it more lately)."""
    from saferoom.server import create_server
    from saferoom.store import JobStore
    from tests.support import approve_all

    config = make_config(catalog_dir, tmp_path / "state", deployment.pki, max_concurrent_jobs=1, max_code_phases=1)
    server, port = create_server(config)
    try:
        approve_all(deployment, port, algorithms_dir)
        approve_all(deployment, port, algorithms_dir, researcher="bob")  # same content: already approved
        with deployment.client("alice", port) as alice, deployment.client("bob", port) as bob:
            blocker = alice.run_job("forever")
            deadline = time.monotonic() + 20
            while alice.get_job(blocker.id).state != "running":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            alices = [alice.run_job("echo", {"n": i}) for i in range(1, 4)]
            bobs = bob.run_job("echo", {"n": 9})
            alice.cancel_job(blocker.id)
            assert all(alice.wait(job.id, timeout=60).state == "succeeded" for job in alices)
            assert bob.wait(bobs.id, timeout=60).state == "succeeded"
        store = JobStore(server.database)
        started = sorted((store.get_job(j.id).started_at or 0, j.id) for j in (*alices, bobs))
        assert [job_id for _, job_id in started].index(bobs.id) == 0  # before alice's next ones
    finally:
        server.stop(1.0)


def test_watchers_see_every_state_of_their_own_job_and_leave_nothing_behind(
    server: SaferoomServer, client: Client
) -> None:
    """A job's changes wake its own watchers (each its own stream), never the others'; two watchers of one job
    and one of another all see their job through to its end, and the server keeps no watch of finished jobs."""
    first, second = client.run_job("echo", {"n": 1}), client.run_job("echo", {"n": 2})
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(lambda j: [u.state for u in client.watch_job(j, timeout=60)], job.id)
                   for job in (first, first, second)]  # fmt: skip
        seen = [s.result(timeout=90) for s in streams]
    for states in seen:
        assert states[-1] == "succeeded" and len(states) == len(set(states))  # each change once, in order
        assert all(s in ("queued", "running", "succeeded") for s in states)
    assert server.jobs._watched == {}  # every watch gave its registration back
