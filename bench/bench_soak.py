"""Benchmark: a soak of hostile jobs next to well-behaved ones, on the default 2-core limits.

    python bench/bench_soak.py [--hostile 20] [--good 10] [--scale 1000000]

One researcher submits --hostile jobs (CPU loops, memory bombs, engine bombs, output floods, recursion) and
another --good trivial jobs right after; waits for all, and prints how each hostile job ended (the limit it
hit), how long the good jobs took, and the server's memory (its own RSS and that of all its worker
processes) before, at the peak and after. Numbers only.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import threading
import time
from pathlib import Path

from saferoom.catalog import generate_catalog
from saferoom.client import Client
from saferoom.config import ServerConfig, WorkerLimits
from saferoom.identity import init_authority, issue_identity
from saferoom.server import create_server

HERE = Path(__file__).resolve().parent
ATTACKS = ["loop", "memory", "engine", "flood", "recursion"]


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants, in MiB (from /proc)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostile", type=int, default=20)
    parser.add_argument("--good", type=int, default=10)
    parser.add_argument("--scale", type=int, default=1_000_000)
    args = parser.parse_args()
    import os

    with tempfile.TemporaryDirectory(prefix="saferoom-soak-") as tmp:
        root = Path(tmp)
        generate_catalog(root / "data", scale=args.scale, seed=7, differential_privacy=False, output_checking=False)
        init_authority(root / "pki")
        researcher = issue_identity(root / "pki", "soak-researcher", "researcher").profile
        attacker = issue_identity(root / "pki", "soak-attacker", "researcher").profile
        operator = issue_identity(root / "pki", "soak-operator", "operator").profile
        config = ServerConfig.load(
            env={},
            data_dir=root / "data",
            state_dir=root / "state",
            pki_dir=root / "pki",
            listen="127.0.0.1:0",
            sandbox_limits=WorkerLimits(memory_mib=1024, cpu_seconds=10, wall_seconds=10.0, output_mib=8),
            engine_limits=WorkerLimits(memory_mib=4096, cpu_seconds=30, wall_seconds=30.0, output_mib=64),
        )
        server, port = create_server(config)
        address = f"127.0.0.1:{port}"
        peak = 0.0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss_mib(os.getpid()))
                time.sleep(0.2)

        try:
            with (
                Client.from_profile(researcher, server=address, timeout=600) as client,
                Client.from_profile(attacker, server=address, timeout=600) as hostile_client,
                Client.from_profile(operator, server=address, timeout=60) as reviewer,
            ):
                hashes = {}
                for name, submitter in (("hostile", hostile_client), ("trivial", client)):
                    summary, _ = submitter.submit_package(HERE / "packages" / name)
                    reviewer.approve_package(summary.hash, days=1)
                    hashes[name] = summary.hash
                warm = client.run_job(hashes["trivial"])
                client.wait(warm.id)
                baseline = tree_rss_mib(os.getpid())
                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                started = time.monotonic()
                hostile = [
                    hostile_client.run_job(hashes["hostile"], {"attack": ATTACKS[i % len(ATTACKS)]})
                    for i in range(args.hostile)
                ]
                good = [(client.run_job(hashes["trivial"]), time.monotonic()) for _ in range(args.good)]
                good_seconds = []
                for job, submitted in good:
                    final = client.wait(job.id, timeout=3600)
                    assert final.state == "succeeded", final.error_message
                    good_seconds.append(time.monotonic() - submitted)
                outcomes = collections.Counter()
                for job in hostile:
                    final = hostile_client.wait(job.id, timeout=3600)
                    outcomes[(final.params.get("attack"), final.state, final.error_code)] += 1
                elapsed = time.monotonic() - started
                stop.set()
                sampler.join()
                time.sleep(1.0)
                after = tree_rss_mib(os.getpid())
            print(f"{args.hostile} hostile + {args.good} good jobs on {os.cpu_count()} cores, {elapsed:.1f} s in all")
            for (attack, state, code), count in sorted(outcomes.items()):
                print(f"  hostile {attack:<10} -> {state} ({code}) x{count}")
            print(
                f"good jobs: all {len(good_seconds)} succeeded; time from submission p50 "
                f"{statistics.median(good_seconds):.1f} s, max {max(good_seconds):.1f} s (in turn with the bombs)"
            )
            print(f"server + workers RSS: baseline {baseline:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB")
        finally:
            server.stop(1.0)


if __name__ == "__main__":
    main()
