"""Benchmark: does a data-dependent refusal take observably different time than a release?

    python bench/bench_timing.py [--scale 200000] [--runs 30] [--only-amplified] [--amplified-scale 20000]

One package, one plan: ``population.filter(person_id <= keep).group_by(district, sex).agg(count, mean income)``,
over the real mutual-TLS server, timed end to end as a researcher sees it (RunJob -> finished -> GetResult),
the kinds of job interleaved in random order and compared by medians and a Mann-Whitney U test:

    everyone         keep = all: released
    all but one      keep = all but the last person: the same work; on the exact-rules catalog the subset
                     rule withholds the output (on the DP catalog it is released with noise)
    one person       keep = 1: far less work; withheld (exact rules) or no cell passes the noisy threshold (DP)

"everyone" vs "all but one" isolates the refusal itself; "one person" shows what the amount of work reveals.
Each comparison runs with timing protection off (quantum 0) and on (the default quantum of 250 ms, which also
pads every release to its admitted worst case, ``engine.cost.padded_seconds``). Numbers only.

Then the amplified-work attack (issue 11, item 5), on the exact-rules catalog of ``--amplified-scale`` persons,
with timing protection off and on: one person kept iff a condition holds, cross-joined (a constant key) with
public tables. With three tables the worst case is far beyond the engine worker's limits: the job is refused
before any engine work. With one table it is admitted; and with one table and every person's condition (all of
them or none kept) the work differs by a million joined rows, which the padding must hide. The conditions are
timed interleaved (median, min and max). Last, the admitted worst case (every person kept) is executed once in a
fresh process as the engine worker would, and its peak RSS is printed next to the admission's estimate and the
memory limit.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from saferoom.catalog import generate_catalog
from saferoom.client import Client
from saferoom.config import ServerConfig, WorkerLimits
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


def _serve(directory: Path, scale: int, dp: bool, quantum_ms: int, **overrides: Any) -> tuple[Any, str, Path, Path]:
    """A generated city, a PKI with a researcher and an operator, and a server on loopback over them."""
    data, pki = directory / "data", directory / "pki"
    generate_catalog(data, scale=scale, seed=7, differential_privacy=dp, output_checking=False)
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
        **overrides,
    )
    server, port = create_server(config)
    return server, f"127.0.0.1:{port}", researcher, operator


def bench(directory: Path, scale: int, runs: int, dp: bool, quantum_ms: int) -> None:
    server, address, researcher, operator = _serve(directory, scale, dp, quantum_ms)
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


AMPLIFIED = """
def run(ctx, cutoff=0.0, tables=3, everyone=False):
    kept = col("income") > cutoff
    people = ctx.table("population").filter(kept if everyone else (col("person_id") == 42) & kept)
    blown = people.with_columns(k=lit(1)).select("k", "person_id")
    for name, key in [("schools", "school_id"), ("bus_stops", "stop_id"), ("land_use", "parcel_id")][:tables]:
        blown = blown.join(ctx.table(name).with_columns(k=lit(1)).select("k", key), on="k")
    return {"n": blown.group_by("k").agg(n=count())}
"""
AMPLIFIED_TOML = """name = "bench-amplified"
version = "1.0.0"
description = "Benchmark: one person's row multiplied by cross joins with public tables."
entrypoint = "main.py:run"
datasets = ["population", "bus_stops", "schools", "land_use"]

