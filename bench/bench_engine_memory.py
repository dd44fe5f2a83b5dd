"""Benchmark: the engine's real peak memory on the shipped algorithms, next to what the cost model admits.

    python bench/bench_engine_memory.py [--scale 10000000] [--algorithms site_selection,...] [--keep DIR]

Generates a catalog per rule set (exact rules, differential privacy) at ``--scale`` persons, releases each
algorithm through the real pipeline (with the limits raised so that nothing is refused: admission is what is
compared, not enforced) and records every engine request it sends. Each request is then replayed in a fresh
process that opened the catalog as the engine's zygote does (``engine_task.open_catalog``), and its peak growth
of ``VmData`` (what ``RLIMIT_DATA``, the engine worker's memory limit, counts: private writable mappings, not
the memory-mapped datasets; sampled every millisecond, the highest sample) and of ``RssAnon``
(the private memory it really touched; mimalloc may reserve address space ahead, which VmData counts as soon as
it is mapped writable) are printed beside the model's
``memory_bytes`` for that run. Numbers only.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from saferoom.catalog import generate_catalog
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.engine import cost
from saferoom.jobs.pipeline import ENGINE_TASK, Pipeline
from saferoom.packages import default_algorithms_dir, load_package

HERE = Path(__file__).resolve().parent


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def replay(path: Path) -> None:
    """In a fresh process: open the catalog, execute one recorded request, print its peaks in bytes."""
    from saferoom.jobs.engine_task import execute_plans, open_catalog

    data_dir, request, blobs = pickle.loads(path.read_bytes())
    catalog = open_catalog(data_dir, request.get("engine") or "arrow")
    data, anon = _status("VmData"), _status("RssAnon")
    most, touched = [data], [anon]
    done = threading.Event()

    def sample() -> None:  # VmData has no high-water mark of its own: sampled every millisecond
        while not done.wait(0.001):
            most.append(_status("VmData"))
            touched.append(_status("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    execute_plans(catalog, request, blobs)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    print(max(*most, _status("VmData")) - data, max(*touched, _status("RssAnon")) - anon, seconds, data)


def _release_recorded(
    pipeline: Pipeline, name: str
) -> tuple[list[tuple[dict[str, Any], list[bytes]]], list[cost.RunCost], float]:
    """Release ``name`` with its defaults: the engine requests it sent, the runs admitted, the job's seconds."""
    recorded: list[tuple[dict[str, Any], list[bytes]]] = []
    admitted: list[cost.RunCost] = []
    engine = pipeline._engine
    original_run, original_admit = engine.run, cost.admit_job

    def record(task: str, request: dict[str, Any], blobs: Any = (), **kw: Any) -> Any:
        if task == ENGINE_TASK:
            recorded.append((request, list(blobs)))
        return original_run(task, request, blobs, **kw)

    def admit(*a: Any, **kw: Any) -> list[cost.RunCost]:
        runs = original_admit(*a, **kw)
        admitted.extend(runs)
        return runs

    engine.run = record  # type: ignore[method-assign]
    cost.admit_job = admit
    package = load_package(default_algorithms_dir() / name)
    start = time.perf_counter()
    try:
        pipeline.run(package, {spec.name: spec.default for spec in package.parameters.values()})
    finally:
        engine.run = original_run  # type: ignore[method-assign]
        cost.admit_job = original_admit
    return recorded, admitted, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10_000_000)
    parser.add_argument("--algorithms", default="site_selection,population_profile")
    parser.add_argument("--rules", default="exact,dp")
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay is not None:
        replay(args.replay)
        return
    config = ServerConfig.load(env={})
    limits = dataclasses.replace(config.engine_limits, memory_mib=1 << 20, cpu_seconds=1 << 20, wall_seconds=1e6)
    with tempfile.TemporaryDirectory(prefix="saferoom-bench-memory-", dir="/tmp") as tmp:
        for rules in args.rules.split(","):
            data = Path(tmp) / rules
            generate_catalog(data, scale=args.scale, seed=7, differential_privacy=rules == "dp", output_checking=False)
            pipeline = Pipeline(data, Manifest.load(data), config.sandbox_limits, limits)
            try:
                for name in args.algorithms.split(","):
                    recorded, admitted, job = _release_recorded(pipeline, name)
                    for i, ((request, blobs), run) in enumerate(zip(recorded, admitted, strict=True)):
                        dump = Path(tmp) / "request.pickle"
                        dump.write_bytes(pickle.dumps((str(data), request, blobs)))
                        command = [sys.executable, __file__, "--replay", str(dump)]
                        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
                        data_peak, anon_peak, seconds, base = int(out[0]), int(out[1]), float(out[2]), int(out[3])
                        print(
                            f"{args.scale:,} persons, {name:<19} {rules:<5} run {i}: model "
                            f"{run.memory_bytes / 2**20:8.0f} MiB, real peak {data_peak / 2**20:6.0f} MiB VmData "
                            f"(of {base / 2**20:.0f}), {anon_peak / 2**20:6.0f} MiB RssAnon, {seconds:5.1f} s "
                            f"(job {job:.1f} s, {len(request['plans'])} plans)"
                        )
            finally:
                pipeline.close()


if __name__ == "__main__":
    main()
