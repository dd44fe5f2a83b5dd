"""One way to name things: a job id or package hash by its first characters (as lists show them), a package by
name where it is unambiguous; an ambiguous prefix is an error listing the candidates the caller may see, and a
filter that matches nothing says so. Through the real CLI and a real server."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferoom.cli.main import cli
from saferoom.server import SaferoomServer, create_server
from saferoom.store.jobs import JobRecord
from tests.support import Deployment, approve_all, server_config

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "tests" / "fixtures" / "packages" / "echo"


@pytest.fixture(scope="module")
def world(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, Path]]:
    state = tmp_path_factory.mktemp("names-state")
    srv, port = create_server(server_config(catalog_dir, state, deployment.pki))
    try:
        approve_all(deployment, port, algorithms_dir)
        yield srv, state
    finally:
        srv.stop(1.0)


def _as(deployment: Deployment, name: str, server: SaferoomServer, *args: str) -> tuple[int, str]:
    profile = deployment.pki / "identities" / name / "profile.toml"
    result = CliRunner().invoke(cli, ["--profile", str(profile), *args, "--server", f"127.0.0.1:{server.port}"])
    return result.exit_code, result.output


def test_a_job_by_the_first_characters_of_its_id(world: tuple[SaferoomServer, Path], deployment: Deployment) -> None:
    srv, _ = world
    with deployment.client("alice", srv.port) as alice:
        job = alice.wait(alice.run_job("echo", {"n": 2}).id, timeout=120)
    short = job.id[:8]  # as `jobs list` shows it
    for args in (("jobs", "get", short), ("jobs", "watch", short), ("jobs", "result", short, "--json")):
        code, out = _as(deployment, "alice", srv, *args)
        assert code == 0, (args, out)
    code, out = _as(deployment, "olga", srv, "jobs", "get", short)  # operators see every job
    assert code == 0 and short in out
    code, out = _as(deployment, "bob", srv, "jobs", "get", short)  # another researcher: as if it did not exist
    assert code == 1 and "no job starts with" in out
    code, out = _as(deployment, "alice", srv, "jobs", "get", job.id[:5])
    assert code == 1 and "at least its first 6" in out


def test_an_ambiguous_prefix_lists_the_candidates(world: tuple[SaferoomServer, Path], deployment: Deployment) -> None:
    srv, state = world
    now = time.time()
    base = JobRecord("", "alice", "0" * 64, "echo", "1.0.0", "{}", "[]", "cancelled", None, None, now, None, now, now)
    twins = [dataclasses.replace(base, id=f"abcdef{i}" + "0" * 25) for i in (1, 2)]
    hidden = dataclasses.replace(base, id="abcdef3" + "0" * 25, owner="bob")
    with sqlite3.connect(state / "saferoom.db") as conn:  # jobs made to share a prefix (ids are random)
        for job in (*twins, hidden):
            row = dataclasses.astuple(job)[:15]  # the jobs table's columns (not the versions the job read)
            conn.execute(f"INSERT INTO jobs VALUES ({', '.join('?' * 15)})", row)
    code, out = _as(deployment, "alice", srv, "jobs", "get", "abcdef")
    assert code == 1 and "starts 2 job ids" in out
    assert twins[0].id in out and twins[1].id in out and hidden.id not in out  # only what alice may see
    code, out = _as(deployment, "alice", srv, "jobs", "get", "abcdef2")
    assert code == 0 and "cancelled" in out


def test_packages_by_prefix_and_name_and_approval_only_by_hash(
    world: tuple[SaferoomServer, Path], deployment: Deployment, tmp_path: Path
) -> None:
    srv, _ = world
    package = tmp_path / "echo-two"
    package.mkdir()
    (package / "main.py").write_text((ECHO / "main.py").read_text() + "\n# version two\n")
    (package / "saferoom.toml").write_text((ECHO / "saferoom.toml").read_text().replace('"1.0.0"', '"2.0.0"'))
    with deployment.client("alice", srv.port) as alice:
        summary, _ = alice.submit_package(package)
    short = summary.hash[:12]
    for args in (("review", "show", short), ("review", "diff", "echo"), ("review", "diff", short)):
        code, out = _as(deployment, "olga", srv, *args)
        assert code == 0, (args, out)
    code, out = _as(deployment, "alice", srv, "package", "show", short)
    assert code == 0 and summary.hash in out.replace("\n", "")
    code, out = _as(deployment, "olga", srv, "review", "approve", "echo")
    assert code == 1 and "by its hash" in out  # exactly what was reviewed, never "whatever echo is now"
    code, out = _as(deployment, "olga", srv, "review", "approve", short)
    assert code == 0 and "approved" in out
    code, out = _as(deployment, "alice", srv, "jobs", "run", short, "--param", "n=1", "--json")
    assert code == 0, out


def test_audit_search_by_a_job_prefix_and_an_empty_search_says_so(
    world: tuple[SaferoomServer, Path], deployment: Deployment
) -> None:
    srv, _ = world
    with deployment.client("alice", srv.port) as alice:
        job = alice.wait(alice.run_job("echo", {}).id, timeout=120)
    code, out = _as(deployment, "audrey", srv, "audit", "search", "--job", job.id[:8], "--json")
    assert code == 0 and out.count('"job_queued"') == 1
    code, out = _as(deployment, "audrey", srv, "audit", "search", "--job", "ffffffff")
    assert code == 0 and "no record matches" in out


def test_operators_see_who_ran_what_and_when_with_filters_and_paging(
    world: tuple[SaferoomServer, Path], deployment: Deployment
) -> None:
    srv, _ = world
    with deployment.client("alice", srv.port) as alice, deployment.client("bob", srv.port) as bob:
        mine = [alice.wait(alice.run_job("echo", {"n": i}).id, timeout=120) for i in range(3)]
        bob.submit_package(ECHO)  # the same content: approved already, now his too
        theirs = bob.wait(bob.run_job("echo", {}).id, timeout=120)
    code, out = _as(deployment, "olga", srv, "jobs", "list", "--owner", "alice", "--state", "succeeded", "--json")
    assert code == 0, out
    listed = json.loads(out)  # one document: a list of jobs
    assert {j.id for j in mine} <= {j["id"] for j in listed}
    assert all(j["owner"] == "alice" and j["state"] == "succeeded" for j in listed)
    times = [(j["created_at"], j["started_at"], j["finished_at"]) for j in listed if j["id"] in {m.id for m in mine}]
    assert len(times) == 3 and all(queued <= started <= finished for queued, started, finished in times)
    code, out = _as(deployment, "olga", srv, "jobs", "list", "--owner", "bob")
    assert code == 0 and theirs.id[:8] in out and "bob" in out and "queued (UTC)" in out
    code, out = _as(deployment, "alice", srv, "jobs", "list", "--owner", "bob")  # not hers to see
    assert code == 0 and theirs.id[:8] not in out and "no job matches" in out
    code, out = _as(deployment, "olga", srv, "jobs", "list", "--since", "2999-01-01")
    assert code == 0 and "no job matches" in out
    code, out = _as(deployment, "olga", srv, "jobs", "list", "--state", "sleeping")
    assert code == 1 and "unknown job state" in out
    with deployment.client("olga", srv.port) as olga:  # paging: every job once, in order, newest first
        everything = list(olga.iter_jobs())
        pages, token = [], ""
        while True:
            page, token = olga.list_jobs(page_size=2, page_token=token)
            pages += page
            if not token:
                break
        assert [j.id for j in pages] == [j.id for j in everything] and len(everything) >= 4
        bobs = list(olga.iter_jobs(package="echo", owner="bob"))
        assert theirs.id in [j.id for j in bobs] and {(j.owner, j.package_name) for j in bobs} == {("bob", "echo")}


def test_jobs_run_says_which_job_at_once_and_ctrl_c_leaves_it_running(
    world: tuple[SaferoomServer, Path], deployment: Deployment
) -> None:
    import os
    import signal
    import subprocess
    import sys

    srv, _ = world
    code, out = _as(deployment, "alice", srv, "jobs", "run", "echo", "--param", "n=1")
    assert code == 0 and re.search(r"job [0-9a-f]{32} queued \(echo@", out) and "succeeded" in out
    profile = deployment.pki / "identities" / "alice" / "profile.toml"
    command = [sys.executable, "-m", "saferoom.cli.main", "--profile", str(profile), "jobs", "run", "forever",
               "--server", f"127.0.0.1:{srv.port}"]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # printed before the job ends
    match = re.search(r"job ([0-9a-f]{32}) queued", first)
    assert match, first
    os.kill(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 130, rest
    assert "goes on" in rest and f"saferoom jobs cancel {match.group(1)[:8]}" in rest
    assert "Traceback" not in rest and "Aborted" not in rest
    with deployment.client("alice", srv.port) as alice:
        assert alice.get_job(match.group(1)).state in ("queued", "running")  # Ctrl-C did not cancel it
        alice.cancel_job(match.group(1))
        assert alice.wait(match.group(1), timeout=60).state == "cancelled"
