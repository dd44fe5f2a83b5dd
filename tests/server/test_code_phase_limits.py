"""The code phase of a job (the sandbox worker running the algorithm, which only builds plans) has CPU and
wall-clock limits of its own, apart from the engine's, and a job's code cannot hold a slot past them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from saferoom.config import WorkerLimits
from saferoom.server import create_server
from tests.support import Deployment, approve_all, server_config

ENGINE = WorkerLimits(memory_mib=2048, cpu_seconds=60, wall_seconds=60.0, output_mib=16)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (WorkerLimits(memory_mib=512, cpu_seconds=1, wall_seconds=30.0, output_mib=4), "CPU time limit of 1 s"),
        (WorkerLimits(memory_mib=512, cpu_seconds=30, wall_seconds=2.0, output_mib=4), "wall-clock limit of 2 s"),
    ],
)
def test_the_code_phase_stops_at_its_own_limits_not_the_engines(
    code: WorkerLimits,
    message: str,
    catalog_dir: Path,
    algorithms_dir: Path,
    deployment: Deployment,
    tmp_path: Path,
) -> None:
    config = server_config(catalog_dir, tmp_path / "state", deployment.pki, sandbox_limits=code, engine_limits=ENGINE)
    srv, port = create_server(config)
    try:
        packages = tmp_path / "packages"
        for name in ("forever", "echo"):
            shutil.copytree(algorithms_dir / name, packages / name)
        approve_all(deployment, port, packages)
        with deployment.client("alice", port) as alice:
            started = time.monotonic()
            job = alice.wait(alice.run_job("forever").id, timeout=60)
            took = time.monotonic() - started
            assert job.state == "failed"
            assert message in job.error_message, job.error_message
            assert took < 20, f"the code phase ran {took:.1f} s, as if under the engine's limits"
            # and the next job gets the slot
            assert alice.wait(alice.run_job("echo", {"n": 1}).id, timeout=60).state == "succeeded"
    finally:
        srv.stop(1.0)
