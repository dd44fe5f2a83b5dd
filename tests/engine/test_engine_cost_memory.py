"""The memory the cost model admits is memory the engine worker really has: real releases in real confined workers.

A plan admitted by ``engine.cost`` must never reach the engine worker's memory limit, whatever the data holds
(the failure would depend on the data). Each plan here is released through the real pipeline (forked, confined
engine workers under RLIMIT_DATA) with the engine's memory limit set to the smallest that admits its worst case:
``MEMORY_SHARE`` of the limit just holds the estimate. Plans: the sensitivity fuzzer's random plans (filters, every
registry function, computed keys, joins with public tables, DP aggregates), the same plans with every filter
removed (their worst case), and the shipped algorithms; these also at ``SHIPPED_PERSONS`` with either rules, where
their per-row coefficients (the group-by's, the quantiles' gather) dominate: a worker's baseline already holds
mimalloc's reserved arena (about 1 GiB, counted by ``RLIMIT_DATA`` when the worker starts), so only a release
that really allocates more than that can show an estimate below the truth.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.fuzz_sensitivity import PlanMaker, World
from saferoom import disclosure
from saferoom.catalog import Catalog, generate_catalog
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.engine import cost, plan
from saferoom.errors import SaferoomError
from saferoom.jobs.pipeline import Pipeline
from saferoom.packages import load_package, validate_params
from saferoom.sandbox.runner import run_algorithm

ALGORITHMS = Path(__file__).resolve().parents[2] / "algorithms"
PERSONS = 100_000
SHIPPED_PERSONS = 20_000_000  # real peaks 0.8-1.6 GiB RssAnon, up to 1.15 GiB VmData (bench_engine_memory.py)


class _Unlimited:
    memory_bytes = 1 << 60
    cpu_seconds = 1 << 30
    wall_seconds = 1e9
    output_bytes = 1 << 60


def _without_filters(node: plan.Node) -> plan.Node:
    if isinstance(node, plan.Filter):
        return _without_filters(node.input)
    kids = plan.children(node)
    return plan.with_children(node, tuple(_without_filters(k) for k in kids)) if kids else node


def _algorithm(name: str, manifest: Manifest) -> dict[str, plan.Node]:
    package = load_package(ALGORITHMS / name)
    files = {p.name: p.read_text() for p in (ALGORITHMS / name).glob("*.py")}
    request = {"files": files, "entrypoint": package.entrypoint, "params": validate_params(package, {})}
    request |= {"manifest": manifest.to_data(), "datasets": list(package.datasets)}
    outputs = run_algorithm(None, request, [])[0]["outputs"]
    return {k: plan.from_data(v["plan"]) for k, v in outputs.items() if "plan" in v}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cost-memory")
    generate_catalog(data, scale=PERSONS, seed=7)
    return data


def _cases(data: Path, manifest: Manifest) -> Iterator[tuple[str, dict[str, plan.Node]]]:
    for name in ("population_profile", "site_selection"):
        yield name, _algorithm(name, manifest)
    catalog = Catalog.open(data)
    try:
        maker = PlanMaker(World(manifest, {n: catalog.table(n) for n in manifest.datasets}), random.Random(3))
        made = 0
        while made < 16:
            try:
                _, table = maker.table()
            except SaferoomError:
                continue
            made += 1
            yield f"random plan {made}", {"out": table._node}
            yield f"random plan {made} without filters", {"out": _without_filters(table._node)}
    finally:
        catalog.close()


@pytest.mark.slow
def test_every_admitted_release_fits_the_smallest_limit_that_admits_it(city: Path) -> None:
    checked = _release_at_smallest_limits(city, _cases(city, Manifest.load(city)))
    assert checked >= 20, f"only {checked} plans were admitted and released"


@pytest.mark.slow
@pytest.mark.timeout(900)  # 20M persons generated and released: about 2 minutes, more on a loaded machine
@pytest.mark.parametrize("private", [False, True], ids=["exact", "dp"])
def test_shipped_algorithms_at_scale_fit_the_smallest_limit_that_admits_them(tmp_path: Path, private: bool) -> None:
    generate_catalog(tmp_path, scale=SHIPPED_PERSONS, seed=7, differential_privacy=private, output_checking=False)
    manifest = Manifest.load(tmp_path)
    cases = ((name, _algorithm(name, manifest)) for name in ("population_profile", "site_selection"))
    assert _release_at_smallest_limits(tmp_path, cases) == 2


def _release_at_smallest_limits(data: Path, cases: Iterator[tuple[str, dict[str, plan.Node]]]) -> int:
    """Release each admitted case with the engine's memory limit the smallest that admits it; how many ran."""
    manifest = Manifest.load(data)
    config = ServerConfig.load(env={})
    pipelines: dict[int, Pipeline] = {}
    checked = 0
    try:
        for what, outputs in cases:
            try:
                protected = disclosure.protect(outputs, manifest)
                runs = cost.admit_job(protected, manifest, _Unlimited())
            except SaferoomError:
                continue  # refused before any work: nothing runs
            mib = max(math.ceil(r.memory_bytes / cost.MEMORY_SHARE / 2**20) for r in runs)
            if mib not in pipelines:
                # Memory is what this test measures: a plan refused for its time or reply size still runs.
                limits = replace(
                    config.engine_limits, memory_mib=mib, cpu_seconds=1 << 20, wall_seconds=1e6, output_mib=1 << 20
                )
                pipelines[mib] = Pipeline(data, manifest, config.sandbox_limits, limits)
            pipeline = pipelines[mib]
            with pipeline._acquire() as view:
                try:
                    pipeline._released(view, protected, None, {d: 1.0 for d in manifest.datasets})
                except SaferoomError as exc:
                    pytest.fail(f"{what}: admitted at {mib} MiB, failed: {type(exc).__name__}: {exc}")
            checked += 1
    finally:
        for p in pipelines.values():
            p.close()
    return checked
