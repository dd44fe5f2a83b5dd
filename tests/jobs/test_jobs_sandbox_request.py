"""What the code phase is given: the catalog entries of the datasets the package declared, nothing more.

A real pipeline (both pools forked, the real sandbox and engine); the sandbox pool is watched at its boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from saferoom.catalog.manifest import Manifest
from saferoom.config import WorkerLimits
from saferoom.jobs.pipeline import SANDBOX_TASK, Pipeline
from saferoom.packages import load_package
from saferoom.sandbox.pool import Reply

PACKAGES = Path(__file__).resolve().parents[1] / "fixtures" / "packages"


def test_the_sandbox_gets_the_declared_datasets_entries_only(
    catalog_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = WorkerLimits(memory_mib=512, cpu_seconds=10, wall_seconds=10.0, output_mib=4)
    engine = WorkerLimits(memory_mib=2048, cpu_seconds=30, wall_seconds=30.0, output_mib=16)
    manifest = Manifest.load(catalog_dir)
    assert len(manifest.datasets) > 1
    pipeline = Pipeline(catalog_dir, manifest, limits, engine)
    sent: list[dict[str, Any]] = []
    real = pipeline._sandbox.run

    def watched(task: str, request: dict[str, Any], blobs: Sequence[bytes] = (), **kwargs: Any) -> Reply:
        if task == SANDBOX_TASK:
            sent.append(request)
        return real(task, request, blobs, **kwargs)

    monkeypatch.setattr(pipeline._sandbox, "run", watched)
    try:
        package = load_package(PACKAGES / "small_cells")
        outcome = pipeline.run(package, {})
    finally:
        pipeline.close()
    assert [o.name for o in outcome.outputs]  # the job ran through on what it was given
    (request,) = sent
    assert sorted(request["manifest"]["datasets"]) == sorted(package.datasets) == ["population"]
    given = Manifest.from_data(request["manifest"])
    assert given.dataset("population") == manifest.dataset("population")  # the declared entry, whole
