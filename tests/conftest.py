"""Shared fixtures: a small generated catalog, a PKI with one identity per role, a real mutual-TLS server on a
loopback port with every test package submitted by a researcher and approved by an operator, and clients."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from saferoom.catalog import generate_catalog
from saferoom.client import Client
from saferoom.config import ServerConfig
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, approve_all, make_deployment, server_config

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
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """One PKI for the session (tests that revoke make their own)."""
    return make_deployment(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def algorithms_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vetted packages plus the test packages (hostile and misbehaving ones among them)."""
    out = tmp_path_factory.mktemp("algorithms")
    for source in (ALGORITHMS, TEST_PACKAGES):
        for package in sorted(p for p in source.iterdir() if (p / "saferoom.toml").exists()):
            shutil.copytree(package, out / package.name)
    return out


@pytest.fixture(scope="session")
def make_config() -> Callable[..., ServerConfig]:
    """``server_config`` as a fixture, for tests that start servers of their own."""
    return server_config


@pytest.fixture(scope="module")
def server(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    """A real saferoom server on 127.0.0.1 (mutual TLS) with its own state; alice's packages approved by olga."""
    srv, port = create_server(server_config(catalog_dir, tmp_path_factory.mktemp("state"), deployment.pki))
    try:
        approve_all(deployment, port, algorithms_dir)
        yield srv
    finally:
        srv.stop(1.0)


@pytest.fixture
def client(server: SaferoomServer, deployment: Deployment) -> Iterator[Client]:
    """Alice, a researcher."""
    with deployment.client("alice", server.port) as c:
        yield c
