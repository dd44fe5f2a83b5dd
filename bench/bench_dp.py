"""Benchmark: what differential privacy costs a job, next to the exact rules on the same data.

    python bench/bench_dp.py [--scale 1000000] [--runs 5]

Runs the shipped algorithms (population profile: counts by district x age band x sex, median and mean income by
district; site selection: counts and medians per 500 m cell, joined and scored) through the real pipeline
(sandbox worker, engine worker, release) on two catalogs generated from the same seed: exact rules only, and
the default with differential privacy on the personal datasets. Prints the median job time of each, how much of
a DP job was spent drawing noise with OpenDP, and how many cells each released. Numbers only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from saferoom.catalog import generate_catalog
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.disclosure import dp
from saferoom.jobs.pipeline import Pipeline
from saferoom.packages import default_algorithms_dir, load_package

HERE = Path(__file__).resolve().parent
ALGORITHMS = ("population_profile", "site_selection")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    noise_seconds: list[float] = []
    original = dp.noise

    def timed_noise(*a, **k):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            noise_seconds.append(time.perf_counter() - start)

    dp.noise = timed_noise  # disclosure.rounds calls it through the module
    config = ServerConfig.load(env={})
    with tempfile.TemporaryDirectory(prefix="saferoom-bench-dp-", dir=HERE.parent) as tmp:
        for private in (False, True):
            data = Path(tmp) / ("dp" if private else "exact")
            generate_catalog(data, scale=args.scale, seed=7, differential_privacy=private, output_checking=False)
            pipeline = Pipeline(data, Manifest.load(data), config.sandbox_limits, config.engine_limits)
            try:
                for name in ALGORITHMS:
                    package = load_package(default_algorithms_dir() / name)
                    params = {spec.name: spec.default for spec in package.parameters.values()}
                    times, noise, cells = [], [], []
                    for i in range(args.runs + 1):
                        noise_seconds.clear()
                        start = time.perf_counter()
                        outcome = pipeline.run(package, params)
                        elapsed = time.perf_counter() - start
                        if i:  # the first run warms up
                            times.append(elapsed * 1000)
                            noise.append(sum(noise_seconds) * 1000)
                            cells.append(sum(o.table.num_rows for o in outcome.outputs if o.table is not None))
                    kind = "DP   " if private else "exact"
                    print(
                        f"{args.scale:,} persons, {name:<19} {kind}: job median {statistics.median(times):7.0f} ms, "
                        f"of which OpenDP noise {statistics.median(noise):6.0f} ms; cells released "
                        f"{min(cells)}-{max(cells)}"
                    )
            finally:
                pipeline.close()


if __name__ == "__main__":
    main()
