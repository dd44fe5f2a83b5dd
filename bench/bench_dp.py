"""Benchmark: what differential privacy costs a job, next to the exact rules on the same data.

    python bench/bench_dp.py [--scales 1000000,10000000] [--runs 3] [--algorithms site_selection,...]
                             [--engine-memory-mib N] [--engine-output-mib N]

Runs the shipped algorithms (population profile: counts by district x age band x sex, median and mean income by
district; site selection: counts and medians per 500 m cell, joined and scored) through the real pipeline
(sandbox worker, engine worker, release; no gRPC, no timing protection) on two catalogs per scale generated from
the same seed: exact rules only, and the default with differential privacy on the personal datasets, the two
kinds of run interleaved. Prints the median (min, max) job time of each, how much of a DP job was spent drawing
noise with OpenDP (exact samplers, on every core) and how much of that on the quantiles' noisy-min draws (per
released cell and quantile one draw, or two in a large cell: ``dp._draws``; wall time and the process's CPU
time, how many cells drew and how many of them in two stages), how many cells each released, the processors
it had (shared with whatever else runs on the machine) and the engine worker's limits. A job the cost model
refuses before running (its worst case over the catalog does not fit the limits) is printed as refused, with the
reason; the limits can be raised for a measurement (admission only: the worker uses what the job needs). Numbers
only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from saferoom.catalog import generate_catalog
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.disclosure import dp
from saferoom.errors import LimitExceeded
from saferoom.jobs.pipeline import Pipeline
from saferoom.packages import default_algorithms_dir, load_package

HERE = Path(__file__).resolve().parent
ALGORITHMS = ("population_profile", "site_selection")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1000000,10000000", help="persons, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--engine-memory-mib", type=int, default=0, help="engine worker memory (default: config)")
    parser.add_argument("--engine-output-mib", type=int, default=0, help="engine reply limit (default: config)")
    args = parser.parse_args()
    noise_seconds: list[float] = []
    draw_seconds: list[float] = []
    draw_cpu: list[float] = []
    draws: list[int] = []
    staged_draws: list[int] = []
    original, original_draws = dp.noise, dp._draws

    def timed_noise(*a, **k):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            noise_seconds.append(time.perf_counter() - start)

    def timed_draws(single, halved, scores, staged):  # type: ignore[no-untyped-def]
        start, cpu = time.perf_counter(), time.process_time()  # the process's CPU: the drawing threads' too
        try:
            return original_draws(single, halved, scores, staged)
        finally:
            draw_seconds.append(time.perf_counter() - start)
            draw_cpu.append(time.process_time() - cpu)
            draws.append(len(scores))
            staged_draws.append(int(staged.sum()))

    dp.noise = timed_noise  # disclosure.rounds calls it through the module
    dp._draws = timed_draws  # and dp.noise calls this through its module's globals
    config = ServerConfig.load(env={})
    limits = dataclasses.replace(
        config.engine_limits,
        memory_mib=args.engine_memory_mib or config.engine_limits.memory_mib,
        output_mib=args.engine_output_mib or config.engine_limits.output_mib,
    )
    print(
        f"{os.cpu_count()} processors (shared), DP draws on {dp._DRAW_THREADS} threads, median of {args.runs} runs; "
        f"engine worker memory {limits.memory_mib} MiB, reply {limits.output_mib} MiB"
        f"{' (raised from the default)' if limits != config.engine_limits else ' (the defaults)'}"
    )
    with tempfile.TemporaryDirectory(prefix="saferoom-bench-dp-", dir=HERE.parent) as tmp:
        for scale in (int(s) for s in args.scales.split(",")):
            pipelines = {}
            for private in (False, True):
                data = Path(tmp) / f"{'dp' if private else 'exact'}-{scale}"
                generate_catalog(data, scale=scale, seed=7, differential_privacy=private, output_checking=False)
                pipelines[private] = Pipeline(data, Manifest.load(data), config.sandbox_limits, limits)
            try:
                for name in args.algorithms.split(","):
                    package = load_package(default_algorithms_dir() / name)
                    params = {spec.name: spec.default for spec in package.parameters.values()}
                    times: dict[bool, list[float]] = {False: [], True: []}
                    noise: list[float] = []
                    drawing: list[tuple[float, float, int]] = []
                    cells: dict[bool, list[int]] = {False: [], True: []}
                    refused: dict[bool, str] = {}
                    for i in range(args.runs + 1):
                        for private in (False, True) if i % 2 else (True, False):  # interleaved
                            if private in refused:
                                continue
                            noise_seconds.clear()
                            draw_seconds.clear()
                            draw_cpu.clear()
                            draws.clear()
                            staged_draws.clear()
                            start = time.perf_counter()
                            try:
                                outcome = pipelines[private].run(package, params)
                            except LimitExceeded as e:  # before any work: the same on every run
                                refused[private] = str(e)
                                continue
                            elapsed = time.perf_counter() - start
                            if i:  # the first run warms up
                                times[private].append(elapsed * 1000)
                                if private:
                                    noise.append(sum(noise_seconds) * 1000)
                                    drawing.append(
                                        (sum(draw_seconds) * 1000, sum(draw_cpu) * 1000, sum(draws), sum(staged_draws))
                                    )
                                released = sum(o.table.num_rows for o in outcome.outputs if o.table is not None)
                                cells[private].append(released)
                    for private in (False, True):
                        kind = "DP   " if private else "exact"
                        if private in refused:
                            print(f"{scale:,} persons, {name:<19} {kind}: refused: {refused[private]}")
                            continue
                        t = times[private]
                        extra = ""
                        if private:
                            median_draws = statistics.median(d for d, _, _, _ in drawing)
                            median_cpu = statistics.median(c for _, c, _, _ in drawing)
                            counted = sorted({n for _, _, n, _ in drawing})
                            staged = sorted({n for _, _, _, n in drawing})
                            extra = (
                                f", of which OpenDP noise {statistics.median(noise):6.0f} ms (noisy-min draws "
                                f"{median_draws:.0f} ms, {median_cpu:.0f} ms of CPU, for "
                                f"{'-'.join(str(n) for n in (counted[0], counted[-1]))} cells' draws, "
                                f"{'-'.join(str(n) for n in (staged[0], staged[-1]))} of them in two stages)"
                            )
                        print(
                            f"{scale:,} persons, {name:<19} {kind}: job median "
                            f"{statistics.median(t):7.0f} ms (min {min(t):.0f}, max {max(t):.0f}){extra}; cells "
                            f"released {min(cells[private])}-{max(cells[private])}"
                        )
            finally:
                for pipeline in pipelines.values():
                    pipeline.close()


if __name__ == "__main__":
    main()
