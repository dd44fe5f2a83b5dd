"""Spark fixtures: one local Spark Connect server (local[2], loopback only) for the whole session, and the test
city exported to partitioned Parquet.

Every Spark test module is in the xdist group "spark" (``--dist loadgroup``): they all run in one worker, so
only one server starts. Without pyspark or Java these tests fail; set SAFEROOM_SKIP_SPARK=1 to skip them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saferoom.catalog.manifest import Manifest

SKIP = os.environ.get("SAFEROOM_SKIP_SPARK") == "1"


@pytest.fixture(scope="session")
def spark_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server on 127.0.0.1, started once, stopped at the end of the session."""
    if SKIP:
        pytest.skip("SAFEROOM_SKIP_SPARK=1")
    from saferoom.engine.spark_local import LocalConnectServer

    log = tmp_path_factory.mktemp("spark") / "connect-server.log"
    server = LocalConnectServer(log, master="local[2]")
    try:
        server.wait()
    except RuntimeError as exc:
        server.stop()
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(f"{exc}\n{tail}")
    try:
        yield server.url
    finally:
        server.stop()


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
