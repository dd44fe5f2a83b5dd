"""Benchmark: DP synthetic mock data of the population, at 1M and 10M persons.

    python bench/bench_mock.py [--scales 1000000 10000000] [--epsilon 1] [--keep DIR] [--select]

For each scale, generates the city (not timed), then times what a publication and a download do: measuring
the real data (binning, the noisy marginals with OpenDP), and sampling as many mock rows as the noisy count
says. Prints the time of each, the peak memory they allocate (tracemalloc: numpy's arrays included; the
memory-mapped dataset is not) and the process's peak RSS, and the mean real-vs-mock TVD of the 2-way
marginals along the structure (each edge of the graph). ``--select``: the structure is selected privately
(MST-style, as for a catalog that declares none) instead of the catalog's declared graph; the selected tree
is printed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from saferoom.catalog import generate_catalog
from saferoom.catalog.catalog import Catalog
from saferoom.mock import measure, sample, structure_of, tvd


def run(scale: int, epsilon: float, root: Path, select: bool = False) -> None:
    out = root / f"city-{scale}"
    if not (out / "catalog.json").exists():
        generate_catalog(out, scale=scale, seed=7)
    with Catalog.open(out) as catalog:
        info, real = catalog.info("population"), catalog.table("population")
        if select and info.mock is not None:
            info = dataclasses.replace(info, mock=dataclasses.replace(info.mock, structure=(), select=True))
        structure = structure_of(info)
        tracemalloc.start()
        started = time.perf_counter()
        measurements = measure(real, info, structure, epsilon)
        measured = time.perf_counter()
        mock = sample(measurements, structure, info, measurements.total, seed=1)
        sampled = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        structure = measurements.structure(structure)  # with the selected tree, if selected
        tvds = []
        for p, c in structure.edges:
            a, b = structure.attributes[p], structure.attributes[c]

            def joint(table, a=a, b=b):  # type: ignore[no-untyped-def]
                return np.bincount(a.index(table) * b.cells + b.index(table), minlength=a.cells * b.cells)

            tvds.append(tvd(joint(real), joint(mock)))
        edges = ", ".join(f"{p}-{c} {t:.3f}" for (p, c), t in zip(structure.edges, tvds, strict=True))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{scale:>11,} persons: measure {measured - started:6.2f} s, sample {mock.num_rows:,} rows "
            f"{sampled - measured:6.2f} s, synthesis {sampled - started:6.2f} s; peak allocated "
            f"{peak / 2**20:,.0f} MiB, peak RSS {rss:,.0f} MiB; mean TVD along the structure "
            f"{float(np.mean(tvds)):.4f} ({edges})" + (" [selected privately]" if select else ""),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--keep", type=Path, help="Generate the cities here (and reuse them) instead of a tmp dir.")
    parser.add_argument("--select", action="store_true", help="Select the structure privately (MST-style).")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for scale in args.scales:
            run(scale, args.epsilon, args.keep, args.select)
        return
    with tempfile.TemporaryDirectory(prefix="bench-mock-") as tmp:
        for scale in args.scales:
            run(scale, args.epsilon, Path(tmp), args.select)


if __name__ == "__main__":
    main()
