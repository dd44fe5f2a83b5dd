"""Benchmark: does a data-dependent refusal take observably different time than a release?

    python bench/bench_timing.py [--scale 200000] [--runs 30]

One package, one plan: ``population.filter(person_id <= keep).group_by(district, sex).agg(count, mean income)``,
over the real mutual-TLS server, timed end to end as a researcher sees it (RunJob -> finished -> GetResult),
the kinds of job interleaved in random order and compared by medians and a Mann-Whitney U test:

    everyone         keep = all: released
    all but one      keep = all but the last person: the same work; on the exact-rules catalog the subset
                     rule withholds the output (on the DP catalog it is released with noise)
    one person       keep = 1: far less work; withheld (exact rules) or no cell passes the noisy threshold (DP)

"everyone" vs "all but one" isolates the refusal itself; "one person" shows what the amount of work reveals.
Each comparison runs with the release quantum off (0) and at its default (250 ms). Numbers only.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from saferoom.catalog import generate_catalog
from saferoom.client import Client
from saferoom.config import ServerConfig
from saferoom.identity import init_authority, issue_identity
from saferoom.server import create_server

HERE = Path(__file__).resolve().parent
KINDS = {"everyone": 10**9, "all but one": -1, "one person": 1}  # -1: the scale minus one


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, no tie correction)."""
    ranks = np.argsort(np.argsort(np.array(a + b))) + 1
    u = float(ranks[: len(a)].sum()) - len(a) * (len(a) + 1) / 2
    mean = len(a) * len(b) / 2
    sd = math.sqrt(len(a) * len(b) * (len(a) + len(b) + 1) / 12)
    return math.erfc(abs(u - mean) / sd / math.sqrt(2))


def bench(directory: Path, scale: int, runs: int, dp: bool, quantum_ms: int) -> None:
    data, pki = directory / "data", directory / "pki"
    generate_catalog(data, scale=scale, seed=7, differential_privacy=dp)
    init_authority(pki)
    researcher = issue_identity(pki, "timing-researcher", "researcher").profile
    operator = issue_identity(pki, "timing-operator", "operator").profile
    config = ServerConfig.load(
        env={},
        data_dir=data,
        state_dir=directory / "state",
        pki_dir=pki,
        listen="127.0.0.1:0",
        max_concurrent_jobs=1,
        release_quantum_ms=quantum_ms,
    )
    server, port = create_server(config)
    address = f"127.0.0.1:{port}"
    keeps = {kind: (scale - 1 if keep < 0 else keep) for kind, keep in KINDS.items()}
    try:
        with (
            Client.from_profile(researcher, server=address, timeout=120) as client,
            Client.from_profile(operator, server=address, timeout=120) as reviewer,
        ):
            summary, _ = client.submit_package(HERE / "packages" / "timing")
            reviewer.approve_package(summary.hash, days=1)
            if dp:
                reviewer.set_budget("timing-researcher", "population", epsilon=1000.0, delta=1e-3)
            order = list(keeps) * runs
            random.Random(7).shuffle(order)
            times: dict[str, list[float]] = {kind: [] for kind in keeps}
            rows: dict[str, set[int]] = {kind: set() for kind in keeps}
            for i, kind in enumerate(list(keeps) * 2 + order):
                start = time.perf_counter()
                job = client.run_job(summary.hash, {"keep": keeps[kind]})
                client.wait(job.id)
                result = client.get_result(job.id)
                elapsed = (time.perf_counter() - start) * 1000
                if i >= 2 * len(keeps):  # warm-up
                    times[kind].append(elapsed)
                    table = result.output("stats").table
                    rows[kind].add(0 if table is None else table.num_rows)
        catalog = "differentially private" if dp else "exact rules"
        print(f"{catalog} catalog, {scale:,} persons, release quantum {quantum_ms} ms, {runs} jobs of each kind:")
        for kind, t in times.items():
            p95 = sorted(t)[int(0.95 * (len(t) - 1))]
            print(f"  {kind:<12} median {statistics.median(t):7.1f} ms  p95 {p95:7.1f} ms  rows {sorted(rows[kind])}")
        for other in ("all but one", "one person"):
            diff = statistics.median(times[other]) - statistics.median(times["everyone"])
            p = mann_whitney_p(times["everyone"], times[other])
            print(f"  {other} - everyone: median {diff:+.1f} ms; Mann-Whitney p = {p:.2f}")
    finally:
        server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    for dp in (False, True):
        for quantum_ms in (0, 250):
            with tempfile.TemporaryDirectory(prefix="saferoom-bench-timing-", dir=HERE.parent) as tmp:
                bench(Path(tmp), args.scale, args.runs, dp, quantum_ms)


if __name__ == "__main__":
    main()
