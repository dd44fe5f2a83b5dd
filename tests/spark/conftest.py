"""Spark fixtures: one local Spark Connect server (local[2], loopback only) for the whole test run, and the
test city exported to partitioned Parquet.

With ``pytest -n 2`` both workers may run Spark tests (grouping them with xdist_group/loadgroup does not work
with pytest 9.2 and pytest-xdist 3.8: xdist renames ``item._nodeid``, which pytest no longer reads). They share
one server: the first to need it starts it under a file lock in the run's shared temporary directory, each
user is counted, and the last one out stops it. Without pyspark or Java these tests fail; set
SAFEROOM_SKIP_SPARK=1 to skip them.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from saferoom.catalog.manifest import Manifest

SKIP = os.environ.get("SAFEROOM_SKIP_SPARK") == "1"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, stopped but not yet reaped by the worker that started it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_group(pid: int) -> None:
    """Stop a server another worker may have started (its own process group, so spark-submit's JVM goes too)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def spark_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server on 127.0.0.1, shared by the workers of this run, stopped by the last user."""
    if SKIP:
        pytest.skip("SAFEROOM_SKIP_SPARK=1")
    from saferoom.engine.spark_local import LocalConnectServer

    shared = tmp_path_factory.getbasetemp().parent  # one directory for the whole run, all workers
    lock, state_file = shared / "spark.lock", shared / "spark.json"
    mine: LocalConnectServer | None = None
    with _locked(lock):
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if not state or not _alive(state["pid"]):
            log = shared / f"spark-connect-{os.getpid()}.log"
            mine = LocalConnectServer(log, master="local[2]")
            try:
                mine.wait()
            except RuntimeError as exc:
                mine.stop()
                pytest.fail(f"{exc}\n{log.read_text(errors='replace')[-2000:] if log.exists() else ''}")
            state = {"url": mine.url, "pid": mine.pid, "users": 0}
        state["users"] += 1
        state_file.write_text(json.dumps(state))
    try:
        yield state["url"]
    finally:
        with _locked(lock):
            current = json.loads(state_file.read_text())
            current["users"] -= 1
            last = current["users"] <= 0
            if last:
                _stop_group(current["pid"])
                state_file.unlink()
            else:
                state_file.write_text(json.dumps(current))
        if mine is not None and last:
            mine.stop()  # reaps it (if another worker still uses it, that one stops it; init reaps it)


@pytest.fixture(scope="session")
def spark_session(spark_url: str) -> Any:
    from saferoom.engine.spark import connect

    session = connect(spark_url)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_catalog(catalog_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, Manifest]:
    """The exact-rules city written as Parquet: (a data directory whose personal datasets are on Spark and public
    ones on Arrow, its manifest, a manifest with every dataset on Spark)."""
    from saferoom.catalog.parquet import export_to_spark

    root = tmp_path_factory.mktemp("spark-city")
    source = Manifest.load(catalog_dir)
    everything = export_to_spark(catalog_dir, root / "all", root / "parquet-all", source.datasets)
    personal = [name for name, info in source.datasets.items() if not info.is_public]
    mixed = export_to_spark(catalog_dir, root / "data", root / "parquet", personal)
    return root / "data", mixed, everything
