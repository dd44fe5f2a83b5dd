"""A warm zygote has imported everything a worker needs: a task of each kind imports nothing after fork.

Workers drop privileges (to uid 65534 when started as root) and are confined before they run a task, so a
module imported lazily then may be unreadable; the measurement is taken inside the confined worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saferoom.errors import WorkerCrashed
from saferoom.sandbox import Limits, WorkerPool

MEASURE = "tests.sandbox_tasks:imports_during"
LIMITS = Limits(memory_bytes=2048 * 2**20, cpu_seconds=20, wall_seconds=30, output_bytes=8 * 2**20)


@pytest.fixture(scope="module")
def engine_pool(catalog_dir: Path) -> Iterator[WorkerPool]:
    tasks = ["saferoom.jobs.engine_task:execute_plans", "tests.sandbox_tasks:nulls_to_numpy", MEASURE]
    init = {"data_dir": str(catalog_dir)}
    with WorkerPool(
        name="warm-engine",
        initializer="saferoom.jobs.engine_task:open_catalog",
        init_args=init,
        tasks=tasks,
        limits=LIMITS,
    ) as pool:
        yield pool


@pytest.fixture(scope="module")
def sandbox_pool() -> Iterator[WorkerPool]:
    tasks = ["saferoom.sandbox.runner:check_code", "saferoom.sandbox.runner:run_algorithm", MEASURE]
    with WorkerPool(
        name="warm-sandbox",
        initializer="saferoom.sandbox.runner:sandbox_initializer",
        init_args={},
        tasks=tasks,
        limits=LIMITS,
    ) as pool:
        yield pool


def _imported(pool: WorkerPool, task: str, request: dict[str, Any]) -> list[str]:
    reply = pool.run(MEASURE, {"task": task, "request": request})
    return list(reply.data["imported"])


@pytest.mark.parametrize(
    ("task", "request_"),
    [
        ("tests.sandbox_tasks:nulls_to_numpy", {}),
        ("saferoom.jobs.engine_task:execute_plans", {}),
    ],
)
def test_an_engine_task_imports_nothing_after_fork(engine_pool: WorkerPool, task: str, request_: dict) -> None:
    assert _imported(engine_pool, task, request_) == []


WARM = "\uff57\uff41\uff52\uff4d"  # fullwidth letters: the parser loads unicodedata for them
CODE = {"main.py": f"def run(ctx):\n    {WARM} = [i for i in range(3)]\n    return {{'x': sum({WARM})}}\n"}


@pytest.mark.parametrize(
    ("task", "request_"),
    [
        ("saferoom.sandbox.runner:check_code", {"files": CODE}),
        ("saferoom.sandbox.runner:run_algorithm", {"files": CODE}),
    ],
)
def test_a_sandbox_task_imports_nothing_after_fork(sandbox_pool: WorkerPool, task: str, request_: dict) -> None:
    assert _imported(sandbox_pool, task, request_) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="workers drop to uid 65534 only when the server runs as root")
def test_a_module_not_imported_before_fork_is_out_of_reach_and_reported_as_such(sandbox_pool: WorkerPool) -> None:
    # Why the zygote must import everything: here the interpreter lives under /root (0700) or Landlock hides
    # it, so a worker importing a new module fails, and says so (not "may have run out of memory").
    reply = sandbox_pool.run(MEASURE, {"task": "xmlrpc.client:dumps"})
    assert reply.data["error"] == "ModuleNotFoundError"
    with pytest.raises(WorkerCrashed) as info:
        sandbox_pool.run(MEASURE, {"task": "xmlrpc.client:dumps", "reraise": True})
    assert info.value.message == "the worker failed: ModuleNotFoundError for module 'xmlrpc'"


@pytest.mark.parametrize("kind", ["engine", "sandbox"])
def test_a_spare_workers_warm_up_imports_nothing_after_fork(
    engine_pool: WorkerPool, sandbox_pool: WorkerPool, kind: str
) -> None:
    """The warm-up a spare runs before its task (``warm_worker``) is confined too: it may import nothing new."""
    pool, warm = {
        "engine": (engine_pool, "saferoom.jobs.engine_task:warm_worker"),
        "sandbox": (sandbox_pool, "saferoom.sandbox.runner:warm_worker"),
    }[kind]
    reply = pool.run(MEASURE, {"task": warm, "warm_up": True})
    assert reply.data == {"imported": [], "error": ""}


def test_an_arrow_engine_zygote_holds_neither_duckdb_nor_the_servers_modules(engine_pool: WorkerPool) -> None:
    """What an Arrow engine's workers never use stays out of their zygote: every module and library in it is
    memory whose page tables each fork copies and each worker's exit tears down."""
    assert "duckdb" not in Path(f"/proc/{engine_pool.zygote_pid}/maps").read_text()
    server_side = ("saferoom.audit", "saferoom.disclosure", "saferoom.jobs.service", "saferoom.jobs.pipeline",
                   "saferoom.server", "opendp", "grpc", "duckdb")  # fmt: skip
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, saferoom.jobs.engine_task; print(*sorted(sys.modules), sep='\\n')"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert [m for m in loaded if m.startswith(server_side)] == []
