"""Old dataset versions and running servers: a server keeps what it serves (its lease) and what its running jobs
read, collects once they are done and at start-up, survives nothing of it past a SIGKILL, and records every
collection (its own or an operator's `datasets gc`) in the audit log, once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from saferoom.audit.log import AuditFilter
from saferoom.cli.main import cli
from saferoom.config import ServerConfig
from saferoom.importer import DEFAULT_KEEP
from saferoom.importer.versions import history
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, approve_all, import_stops, serve_process, server_config

SPIN = {  # reads the stops, then keeps its job running until the sandbox's wall-clock limit
    "saferoom.toml": 'name = "spin-stops"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["stops"]\n',
    "main.py": (
        'def run(ctx):\n    t = ctx.table("stops")\n    n = 0\n'
        '    while True:\n        n = n + 1\n    return {"n": n}\n'
    ),
}


def _packages(tmp_path: Path) -> Path:
    packages = tmp_path / "packages"
    (packages / "spin_stops").mkdir(parents=True)
    for name, text in SPIN.items():
        (packages / "spin_stops" / name).write_text(text)
    return packages


def _gc(catalog: Path, state: Path, *extra: str) -> dict[str, Any]:
    """`saferoom datasets gc --keep 0 --json`: the decision on each version, by version hash."""
    args = ["datasets", "gc", "--catalog", str(catalog), "--state", str(state), "--keep", "0", "--json", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return {v["version"]: v for v in json.loads(result.output)["versions"]}


def _file(catalog: Path, version: str) -> Path:
    return catalog / next(v.file for v in history(catalog, "stops") if v.version == version)


def _until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _collected(srv: SaferoomServer) -> list[tuple[str, str, str, str]]:
    records = srv.audit.read(AuditFilter(events=frozenset({"dataset_collected"})))
    return [
        (r.objects["dataset"], r.summary["version"], r.summary["collected_by"], r.summary["reason"]) for r in records
    ]


def _first_version(tmp_path: Path) -> tuple[Path, Path, str]:
    """A catalog with one version of ``stops`` (its hash returned), and where the server's state goes."""
    catalog = tmp_path / "catalog"
    return catalog, tmp_path / "state", import_stops(tmp_path, catalog, 40)


def _running(deployment: Deployment, port: int, packages: Path) -> str:
    """A job of the spinning package, once it runs (it has recorded the version it reads)."""
    approve_all(deployment, port, packages)
    with deployment.client("alice", port) as alice:
        job = alice.run_job("spin-stops", {}).id
        _until(lambda: alice.get_job(job).state == "running")
        return job


def test_the_server_keeps_the_default_of_the_command() -> None:
    assert ServerConfig().dataset_versions_kept == DEFAULT_KEEP


@pytest.mark.slow
def test_a_version_a_running_job_reads_stays_until_the_job_ends_then_the_server_collects_it(
    tmp_path: Path, deployment: Deployment
) -> None:
    catalog, state, old = _first_version(tmp_path)
    config = server_config(catalog, state, deployment.pki, catalog_poll_seconds=0, dataset_versions_kept=0)
    srv, port = create_server(config)
    try:
        assert srv.watcher is not None
        job = _running(deployment, port, _packages(tmp_path))
        new = import_stops(tmp_path, catalog, 60)
        assert srv.watcher.check() == ["stops"]  # new jobs run on the new version; the job goes on on the old
        kept = _gc(catalog, state)[old]
        assert (kept["collected"], kept["reason"]) == (False, "held")  # the old pool serves it, with its job
        assert _file(catalog, old).exists()

        with deployment.client("alice", port) as alice:
            assert alice.wait(job, timeout=60).state == "failed"  # the wall-clock limit
        _until(lambda: not _file(catalog, old).exists())  # its pool closed: the server collected it
        _until(lambda: _collected(srv) == [("stops", old, "server", "unreferenced")])
        assert _file(catalog, new).exists()
        (entry,) = [v for v in history(catalog, "stops") if v.version == old]
        assert entry.collected_by == "server" and entry.collected_at
    finally:
        srv.stop(1.0)


