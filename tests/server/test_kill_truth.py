"""kill -9 at random moments under concurrent load (issue 13): after every crash, every acknowledged change has
its records in the log file, the database holds nothing the log (or the outbox) does not, and the next start
reconciles the two and serves. ``SAFEROOM_KILL_ROUNDS`` sets how many kills (default 20, 1-2 minutes here;
``SAFEROOM_KILL_ROUNDS=40`` for a longer soak) and ``SAFEROOM_KILL_SEED`` the moments."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from saferoom.audit.crosscheck import check_state_dir
from saferoom.audit.verify import iter_frames
from saferoom.errors import SaferoomError
from tests.support import Deployment
from tests.support_state import REJECTED

PACKAGES = Path(__file__).resolve().parents[1] / "fixtures" / "packages"
ROUNDS = int(os.environ.get("SAFEROOM_KILL_ROUNDS", "20"))  # 3-6 s a round here (a start is most of it)


def start(catalog_dir: Path, state_dir: Path, pki_dir: Path, log: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "SAFEROOM_MAX_CONCURRENT_JOBS": "2"}
    command = [sys.executable, "-m", "saferoom.cli.main", "serve", "--data", str(catalog_dir),
               "--state", str(state_dir), "--pki", str(pki_dir), "--listen", "127.0.0.1:0"]  # fmt: skip
    with open(log, "a") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match, f"the server did not start: {line!r}; its errors: {log.read_text()[-2000:]}"
    return proc, int(match.group(1))


def kill_hard(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def logged(state: Path) -> dict[str, set[str]]:
    """What the log file itself holds (not the outbox): job ids queued, budgets set, packages rejected."""
    out: dict[str, set[str]] = {"job_queued": set(), "budget_set": set(), "package_rejected": set()}
    for frame in iter_frames((state / "audit" / "audit.log").read_bytes()):
        r = frame.record
        if r.event == "job_queued":
            out["job_queued"].add(str(r.objects["job"]))
        elif r.event == "budget_set":
            out["budget_set"].add(repr(r.summary["epsilon_total"]))
        elif r.event == "package_rejected":
            out["package_rejected"].add(str(r.objects["package"]))
    return out


def test_every_acknowledged_change_has_its_records_after_any_kill_9(
    dp_catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    state, errors = tmp_path / "state", tmp_path / "server.err"
    rng = random.Random(int(os.environ.get("SAFEROOM_KILL_SEED", "13")))
    acknowledged: dict[str, set[str]] = {"job_queued": set(), "budget_set": set(), "package_rejected": set()}
    lock = threading.Lock()
    proc, port = start(dp_catalog_dir, state, deployment.pki, errors)
    with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
        echo, _ = alice.submit_package(PACKAGES / "echo")
        olga.approve_package(echo.hash, days=1)
    counter = iter(range(10**9))
    started = time.monotonic()
    for round_ in range(ROUNDS):
        stop = threading.Event()

        def load(kind: str, port: int = port, stop: threading.Event = stop) -> None:
            try:
                with deployment.client("olga" if kind != "jobs" else "alice", port, timeout=10) as c:
                    while not stop.is_set():
                        n = next(counter)
                        if kind == "jobs":
                            job = c.run_job(echo.hash, {"n": n % 100}, request_id=f"k{n}")
                            got = ("job_queued", job.id)
                        elif kind == "budgets":
                            epsilon = round(1 + n / 1000, 3)  # whole millionths: logged as given
                            c.set_budget("alice", "population", epsilon, 1e-6)
                            got = ("budget_set", repr(epsilon))
                        else:
                            files = {**REJECTED, "main.py": REJECTED["main.py"] + f"# {n}\n".encode()}
                            with deployment.client("alice", port, timeout=10) as alice:
                                summary, _ = alice.submit_package(files)
                            c.reject_package(summary.hash, "no")
                            got = ("package_rejected", summary.hash)
                        with lock:
                            acknowledged[got[0]].add(got[1])
            except SaferoomError:
                return  # the server died under us: whatever was in flight was not acknowledged

        threads = [threading.Thread(target=load, args=(k,)) for k in ("jobs", "jobs", "budgets", "reviews")]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.2, 1.2))
        kill_hard(proc)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        problems = check_state_dir(state)  # offline, before anything repairs it
        assert problems == [], f"round {round_}: {problems}"
        found = logged(state)
        for kind, ids in acknowledged.items():
            missing = ids - found[kind]
            assert not missing, f"round {round_}: acknowledged {kind} not in the log file: {sorted(missing)[:5]}"
        proc, port = start(dp_catalog_dir, state, deployment.pki, errors)  # reconciles, cross-checks, serves
    try:
        with deployment.client("audrey", port) as audrey:
            assert audrey.verify_log().ok
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:  # a hung shutdown: the server dumped its threads' stacks to its log
            kill_hard(proc)
            pytest.fail(f"the server did not stop within 90 s of SIGTERM; its log ends:\n{errors.read_text()[-6000:]}")
        assert code == 0, errors.read_text()[-3000:]
    assert check_state_dir(state) == []
    assert sum(len(v) for v in acknowledged.values()) > ROUNDS  # the load really ran
    counts = {k: len(v) for k, v in acknowledged.items()}
    print(f"{ROUNDS} kills in {time.monotonic() - started:.0f} s; acknowledged: {counts}")
