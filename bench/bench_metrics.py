"""Benchmark: what the metrics cost a job.

    python bench/bench_metrics.py [--jobs 40] [--rounds 6] [--blocks 30]

1. Recording. A real server runs ``--jobs`` echo jobs; its own counters then say how many calls, audit writes
   and fsyncs one job makes. That mix of metric calls (the job's phase timer, one ``request`` per call, one
   ``audit_written`` per write) is replayed in blocks of 1,000 jobs, interleaved with the same loop calling
   no-op functions, and the difference per job is printed (median, min and max over ``--blocks`` pairs).
2. Scraping. On the same server, rounds of ``--jobs`` jobs (submitted, then waited for) alternate between a
   scraper pulling /metrics every 100 ms (ten times more often than a Prometheus would) and none; the median,
   min and max job latency of each is printed, and the difference of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from saferoom.catalog import generate_catalog
from saferoom.client import Client, Profile
from saferoom.config import ServerConfig
from saferoom.identity import init_authority, issue_identity
from saferoom.metrics import Metrics
from saferoom.server import create_server

HERE = Path(__file__).resolve().parent
ECHO = HERE.parent / "tests" / "fixtures" / "packages" / "echo"
BLOCK = 1000


def client(pki: Path, name: str, port: int) -> Client:
    return Client.from_profile(Profile.load(pki / "identities" / name / "profile.toml"), server=f"127.0.0.1:{port}")


def totals(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("saferoom_requests_total", "saferoom_audit_fsync_seconds_count"):
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
            if sample.name == "saferoom_audit_appends_total":
                out[sample.name] = sample.value
    return out


def run_jobs(alice: Client, count: int) -> list[float]:
    started = {}
    for i in range(count):
        job = alice.run_job("echo", {"n": i % 50})
        started[job.id] = time.perf_counter()
    latencies = []
    for job_id, t0 in started.items():
        alice.wait(job_id, timeout=120)
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def replay(metrics: Metrics | None, calls: int, writes: int, fsyncs: int) -> float:
    """Seconds per job of ``BLOCK`` jobs' metric calls (``metrics`` None: the same loop calling no-ops)."""

    def nothing(*args: object) -> None:
        return None

    request = metrics.request if metrics else nothing
    written = metrics.audit_written if metrics else nothing
    began = time.perf_counter()
    for _ in range(BLOCK):
        if metrics is not None:
            timer = metrics.job_started(0.01)
            for phase in ("code", "engine", "release", "quantum"):
                timer.mark(phase)
            timer.done()
        else:
            for _phase in range(6):
                nothing()
        for i in range(calls):
            request("/saferoom.v1.JobsService/GetJob", "OK" if i else "NOT_FOUND", 0.001)
        for i in range(writes):
            written(1, 0.0004 if i < fsyncs else None)
    return (time.perf_counter() - began) / BLOCK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--blocks", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saferoom-metrics-") as tmp:
        root = Path(tmp)
        generate_catalog(root / "catalog", scale=2000, seed=7)
        pki = root / "pki"
        init_authority(pki)
        issue_identity(pki, "alice", "researcher")
        issue_identity(pki, "olga", "operator")
        config = ServerConfig.load(
            env={}, data_dir=root / "catalog", state_dir=root / "state", pki_dir=pki, listen="127.0.0.1:0",
            metrics_listen="127.0.0.1:0", release_quantum_ms=0, max_queued_jobs=1000,
        )  # fmt: skip
        server, port = create_server(config)
        metrics_port = server.metrics_port
        assert metrics_port is not None
        try:
            with client(pki, "alice", port) as alice, client(pki, "olga", port) as olga:
                summary, _ = alice.submit_package(ECHO)
                olga.approve_package(summary.hash, days=1)
                run_jobs(alice, 5)  # warm
                before = totals(metrics_port)
                run_jobs(alice, args.jobs)
                after = totals(metrics_port)
                per = {k: (after[k] - before.get(k, 0.0)) / args.jobs for k in after}
                calls = round(per["saferoom_requests_total"])
                writes = round(per["saferoom_audit_appends_total"])
                fsyncs = round(per["saferoom_audit_fsync_seconds_count"])
                print(f"one job makes {calls} calls, {writes} audit records, {fsyncs} fsyncs (measured)")

                spare = Metrics()
                diffs = []
                for _ in range(args.blocks):
                    on = replay(spare, calls, writes, fsyncs)
                    off = replay(None, calls, writes, fsyncs)
                    diffs.append((on - off) * 1000)
                print(
                    f"recording: +{statistics.median(diffs):.4f} ms per job "
                    f"(min {min(diffs):.4f}, max {max(diffs):.4f}; {args.blocks} interleaved pairs of {BLOCK} jobs)"
                )

                stop = threading.Event()
                scrapes: list[float] = []

                def scrape() -> None:
                    while True:  # at once, then every 100 ms: a round shorter than that is scraped too
                        t0 = time.perf_counter()
                        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
                            r.read()
                        scrapes.append((time.perf_counter() - t0) * 1000)
                        if stop.wait(0.1):
                            return

                quiet: list[float] = []
                scraped: list[float] = []
                for round_ in range(args.rounds):
                    for mode in ("quiet", "scraped") if round_ % 2 == 0 else ("scraped", "quiet"):
                        if mode == "scraped":
                            stop.clear()
                            scraper = threading.Thread(target=scrape)
                            scraper.start()
                            scraped += run_jobs(alice, args.jobs)
                            stop.set()
                            scraper.join()
                        else:
                            quiet += run_jobs(alice, args.jobs)
                for name, values in (("no scraper", quiet), ("scraped every 100 ms", scraped)):
                    print(
                        f"job latency, {name}: median {statistics.median(values):.1f} ms "
                        f"(min {min(values):.1f}, max {max(values):.1f}; {len(values)} jobs)"
                    )
                print(
                    f"difference of the medians: {statistics.median(scraped) - statistics.median(quiet):+.1f} ms; "
                    f"one scrape: median {statistics.median(scrapes):.2f} ms (min {min(scrapes):.2f}, "
                    f"max {max(scrapes):.2f}; {len(scrapes)} scrapes)"
                )
        finally:
            server.stop(1.0)


if __name__ == "__main__":
    main()