def _session(sid: int) -> list[int]:
    """The live (not zombie) processes of a session: a server started in a session of its own, its zygotes and
    their workers (which move to process groups of their own, never to another session)."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            live.append(int(entry.name))
    return live


def _kill_9(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the server process alone, as a crash would; its worker pools die with it (PDEATHSIG), a worker the
    moment it has closed what it inherited."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _until(lambda: not _session(proc.pid), 10)


@contextlib.contextmanager
def _serving(catalog: Path, state: Path, deployment: Deployment, env: dict[str, str]) -> Iterator[int]:
    """`saferoom serve` in a process of its own (its port), killed with SIGKILL when the block ends."""
    proc, port = serve_process(catalog, state, deployment.pki, env)
    try:
        yield port
    finally:
        _kill_9(proc)


@pytest.mark.slow
def test_a_version_a_live_server_holds_is_kept_and_collected_once_the_server_is_killed(
    tmp_path: Path, deployment: Deployment
) -> None:
    catalog, state, old = _first_version(tmp_path)
    # It never looks for new versions: it serves the old one (mapped, and leased) for as long as it lives.
    with _serving(catalog, state, deployment, {"SAFEROOM_CATALOG_POLL_SECONDS": "0"}):
        new = import_stops(tmp_path, catalog, 60)
        assert _gc(catalog, state, "--dry-run")[old]["reason"] == "held"
        assert _gc(catalog, state)[old]["reason"] == "held"
        assert _file(catalog, old).exists()
    # The server was killed. Its last lock can outlast the processes this test sees by moments (measured: held at
    # one collection 1 time in 5-14, free at the next a few milliseconds later); an operator's next run collects.
    _until(lambda: _gc(catalog, state, "--dry-run")[old]["reason"] != "held", 10)
    decided = _gc(catalog, state)
    assert (decided[old]["collected"], decided[old]["reason"]) == (True, "unreferenced")
    assert (decided[new]["collected"], decided[new]["reason"]) == (False, "current")
    assert not _file(catalog, old).exists() and _file(catalog, new).exists()
    # The operator's collection reaches the audit log through the next server, once however often it starts.
    for _ in range(2):
        srv, _ = create_server(server_config(catalog, state, deployment.pki, catalog_poll_seconds=0))
        try:
            assert _collected(srv) == [("stops", old, "datasets gc", "unreferenced")]
        finally:
            srv.stop(1.0)


@pytest.mark.slow
def test_a_version_a_job_read_when_its_server_crashed_is_kept_until_the_restart_settles_the_job(
    tmp_path: Path, deployment: Deployment
) -> None:
    catalog, state, old = _first_version(tmp_path)
    env = {"SAFEROOM_CATALOG_POLL_SECONDS": "0", "SAFEROOM_DATASET_VERSIONS_KEPT": "0"}
    with _serving(catalog, state, deployment, env) as port:
        job = _running(deployment, port, _packages(tmp_path))
        import_stops(tmp_path, catalog, 60)
    _until(lambda: _gc(catalog, state, "--dry-run")[old]["reason"] != "held", 10)  # the last lock, as above
    kept = _gc(catalog, state)[old]  # no process holds it, but the state says a job is running on it
    assert (kept["collected"], kept["reason"], kept["jobs"]) == (False, "job", [job])
    assert _file(catalog, old).exists()
    # The restart fails the interrupted job, then collects at start-up.
    config = server_config(catalog, state, deployment.pki, catalog_poll_seconds=0, dataset_versions_kept=0)
    srv, port = create_server(config)
    try:
        with deployment.client("alice", port) as alice:
            assert alice.get_job(job).error_code == "interrupted"
        assert not _file(catalog, old).exists()
        assert _collected(srv) == [("stops", old, "server", "unreferenced")]
    finally:
        srv.stop(1.0)