[parameters]
cutoff = { type = "float", default = 0, min = -1, max = 1000000000 }
tables = { type = "int", default = 3, min = 1, max = 3 }
everyone = { type = "bool", default = false }
"""
CONDITIONS = {"condition holds": -1.0, "condition fails": 1e9}  # incomes are in [0, 1e9)
ENGINE = WorkerLimits(memory_mib=2048, cpu_seconds=30, wall_seconds=30.0, output_mib=16)

# Runs a plan the way the engine worker does (trusted code), in a fresh process, and reports its peak RSS.
_PEAK = """
import json, sys
from pathlib import Path
from saferoom.jobs.engine_task import execute_plans, open_catalog
def rss(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
catalog = open_catalog(sys.argv[1])
base = rss("VmRSS:")
execute_plans(catalog, json.loads(sys.stdin.read()), [])
print(json.dumps({"base": base, "peak": rss("VmHWM:")}))
"""


def bench_amplified(directory: Path, scale: int, runs: int, quantum_ms: int = 250) -> None:
    from saferoom import disclosure
    from saferoom.catalog.manifest import Manifest
    from saferoom.engine import cost, plan
    from saferoom.jobs.pipeline import to_limits
    from saferoom.packages import load_package, validate_params
    from saferoom.sandbox.runner import run_algorithm

    package_dir = directory / "amplified"
    package_dir.mkdir()
    (package_dir / "main.py").write_text(AMPLIFIED)
    (package_dir / "saferoom.toml").write_text(AMPLIFIED_TOML)
    server, address, researcher, operator = _serve(directory, scale, False, quantum_ms, engine_limits=ENGINE)
    data = directory / "data"
    try:
        with (
            Client.from_profile(researcher, server=address, timeout=120) as client,
            Client.from_profile(operator, server=address, timeout=120) as reviewer,
        ):
            summary, _ = client.submit_package(package_dir)
            reviewer.approve_package(summary.hash, days=1)
            print(f"amplified work, {scale:,} persons, release quantum {quantum_ms} ms, {runs} jobs of each kind:")
            # (tables, everyone): one person's condition, refused (3 tables) or admitted (1); then everyone's
            # condition on one table: all 20,000 persons x 50 schools joined, or none (what padding hides).
            for tables, everyone in ((3, False), (1, False), (1, True)):
                order = list(CONDITIONS) * runs
                random.Random(7).shuffle(order)
                times: dict[str, list[float]] = {kind: [] for kind in CONDITIONS}
                ends: dict[str, set[str]] = {kind: set() for kind in CONDITIONS}
                for i, kind in enumerate(list(CONDITIONS) + order):
                    params = {"cutoff": CONDITIONS[kind], "tables": tables, "everyone": everyone}
                    start = time.perf_counter()
                    job = client.wait(client.run_job(summary.hash, params).id)
                    elapsed = (time.perf_counter() - start) * 1000
                    if i >= len(CONDITIONS):  # warm-up
                        times[kind].append(elapsed)
                        ends[kind].add(job.state if job.state != "failed" else f"failed: {job.error_message[:60]}...")
                what = f"{tables} public table(s), {'everyone' if everyone else 'one person'}"
                for kind, t in times.items():
                    print(
                        f"  {what}, {kind}: median {statistics.median(t):7.1f} ms "
                        f"(min {min(t):.1f}, max {max(t):.1f}); {sorted(ends[kind])}"
                    )
                diff = statistics.median(times["condition holds"]) - statistics.median(times["condition fails"])
                p = mann_whitney_p(times["condition holds"], times["condition fails"])
                print(f"  {what}, holds - fails: median {diff:+.1f} ms; Mann-Whitney p = {p:.2f}")
    finally:
        server.stop(1.0)
    # The admitted plan's worst case (every person kept), protected as the server does, in a fresh engine process.
    manifest = Manifest.load(data)
    package = load_package(package_dir)
    params = validate_params(package, {"cutoff": -1.0, "tables": 1, "everyone": True})
    request = {"files": {"main.py": AMPLIFIED}, "entrypoint": package.entrypoint, "params": params}
    request |= {"manifest": manifest.to_data(), "datasets": list(package.datasets)}
    outputs = run_algorithm(None, request, [])[0]["outputs"]
    protected = disclosure.protect({"n": plan.from_data(outputs["n"]["plan"])}, manifest)
    runs_cost = cost.admit_job(protected, manifest, to_limits(ENGINE, "data"))
    work = [["n", plan.to_data(protected["n"].plan)]]
    work += [[label, plan.to_data(c.plan)] for label, c in protected["n"].subsets.items()]
    reply = subprocess.run(
        [sys.executable, "-c", _PEAK, str(data)],
        input=json.dumps({"plans": work, "inputs": []}),
        capture_output=True,
        text=True,
        check=True,
    )
    peak = json.loads(reply.stdout)
    mib = 2**20
    print(
        f"  admitted worst case (every person x {manifest.dataset('schools').rows} schools): estimated "
        f"{runs_cost[-1].memory_bytes / mib:.0f} MiB, {runs_cost[-1].seconds:.1f} s; measured peak RSS "
        f"{peak['peak'] / mib:.0f} MiB ({(peak['peak'] - peak['base']) / mib:.0f} MiB above the worker's baseline); "
        f"limit {ENGINE.memory_mib} MiB, admitted {ENGINE.memory_mib * cost.MEMORY_SHARE:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--only-amplified", action="store_true", help="skip the filter benchmark")
    parser.add_argument(
        "--amplified-scale", type=int, default=20_000, help="persons for the amplified attack (one table admitted)"
    )
    args = parser.parse_args()
    if not args.only_amplified:
        for dp in (False, True):
            for quantum_ms in (0, 250):
                with tempfile.TemporaryDirectory(prefix="saferoom-bench-timing-", dir=HERE.parent) as tmp:
                    bench(Path(tmp), args.scale, args.runs, dp, quantum_ms)
    for quantum_ms in (0, 250):  # timing protection off, then on (padding to the worst case, the quantum)
        with tempfile.TemporaryDirectory(prefix="saferoom-bench-timing-", dir=HERE.parent) as tmp:
            bench_amplified(Path(tmp), args.amplified_scale, args.runs, quantum_ms)


if __name__ == "__main__":
    main()
