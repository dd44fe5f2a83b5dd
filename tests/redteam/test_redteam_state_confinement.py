"""A confined worker cannot open the server's private files (its database, its TLS and audit keys, the CA key),
and a server on a host where it could refuses to serve.

RestrictedPython gives algorithm code no ``open``; what keeps a worker that escaped it out of those files is
Landlock (only the interpreter, saferoom and the datasets are readable) or the drop to uid 65534 (the state
directory is 0700). A non-root server on a host without Landlock has neither: the start-up self-test tries to
open each file from a worker of each pool and refuses to serve if one opens (``workers_may_read_state`` lets an
operator serve anyway, with a warning). Every test here uses real confined workers and real files.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.jobs.pipeline import Isolation, Pipeline
from saferoom.sandbox.selftest import SelfTestFailed
from saferoom.server import create_server
from tests.support import Deployment, server_config


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may traverse (pytest's own are 0700): what matters is each file's own mode."""
    path = Path(tempfile.mkdtemp(prefix="saferoom-confinement-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _secret(directory: Path, mode: int) -> Path:
    secret = directory / "server.key"
    secret.write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n", encoding="utf-8")
    secret.chmod(mode)
    return secret


def _pipeline(catalog_dir: Path, landlock: bool) -> Pipeline:
    config = ServerConfig.load(env={})
    isolation = Isolation(landlock=landlock)
    return Pipeline(catalog_dir, Manifest.load(catalog_dir), config.sandbox_limits, config.engine_limits, isolation)


def test_landlock_keeps_workers_out_of_a_readable_file(catalog_dir: Path, open_dir: Path) -> None:
    pipeline = _pipeline(catalog_dir, landlock=True)
    try:
        if not pipeline.layers.get("landlock"):
            pytest.skip("this host has no Landlock")
        assert pipeline.self_test([_secret(open_dir, 0o644)]) > 0  # world-readable, but outside Landlock's view
    finally:
        pipeline.close()


def test_a_worker_that_can_read_the_servers_files_fails_the_self_test(catalog_dir: Path, open_dir: Path) -> None:
    # Without Landlock, a file anyone may read is what a non-root server's own files are to its workers (same uid).
    secret = _secret(open_dir, 0o644)
    pipeline = _pipeline(catalog_dir, landlock=False)
    try:
        with pytest.raises(SelfTestFailed, match=r"sandbox worker can read .*server\.key.*workers_may_read_state"):
            pipeline.self_test([secret])
    finally:
        pipeline.close()


def test_the_operator_may_serve_anyway_with_a_warning(
    catalog_dir: Path, open_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = _secret(open_dir, 0o644)
    pipeline = _pipeline(catalog_dir, landlock=False)
    try:
        with caplog.at_level(logging.WARNING, logger="saferoom.jobs.pipeline"):
            pipeline.self_test([secret], workers_may_read=True)
    finally:
        pipeline.close()
    warned = [r.getMessage() for r in caplog.records if "can read" in r.getMessage()]
    assert len(warned) == 2 and all("serving anyway" in w for w in warned)  # the sandbox and the engine pool


def test_the_uid_drop_keeps_workers_out_of_the_servers_own_files(catalog_dir: Path, open_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("workers drop to uid 65534 only when the server starts as root")
    pipeline = _pipeline(catalog_dir, landlock=False)
    try:
        pipeline.self_test([_secret(open_dir, 0o600)])  # the owner's alone: uid 65534 cannot open it
    finally:
        pipeline.close()


def test_a_server_whose_workers_could_read_its_ca_key_does_not_start(
    catalog_dir: Path, deployment: Deployment, open_dir: Path
) -> None:
    pki = open_dir / "pki"
    shutil.copytree(deployment.pki, pki)
    pki.chmod(0o755)
    (pki / "ca.key").chmod(0o644)  # a careless copy: the CA's key readable by anyone on the host
    config = server_config(catalog_dir, open_dir / "state", pki, landlock=False)
    with pytest.raises(SelfTestFailed, match=r"can read .*ca\.key"):
        create_server(config)
    # The operator's own choice, on record in the log: it serves.
    server, _ = create_server(server_config(catalog_dir, open_dir / "state2", pki, landlock=False,
                                            workers_may_read_state=True))  # fmt: skip
    server.stop()
