"""Benchmark: good researchers' jobs next to hostile ones, on the default 2-core limits.

    python bench/bench_soak.py [--good 30] [--hostile 3] [--rounds 3] [--jobs 2] [--head-start 0]
    python bench/bench_soak.py --bombs [--hostile 20] [--good 10] [--scale 1000000]

Default (fairness, issue 13): --good clients (one identity each) run --jobs trivial jobs each, one after the
other, timed from RunJob to finished; in a "hostile" phase --hostile other identities at the same time keep
their queues full of CPU loops and memory bombs (resubmitted as they end) and hold every stream slot they are
allowed, and try for more. Quiet and hostile phases are interleaved --rounds times; prints good-job latency
p50/p99 and completion per phase kind (median of the rounds, with min and max) and p99 hostile / p99 quiet.
--head-start N lets the flood run N seconds before the good clients start (it takes the slots of an idle server
first: the worst case, since there is no preemption).

--bombs: one researcher submits --hostile jobs (CPU loops, memory bombs, engine bombs, output floods, recursion)
and another --good trivial jobs right after; waits for all, and prints how each hostile job ended (the limit it
hit), how long the good jobs took, and the server's memory (its own RSS and that of all its worker processes)
before, at the peak and after. Numbers only.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from saferoom.catalog import generate_catalog
from saferoom.client import Client
from saferoom.config import ServerConfig, WorkerLimits
from saferoom.errors import SaferoomError
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


def bombs(args: argparse.Namespace) -> None:
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


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def fairness(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="saferoom-fair-") as tmp:
        root = Path(tmp)
        generate_catalog(root / "data", scale=args.scale, seed=7, differential_privacy=False)
        init_authority(root / "pki")
        good = [issue_identity(root / "pki", f"good-{i}", "researcher").profile for i in range(args.good)]
        bad = [issue_identity(root / "pki", f"hostile-{i}", "researcher").profile for i in range(args.hostile)]
        operator = issue_identity(root / "pki", "soak-operator", "operator").profile
        config = ServerConfig.load(env={}, data_dir=root / "data", state_dir=root / "state", pki_dir=root / "pki",
                                   listen="127.0.0.1:0", max_queued_jobs=1000)  # fmt: skip
        server, port = create_server(config)
        address = f"127.0.0.1:{port}"
        clients = [Client.from_profile(p, server=address, timeout=600) for p in good]
        hostiles = [Client.from_profile(p, server=address, timeout=600) for p in bad]
        try:
            with Client.from_profile(operator, server=address, timeout=60) as reviewer:
                for group, name in ((clients, "trivial"), (hostiles, "hostile")):
                    for client in group:  # the same package by many researchers: approved once
                        summary, _ = client.submit_package(HERE / "packages" / name)
                        if summary.status != "approved":
                            reviewer.approve_package(summary.hash, days=1)
            for client in clients[:2]:
                wait_polling(client, client.run_job("bench-trivial").id)  # warm
            results: dict[str, list[tuple[float, float, float]]] = {"quiet": [], "hostile": []}
            for _ in range(args.rounds):
                for phase in ("quiet", "hostile"):
                    latencies, completed = run_phase(clients, hostiles if phase == "hostile" else [], args)
                    total = len(clients) * args.jobs
                    results[phase].append((percentile(latencies, 50), percentile(latencies, 99), completed / total))
                    print(f"  {phase:<8} p50 {results[phase][-1][0]:.2f} s  p99 {results[phase][-1][1]:.2f} s  "
                          f"completed {completed}/{total}", flush=True)  # fmt: skip
        finally:
            for client in (*clients, *hostiles):
                client.close()
            server.stop(1.0)
    print(
        f"{args.good} good clients x {args.jobs} trivial jobs, {args.hostile} hostile identities, {args.rounds} "
        f"interleaved rounds, flood head start {args.head_start:g} s, slots {config.max_concurrent_jobs}, "
        "code phase "
        f"{config.sandbox_limits.cpu_seconds} s CPU / {config.sandbox_limits.wall_seconds:g} s wall, "
        f"{config.max_streams_per_identity} of {config.max_streams} streams per identity, {os.cpu_count()} cores"
    )
    for phase, rows in results.items():
        p50s, p99s, done = zip(*rows, strict=True)
        print(
            f"  {phase:<8} p50 {statistics.median(p50s):.2f} s (min {min(p50s):.2f}, max {max(p50s):.2f})  "
            f"p99 {statistics.median(p99s):.2f} s (min {min(p99s):.2f}, max {max(p99s):.2f})  "
            f"completed {statistics.median(done):.0%} (min {min(done):.0%})"
        )
    quiet, hostile = (statistics.median(r[1] for r in results[k]) for k in ("quiet", "hostile"))
    print(f"  p99 with hostile researchers / without: {hostile / quiet:.2f}")


def wait_polling(client: Client, job_id: str, timeout: float = 600) -> str:
    """A job's final state, by polling (a good client holds no stream slot while it waits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.finished:
            return job.state
        time.sleep(0.05)
    return "timeout"


