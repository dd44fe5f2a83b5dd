"""Benchmark: does a release ever outlast the worst case it is padded to?

    python bench/bench_time_model.py [--scale 200000] [--plans 150] [--seed 1] [--algorithms-scale 1000000]
                                     [--adversarial-cells 10,300,3000]

The server pads every release to the admitted worst case of its engine runs (``engine.cost.padded_seconds``:
each node's cost per row for its kind and shape, a fixed ``RUN_SECONDS`` per run, the server's release work per
kind of output, ``engine.timing``), so that a job's duration shows nothing of the data. That holds only while the
real work stays below the model. This measures the margin, with the real pipeline (forked, confined engine
workers; the server's release step) and padding off, on a generated DP city of ``--scale`` persons:

    random plans     the sensitivity fuzzer's plan generator (filters, every registry function, computed keys,
                     joins with public tables, DP aggregates), each protected and admitted as the server does,
                     and their worst case: the same plan with every filter removed
    fixed cost       a one-row plan: what one engine run costs whatever it computes, next to ``RUN_SECONDS``
    shipped          the shipped algorithms (population profile, site selection) on two catalogs of
                     ``--algorithms-scale`` persons, exact rules and DP: measured from the first release's start
                     to the job's end, against the chained padded worst cases (``ReleaseDeadline``)

    adversarial      a DP median whose scores make permute and flip try candidates until the best, far better
                     than all others, on ``--adversarial-cells`` cells: its noise against its padding (the
                     draws padded by the released cells, ``disclosure.dp.quantile_draws_seconds``)

Adversarial data for the engine's constants: ``bench/bench_node_costs.py`` (every row its own group, random join
keys).

and prints, per kind, measured / padded time (median, p99, max) and how many releases overran. The settings that
change the figures: the machine (2 cores here), the scale, the engine worker limits (ServerConfig defaults).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa

from bench.fuzz_sensitivity import PlanMaker, World
from saferoom import disclosure
from saferoom.catalog import Catalog, generate_catalog
from saferoom.catalog.generate import _infos
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.disclosure import dp
from saferoom.engine import cost, plan, timing
from saferoom.engine.plan import AggExpr, Col
from saferoom.errors import SaferoomError
from saferoom.jobs.pipeline import Pipeline, ReleaseDeadline
from saferoom.packages import default_algorithms_dir, load_package

HERE = Path(__file__).resolve().parent


def without_filters(node: plan.Node) -> plan.Node:
    """``node`` with every Filter dropped: each filter keeping everything, the worst case of the same plan."""
    if isinstance(node, plan.Filter):
        return without_filters(node.input)
    kids = plan.children(node)
    if not kids:
        return node
    return plan.with_children(node, tuple(without_filters(k) for k in kids))


def _quantiles(ratios: list[float]) -> str:
    ordered = sorted(ratios)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"median {statistics.median(ordered):.3f}, p99 {p99:.3f}, max {ordered[-1]:.3f}"


class _Recorded(ReleaseDeadline):
    """A deadline that remembers when its first release started."""

    def __init__(self) -> None:
        super().__init__()
        self.first: float | None = None

    def extend(self, seconds: float) -> None:
        if self.first is None:
            self.first = time.monotonic()
        super().extend(seconds)


def shipped(persons: int, runs: int, config: ServerConfig) -> None:
    """The shipped algorithms' measured and padded times, exact rules and DP, on ``persons`` persons."""
    with tempfile.TemporaryDirectory(prefix="saferoom-bench-time-", dir=HERE.parent) as tmp:
        for private in (False, True):
            data = Path(tmp) / ("dp" if private else "exact")
            generate_catalog(data, scale=persons, seed=7, differential_privacy=private, output_checking=False)
            pipeline = Pipeline(data, Manifest.load(data), config.sandbox_limits, config.engine_limits)
            try:
                for name in ("population_profile", "site_selection"):
                    package = load_package(default_algorithms_dir() / name)
                    params = {spec.name: spec.default for spec in package.parameters.values()}
                    measured, padded = [], 0.0
                    for i in range(runs + 1):
                        deadline = _Recorded()
                        pipeline.run(package, params, deadline=deadline)
                        end = time.monotonic()
                        assert deadline.first is not None and deadline.at is not None
                        if i:  # the first run warms the pools up
                            measured.append(end - deadline.first)
                            padded = deadline.at - deadline.first
                    worst = max(measured)
                    print(
                        f"{persons:,} persons, {name:<19} {'DP   ' if private else 'exact'}: measured "
                        f"{statistics.median(measured):.2f} s (max {worst:.2f}) of {padded:.1f} s padded: "
                        f"padded / measured {padded / worst:.1f}{'; OVERRAN' if worst > padded else ''}"
                    )
            finally:
                pipeline.close()


