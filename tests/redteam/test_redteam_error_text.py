"""Red team, value-derived error text (issue 11, item 4): a job that fails while the engine runs over data must
not carry what the engine said, which can quote a personal value (``Float value 5718...248.000000 was truncated
converting to int64`` decodes one person's exact income in one job).

    attack                          layer that stops it
    engine error quoting a value    Pipeline.run's engine phase (saferoom.jobs.failures): the fixed engine_failed
    ... in jobs get / GetResult     the job record holds only the catalogue's code and message
    ... in every operator's list    the same record
    ... in the job_failed record    the audit summary is built from the same code and message
    ... in the state on disk        the text goes to the diagnostic log only

A real server over mutual TLS, the real sandbox and release rewrite; the engine pool is replaced, at its boundary in
the server process, by a fake that fails the way the real pool does when an engine worker reports an error. (A
genuine engine failure is not used: the engine is being made total, so none stays reliable.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from saferoom.errors import EngineFailed, InvalidPlan, JobFailed, error_from_code
from saferoom.sandbox.pool import Reply
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

PACKAGE = Path(__file__).resolve().parents[1] / "fixtures" / "packages" / "small_cells"
SECRET = "5718236491248"
LEAKY = f"the engine could not execute the plan: Float value {SECRET}.000000 was truncated converting to int64"


class LeakyEngine:
    """The engine pool as seen from the server after a worker failed on one person's value: records the task and
    raises what ``WorkerPool.run`` rebuilds from the worker's reply."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run(
        self, task: str, request: dict[str, Any], blobs: Sequence[bytes] = (), *, limits: Any = None, cancel: Any = None
    ) -> Reply:
        self.calls.append(task)
        raise error_from_code(InvalidPlan.code, LEAKY)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def leaky(
    catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, Path, str]]:
    state = tmp_path_factory.mktemp("error-text")
    srv, port = create_server(server_config(catalog_dir, state, deployment.pki))
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            summary, _ = alice.submit_package(PACKAGE)
            olga.approve_package(summary.hash, days=1)
        yield srv, state, summary.hash
    finally:
        srv.stop(1.0)


def test_an_engine_error_quoting_a_value_reaches_nobody(
    leaky: tuple[SaferoomServer, Path, str],
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    srv, state, package_hash = leaky
    engine = LeakyEngine()
    monkeypatch.setattr(srv.pipeline, "_engine", engine)
    caplog.set_level(logging.WARNING, logger="saferoom.jobs.failures")
    with (
        deployment.client("alice", srv.port) as alice,
        deployment.client("olga", srv.port) as olga,
        deployment.client("audrey", srv.port) as audrey,
    ):
        job = alice.run_job(package_hash)
        final = alice.wait(job.id, timeout=120)
        assert engine.calls, "the job must fail in the engine phase"
        assert (final.state, final.error_code, final.error_message) == (
            "failed",
            "engine_failed",
            EngineFailed.fixed_message,
        )
        got = alice.get_job(job.id)
        assert (got.error_code, got.error_message) == ("engine_failed", EngineFailed.fixed_message)
        for who in (alice, olga):  # the researcher's list and every operator's
            listed = {j.id: j for j in who.list_jobs(page_size=100)[0]}
            assert (listed[job.id].error_code, listed[job.id].error_message) == (
                "engine_failed",
                EngineFailed.fixed_message,
            )
            assert all(SECRET not in j.error_message for j in listed.values())
        with pytest.raises(JobFailed) as caught:
            alice.get_result(job.id)
        assert SECRET not in caught.value.message and EngineFailed.fixed_message in caught.value.message
        records = list(audrey.read_log(job=job.id))
        failed = [r for r in records if r.event == "job_failed"]
        assert len(failed) == 1
        assert failed[0].summary["code"] == "engine_failed"
        assert failed[0].summary["message"] == EngineFailed.fixed_message
        assert all(SECRET not in repr(r) for r in records)
        assert all(SECRET not in repr(r) for r in audrey.read_log())
    # Nowhere in the server's state on disk either: the audit log's files, the database and its WAL.
    for path in sorted(p for p in state.rglob("*") if p.is_file()):
        assert SECRET.encode() not in path.read_bytes(), f"{path.relative_to(state)} holds the value"
    # The operator of the host can still find out what happened, in the server's diagnostic log only.
    logged = [r for r in caplog.records if r.name == "saferoom.jobs.failures" and job.id in r.getMessage()]
    assert logged and logged[0].levelno == logging.WARNING and SECRET in logged[0].getMessage()