def run_phase(clients: list[Client], hostiles: list[Client], args: argparse.Namespace) -> tuple[list[float], int]:
    """Good clients' job latencies (and how many succeeded) while ``hostiles`` flood jobs and streams."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stop = threading.Event()
    submitted: list[tuple[Client, str]] = []
    streams: list[Any] = []
    lock = threading.Lock()

    def flood(client: Client, index: int) -> None:
        channel = client._channel  # the client's own mutual-TLS channel
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(12):  # as many streams as it may hold (8), and then some (refused)
            stream = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            with lock:
                streams.append(stream)
        mine: list[str] = []
        attacks = ("loop", "memory", "loop", "recursion")
        n = 0
        while not stop.is_set():
            live = [j for j in mine if not client.get_job(j).finished]
            for _ in range(args.flood - len(live)):
                try:
                    job = client.run_job("bench-hostile", {"attack": attacks[(index + n) % len(attacks)]})
                except SaferoomError:
                    break
                n += 1
                live.append(job.id)
                with lock:
                    submitted.append((client, job.id))
            mine = live
            stop.wait(0.5)

    threads = [threading.Thread(target=flood, args=(c, i), daemon=True) for i, c in enumerate(hostiles)]
    for t in threads:
        t.start()
    if hostiles:
        time.sleep(args.head_start)  # the flood may take the slots first: the worst case for the good clients
    latencies: list[float] = []
    completed = 0

    def good(client: Client) -> None:
        nonlocal completed
        for _ in range(args.jobs):
            started = time.monotonic()
            state = wait_polling(client, client.run_job("bench-trivial").id)
            with lock:
                latencies.append(time.monotonic() - started)
                completed += state == "succeeded"

    workers = [threading.Thread(target=good, args=(c,)) for c in clients]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    for stream in streams:
        stream.cancel()
    for client, job_id in submitted:
        client.cancel_job(job_id)
    for client, job_id in submitted:
        wait_polling(client, job_id)
    return latencies, completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bombs", action="store_true", help="the hostile-jobs soak with memory figures")
    parser.add_argument("--hostile", type=int, default=None, help="hostile identities (--bombs: hostile jobs)")
    parser.add_argument("--good", type=int, default=None, help="good clients (--bombs: good jobs)")
    parser.add_argument("--scale", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="trivial jobs per good client, one after the other")
    parser.add_argument("--flood", type=int, default=10, help="jobs each hostile identity keeps queued")
    parser.add_argument("--head-start", type=float, default=0.0, help="seconds the flood runs before good clients")
    args = parser.parse_args()
    if args.bombs:
        args.hostile, args.good = args.hostile or 20, args.good or 10
        args.scale = args.scale or 1_000_000
        bombs(args)
    else:
        args.hostile, args.good = args.hostile or 3, args.good or 30
        args.scale = args.scale or 20_000
        fairness(args)


if __name__ == "__main__":
    main()