def adversarial(cells: list[int], runs: int) -> None:
    """A DP median's noise on exact cells whose median candidate is far better than every other (50 persons on
    either side of it, the rest far away): every draw tries candidates until it meets it, the worst case of
    permute and flip; in cells of 400 persons (one draw over 501 candidates each) and of 40,000 (two draws, over
    23 and 22: ``dp._draws``). Measured wall time of ``dp.noise`` against its padding: the work before the draws
    at the cells' count plus the draws' padding it is told (``dp.quantile_draws_seconds``)."""
    infos = _infos(10_000, differential_privacy=True, output_checking=False)
    manifest = Manifest(name="x", datasets={i.name: i for i in infos}, seed=7, scale=10_000)
    node = plan.Aggregate(
        plan.Scan("population", ("person_id", "income", "age")), ("age",), (("m", AggExpr("median", Col("income"))),)
    )
    (agg,) = disclosure.protect({"out": node}, manifest)["out"].noisy.values()
    (source,) = agg.histograms
    for persons in (200, 40_000):  # at epsilon 1 and k 1: below and above dp.QUANTILE_STAGED_FROM
        half = persons // 2
        masses = ((100, half - 50), (249, 50), (250, 50), (400, half - 50))
        for n in cells:
            rows = [(cell, b, m) for cell in range(n) for b, m in masses]
            keys, bins, counts = zip(*rows, strict=True)
            histogram = pa.table({"age": list(keys), "__bin": list(bins), "__n": list(counts)})
            exact = pa.table({"age": list(range(n)), agg.count: [persons] * n})
            before = timing.noise_seconds(agg, n) + timing.histogram_seconds(histogram.num_rows)
            measured, padded = [], 0.0
            for _ in range(runs):
                told: list[float] = []
                start = time.perf_counter()
                dp.noise(agg, exact, {source: histogram}, 1.0, 1e-6, told.append)
                measured.append(time.perf_counter() - start)
                padded = before + sum(told)
            worst = max(measured)
            how = "two draws a cell, over 23 and 22" if persons > 1000 else "one draw a cell, over 501"
            print(
                f"adversarial DP median, {n:>6,} cells of {persons:,}, every draw to its best candidate ({how}): "
                f"measured {statistics.median(measured):.3f} s (max {worst:.3f}) of {padded:.3f} s padded"
                f"{'; OVERRAN' if worst > padded else ''}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=200_000)
    parser.add_argument("--plans", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--algorithms-scale", type=int, default=1_000_000, help="persons; 0: skip them")
    parser.add_argument("--algorithm-runs", type=int, default=2)
    parser.add_argument("--adversarial-cells", default="10,300,3000", help="comma-separated; empty: skip")
    args = parser.parse_args()
    config = ServerConfig.load(env={})
    if args.adversarial_cells:
        adversarial([int(c) for c in args.adversarial_cells.split(",")], 3)
    if args.algorithms_scale:
        shipped(args.algorithms_scale, args.algorithm_runs, config)
    if not args.plans:
        return
    with tempfile.TemporaryDirectory(prefix="saferoom-bench-time-", dir=HERE.parent) as tmp:
        data = Path(tmp)
        generate_catalog(data, scale=args.scale, seed=7)
        manifest = Manifest.load(data)
        catalog = Catalog.open(data)
        world = World(manifest, {name: catalog.table(name) for name in manifest.datasets})
        maker = PlanMaker(world, random.Random(args.seed))
        pipeline = Pipeline(data, manifest, config.sandbox_limits, config.engine_limits)
        ratios: dict[str, list[float]] = {"random plans": [], "their worst case": [], "fixed cost": []}
        refused = overran = 0
        closest: list[tuple[float, str, float, float, int, float, float]] = []
        try:

            def measure(kind: str, node: plan.Node) -> None:
                nonlocal overran
                protected = disclosure.protect({"out": node}, manifest)
                runs = cost.admit_job(protected, manifest, pipeline._engine_limits)
                deadline = _Recorded()  # the admitted worst case, and the draws' padding by the released cells
                with pipeline._acquire() as view:  # the catalog version jobs run on, as a job holds it
                    pipeline._released(view, protected, None, {d: 1.0 for d in manifest.datasets}, deadline=deadline)
                end = time.monotonic()
                assert deadline.first is not None and deadline.at is not None
                elapsed, padded = end - deadline.first, deadline.at - deadline.first
                ratios[kind].append(elapsed / padded)
                overran += elapsed > padded
                engine = sum(r.seconds for r in runs)
                released = padded - engine
                closest.append((elapsed / padded, kind, elapsed, padded, len(runs), engine, released))

            one_row = plan.Aggregate(plan.Limit(plan.Scan("schools", ("school_id",)), 1), (), ())
            for _ in range(3):  # warm the pools
                measure("fixed cost", one_row)
            ratios["fixed cost"].clear()
            made = 0
            while made < args.plans:
                try:
                    _, table = maker.table()
                    measure("random plans", table._node)
                    made += 1
                    measure("their worst case", without_filters(table._node))
                    measure("fixed cost", one_row)
                except SaferoomError:
                    refused += 1
        finally:
            pipeline.close()
            catalog.close()
    print(
        f"{args.scale:,} persons, {args.plans} random plans (seed {args.seed}; {refused} refused by protection or "
        f"admission), padding off, measured / padded release time (engine.timing, TIME_SAFETY "
        f"{timing.TIME_SAFETY}; RUN_SECONDS {cost.RUN_SECONDS}):"
    )
    for kind, values in ratios.items():
        print(f"  {kind:<17} {len(values):4} releases: {_quantiles(values)}")
    print(f"  overran their padded worst case: {overran}; the closest:")
    for ratio, kind, elapsed, padded, n, engine, released in sorted(closest, reverse=True)[:3]:
        print(
            f"    {ratio:.3f} ({kind}): {elapsed * 1000:.0f} ms of {padded * 1000:.0f} ms padded; {n} engine run(s), "
            f"worst case {engine * 1000:.0f} ms in the engine, {released * 1000:.0f} ms of release work"
        )


if __name__ == "__main__":
    main()
