"""Benchmark: what the audit outbox costs a mutating RPC, before (another checkout) and after (this one).

    python bench/bench_outbox.py --before /work/main [--rounds 6] [--calls 20]

Starts two servers side by side as subprocesses on the same disk, one running the code of ``--before`` and one
this checkout's (each by PYTHONPATH), on the same differentially private catalog and PKI, and times SetBudget
and RunJob (a trivial job, acknowledged when queued) over mutual-TLS gRPC, interleaving the two servers round
by round so that the machine's load falls on both alike. Prints per server and RPC: median, min and max in ms.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from saferoom.catalog import generate_catalog
from saferoom.client import Client
from saferoom.identity import init_authority, issue_identity

HERE = Path(__file__).resolve().parent
ECHO = HERE.parent / "tests" / "fixtures" / "packages" / "echo"


def start(code: Path, catalog: Path, state: Path, pki: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, "-m", "saferoom.cli.main", "serve", "--data", str(catalog), "--state", str(state),
               "--pki", str(pki), "--listen", "127.0.0.1:0"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True, cwd=code)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not match:
        raise SystemExit(f"the server of {code} did not start: {line!r}")
    return proc, int(match.group(1))


def _client(pki: Path, name: str, port: int) -> Client:
    from saferoom.client import Profile

    return Client.from_profile(Profile.load(pki / "identities" / name / "profile.toml"), server=f"127.0.0.1:{port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=20, help="calls per RPC per server per round")
    args = parser.parse_args()
    after = HERE.parent
    with tempfile.TemporaryDirectory(prefix="saferoom-outbox-", dir=HERE.parent) as tmp:
        root = Path(tmp)
        generate_catalog(root / "catalog", scale=2000, seed=7)
        init_authority(root / "pki")
        for name, roles in (("alice", "researcher"), ("olga", "operator")):
            issue_identity(root / "pki", name, roles)
        servers = {}
        for label, code in (("before", args.before.resolve()), ("after", after)):
            proc, port = start(code, root / "catalog", root / f"state-{label}", root / "pki")
            alice, olga = _client(root / "pki", "alice", port), _client(root / "pki", "olga", port)
            summary, _ = alice.submit_package(ECHO)
            olga.approve_package(summary.hash, days=1)
            servers[label] = (proc, alice, olga, summary.hash)
        times: dict[tuple[str, str], list[float]] = {}
        try:
            for r in range(args.rounds):
                for label in ("before", "after") if r % 2 == 0 else ("after", "before"):
                    _, alice, olga, package = servers[label]
                    for i in range(args.calls):
                        t = time.perf_counter()
                        olga.set_budget("alice", "population", 1 + (r * args.calls + i) / 1000, 1e-6)
                        times.setdefault((label, "SetBudget"), []).append((time.perf_counter() - t) * 1000)
                        t = time.perf_counter()
                        alice.run_job(package, {"n": i})
                        times.setdefault((label, "RunJob"), []).append((time.perf_counter() - t) * 1000)
                    time.sleep(1.0)  # let the queued jobs run off before the other server's round
        finally:
            for proc, alice, olga, _ in servers.values():
                alice.close()
                olga.close()
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=90)
        for rpc in ("SetBudget", "RunJob"):
            for label in ("before", "after"):
                v = times[(label, rpc)]
                spread = f"min {min(v):6.2f}, max {max(v):7.2f} (n={len(v)})"
                print(f"{rpc:9} {label:6}: median {statistics.median(v):6.2f} ms, {spread}")


if __name__ == "__main__":
    main()
