"""Red-team fixtures: the real sandbox pool (forked, confined workers) and a helper to run hostile code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saferoom.catalog.manifest import Manifest
from saferoom.sandbox import Limits, WorkerPool

TASK = "saferoom.sandbox.runner:run_algorithm"


class Sandbox:
    """Runs algorithm source in the real sandbox worker pool, as the server does."""

    def __init__(self, pool: WorkerPool, manifest: Manifest) -> None:
        self.pool = pool
        self.manifest = manifest.to_data()

    def run(
        self,
        source: str,
        datasets: tuple[str, ...] = ("population", "bus_stops"),
        params: dict[str, Any] | None = None,
        extra_files: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        files = {"main.py": source, **(extra_files or {})}
        request = {
            "files": files,
            "entrypoint": "main.py:run",
            "params": params or {},
            "manifest": self.manifest,
            "datasets": list(datasets),
        }
        return self.pool.run(TASK, request).data


@pytest.fixture(scope="session")
def sandbox(catalog_dir: Path) -> Iterator[Sandbox]:
    limits = Limits(memory_bytes=384 * 2**20, cpu_seconds=5, wall_seconds=8, output_bytes=8 * 2**20)
    with WorkerPool(
        name="redteam",
        initializer="saferoom.sandbox.runner:sandbox_initializer",
        init_args={},
        tasks=[TASK],
        limits=limits,
    ) as pool:
        yield Sandbox(pool, Manifest.load(catalog_dir))


CANARY_TEXT = "CANARY-redteam-3f9d1c-never-leaves"


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A world-readable canary and a world-writable marker directory, watched around every red-team test."""
    root = tmp_path_factory.mktemp("planted")
    root.chmod(0o755)
    canary = root / "canary.txt"
    canary.write_text(CANARY_TEXT)
    canary.chmod(0o644)
    markers = root / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    yield canary, markers


@pytest.fixture(autouse=True)
def nothing_escapes(planted: tuple[Path, Path]) -> Iterator[None]:
    """After every red-team test: no marker was written anywhere we watch, and the canary is untouched."""
    canary, markers = planted
    yield
    assert list(markers.iterdir()) == [], "a marker file appeared"
    assert canary.read_text() == CANARY_TEXT
