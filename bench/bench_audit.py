"""Benchmark: what the audit log costs, per record and per job.

    python bench/bench_audit.py [--records 2000] [--jobs 100]

Prints (1) the latency of one append (sign + write + fdatasync) and of a full verification, and (2) for a
trivial job run end to end over mutual-TLS gRPC (submit -> wait -> result), the time spent writing its audit
records (job_queued, job_started, result_released + job_finished in one write, result_downloaded) next to
the whole job's time, p50/p95. The state directory is on the same disk as the repository. Numbers only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from saferoom.audit import AuditLog, EventType
from saferoom.catalog import generate_catalog
from saferoom.client import Client
from saferoom.config import ServerConfig
from saferoom.identity import init_authority, issue_identity
from saferoom.server import create_server
from saferoom.store import Database

HERE = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_appends(directory: Path, count: int) -> None:
    db = Database.open(directory / "bench.db")
    log = AuditLog(directory / "audit", db)
    times = []
    for i in range(count):
        start = time.perf_counter()
        log.append(
            EventType.RESULT_RELEASED,
            "saferoom",
            "server",
            {"job": f"{i:032x}", "package": "p" * 64, "datasets": ["population", "bus_stops"]},
            {"result_hash": "r" * 64, "cells_released": 40, "cells_suppressed": 3},
        )
        times.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    report = log.verify()
    verify_ms = (time.perf_counter() - start) * 1000
    print(f"append ({count} records): p50 {statistics.median(times):.3f} ms, p95 {percentile(times, 0.95):.3f} ms")
    print(
        f"full verification of {report.records} records: {verify_ms:.0f} ms "
        f"({verify_ms / report.records * 1000:.0f} us/record)"
    )
    log.close()
    db.close()


def bench_jobs(directory: Path, jobs: int) -> None:
    data, pki = directory / "data", directory / "pki"
    generate_catalog(data, scale=20_000, seed=7)
    init_authority(pki)
    researcher = issue_identity(pki, "bench-researcher", "researcher").profile
    operator = issue_identity(pki, "bench-operator", "operator").profile
    config = ServerConfig.load(
        env={}, data_dir=data, state_dir=directory / "state", pki_dir=pki, listen="127.0.0.1:0", max_concurrent_jobs=1
    )
    server, port = create_server(config)
    per_thread: dict[int, float] = {}
    original = server.audit.append_all

    def timed(entries, durable=True):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(entries, durable)
        finally:
            elapsed = time.perf_counter() - start
            per_thread[threading.get_ident()] = per_thread.get(threading.get_ident(), 0.0) + elapsed

    server.audit.append_all = timed  # type: ignore[method-assign]
    address = f"127.0.0.1:{port}"
    try:
        with (
            Client.from_profile(researcher, server=address, timeout=60) as client,
            Client.from_profile(operator, server=address, timeout=60) as reviewer,
        ):
            summary, _ = client.submit_package(HERE / "packages" / "trivial")
            reviewer.approve_package(summary.hash, days=1)
            whole, audited = [], []
            for i in range(jobs + 5):
                per_thread.clear()
                start = time.perf_counter()
                job = client.run_job(summary.hash)
                client.wait(job.id)
                client.get_result(job.id)
                elapsed = time.perf_counter() - start
                if i >= 5:  # warm-up
                    whole.append(elapsed * 1000)
                    audited.append(sum(per_thread.values()) * 1000)
        print(
            f"trivial job end to end ({jobs} jobs): "
            f"p50 {statistics.median(whole):.1f} ms, p95 {percentile(whole, 0.95):.1f} ms"
        )
        print(
            f"of which writing its audit records: "
            f"p50 {statistics.median(audited):.2f} ms, p95 {percentile(audited, 0.95):.2f} ms"
        )
    finally:
        server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saferoom-bench-audit-", dir=HERE.parent) as tmp:
        bench_appends(Path(tmp), args.records)
        bench_jobs(Path(tmp), args.jobs)


if __name__ == "__main__":
    main()
