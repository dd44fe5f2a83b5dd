"""Red team: reading the size of a held result off the moment its job shows as awaiting_check.

The attack: a job whose exact result is held for an output checker (the researcher may never be cleared to see
it). Its end is published at its boundary, but if the result's rows were written to the state database only
then, the moment the job shows as ``awaiting_check`` would follow their size (about 4.5 ns a byte: a millisecond
per 220 KB), and with it how many cells the data let through. What must hold: with timing protection on, a
result's rows are written before the boundary (``JobStore.stage_result``, padded by the result's admitted bytes),
and the end at the boundary changes the job's state only. A job that ends without its result (cancelled,
interrupted) drops the staged rows; staged rows of a running job are no finding for the audit crosscheck.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saferoom.audit.crosscheck import check_server_state
from saferoom.errors import JobNotFound
from saferoom.server import SaferoomServer, create_server
from saferoom.store import checks as store_checks
from saferoom.store import jobs as store_jobs
from tests.support import Deployment, approve_all, server_config

SOURCE = """\
def run(ctx):
    return {"stats": ctx.table("population").group_by("district", "sex").agg(n=count())}
"""
MANIFEST = """\
name = "held-size"
version = "1.0.0"
entrypoint = "main.py:run"
datasets = ["population"]
"""


def _packages(root: Path, private: bool = False) -> Path:
    package = root / "held_size"
    package.mkdir(parents=True)
    (package / "saferoom.toml").write_text(
        MANIFEST + ("[privacy]\nepsilon = { population = 0.5 }\n" if private else "")
    )
    (package / "main.py").write_text(SOURCE)
    return root


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Which function wrote a result's rows, each time one did."""
    callers: list[str] = []
    real = store_jobs.write_result

    def spy(*args: Any, **kwargs: Any) -> None:
        callers.append(sys._getframe(1).f_code.co_name)
        real(*args, **kwargs)

    monkeypatch.setattr(store_jobs, "write_result", spy)
    monkeypatch.setattr(store_checks, "write_result", spy)
    yield callers


def _server(catalog: Path, state: Path, deployment: Deployment, quantum_ms: int) -> tuple[SaferoomServer, int]:
    return create_server(server_config(catalog, state, deployment.pki, release_quantum_ms=quantum_ms))


@pytest.mark.parametrize("catalog", ["checked_catalog_dir", "dp_catalog_dir"], ids=["held", "released"])
def test_a_result_is_stored_before_its_boundary_and_its_end_only_changes_the_state(
    catalog: str, request: pytest.FixtureRequest, deployment: Deployment, tmp_path: Path, writes: list[str]
) -> None:
    data_dir = request.getfixturevalue(catalog)
    srv, port = _server(data_dir, tmp_path / "state", deployment, 250)
    try:
        approve_all(deployment, port, _packages(tmp_path / "packages", private=catalog == "dp_catalog_dir"))
        if catalog == "dp_catalog_dir":
            with deployment.client("olga", port) as olga:
                olga.set_budget("alice", "population", 1.0)
        with deployment.client("alice", port) as alice:
            job = alice.wait(alice.run_job("held-size", {}).id, timeout=120)
        assert job.state == ("awaiting_check" if catalog == "checked_catalog_dir" else "succeeded"), job
        assert writes == ["stage_result"]  # ahead of the end, once; the end itself wrote no rows
        assert check_server_state(srv.database, srv.audit) == []  # stored and recorded agree
    finally:
        srv.stop(1.0)


def test_a_job_cancelled_while_it_waits_for_its_boundary_drops_its_staged_result(
    checked_catalog_dir: Path, deployment: Deployment, tmp_path: Path, writes: list[str]
) -> None:
    srv, port = _server(checked_catalog_dir, tmp_path / "state", deployment, 30_000)  # the wait outlasts us
    try:
        approve_all(deployment, port, _packages(tmp_path / "packages"))
        with deployment.client("alice", port) as alice:
            job = alice.run_job("held-size", {})
            deadline = time.monotonic() + 60
            while writes != ["stage_result"]:  # staged: the job waits for its boundary now
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert check_server_state(srv.database, srv.audit) == []  # a running job's staged rows are no finding
            alice.cancel_job(job.id)
            assert alice.wait(job.id, timeout=30).state == "cancelled"
        with pytest.raises(JobNotFound):
            srv.jobs._store.get_result(job.id)  # nothing of it stays in the state database
        assert check_server_state(srv.database, srv.audit) == []
    finally:
        srv.stop(1.0)
