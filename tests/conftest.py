"""Shared fixtures: a small generated catalog, a real server on a loopback port, a client for it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.catalog import generate_catalog
from saferoom.client import Client
from saferoom.config import ServerConfig, WorkerLimits
from saferoom.server import SaferoomServer, create_server

REPO = Path(__file__).resolve().parent.parent
ALGORITHMS = REPO / "algorithms"
TEST_PACKAGES = Path(__file__).resolve().parent / "fixtures" / "packages"
SCALE = 20_000


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated city of 20,000 persons (Arrow IPC files + catalog.json)."""
    out = tmp_path_factory.mktemp("catalog")
    generate_catalog(out, scale=SCALE, seed=7)
    return out


@pytest.fixture(scope="session")
def algorithms_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vetted packages plus the test packages (hostile and misbehaving ones among them)."""
    out = tmp_path_factory.mktemp("algorithms")
    for source in (ALGORITHMS, TEST_PACKAGES):
        for package in sorted(p for p in source.iterdir() if (p / "saferoom.toml").exists()):
            shutil.copytree(package, out / package.name)
    return out


def server_config(
    catalog_dir: Path, state_dir: Path, algorithms_dir: Path, **overrides: object
) -> ServerConfig:
    """A config for tests: loopback, any free port, tight limits so bombs fail fast."""
    values: dict[str, object] = {
        "data_dir": catalog_dir,
        "state_dir": state_dir,
        "algorithms_dir": algorithms_dir,
        "listen": "127.0.0.1:0",
        "max_concurrent_jobs": 3,
        "sandbox_limits": WorkerLimits(memory_mib=512, cpu_seconds=10, wall_seconds=4.0, output_mib=4),
        "engine_limits": WorkerLimits(memory_mib=2048, cpu_seconds=30, wall_seconds=30.0, output_mib=16),
        "grace_seconds": 1.0,
    }
    values.update(overrides)
    return ServerConfig.load(env={}, **values)


@pytest.fixture(scope="session")
def make_config():
    """``server_config`` as a fixture, for tests that start servers of their own."""
    return server_config


@pytest.fixture(scope="module")
def server(
    catalog_dir: Path, algorithms_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    """A real saferoom server on 127.0.0.1 with its own state directory."""
    srv, _ = create_server(server_config(catalog_dir, tmp_path_factory.mktemp("state"), algorithms_dir))
    try:
        yield srv
    finally:
        srv.stop(1.0)


@pytest.fixture
def client(server: SaferoomServer) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", timeout=60) as c:
        yield c
