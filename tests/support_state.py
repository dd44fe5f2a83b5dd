"""Helpers for the state-and-log tests: a state directory with every kind of audited row, and ways to damage it.

``populate`` runs a real server over the differentially private catalog and leaves: two approved packages (one
spending privacy budget), a rejected one, a budget set for alice, a succeeded DP job (a charge and a released
result) and a succeeded exact job. It returns two copies of the state: one after a clean stop, and one taken
while the server was still running and idle after a WAL checkpoint half way (the image a crash leaves: its
latest jobs only in the WAL, records after the last stored checkpoint).
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from saferoom.audit.record import HEADER, SIGNATURE_BYTES
from saferoom.audit.verify import iter_frames
from saferoom.errors import SaferoomError
from saferoom.server import create_server
from tests.support import Deployment, server_config

COUNT = 'def run(ctx):\n    return {"n": ctx.table("population").agg(n=count())}\n'
SALES = 'def run(ctx):\n    return {"n": ctx.table("bus_stops").agg(n=count())}\n'


def package(name: str, source: str, dataset: str, epsilon: float | None) -> dict[str, bytes]:
    manifest = f'name = "{name}"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["{dataset}"]\n'
    if epsilon is not None:
        manifest += f"[privacy]\nepsilon = {{ {dataset} = {epsilon!r} }}\n"
    return {"saferoom.toml": manifest.encode(), "main.py": source.encode()}


DP_COUNT = package("truth-dp-count", COUNT, "population", 0.25)
SALES_COUNT = package("truth-stops", SALES, "bus_stops", None)
REJECTED = package("truth-rejected", COUNT.replace("n=count()", "m=count()"), "population", 0.5)


@dataclass(frozen=True)
class States:
    stopped: Path
    crashed: Path
    before_jobs_db: Path  # a copy of saferoom.db from before the jobs ran (and charged)
    dp_job: str
    exact_job: str


def copy_state(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def populate(root: Path, catalog_dir: Path, deployment: Deployment) -> States:
    state = root / "live"
    srv, port = create_server(server_config(catalog_dir, state, deployment.pki))
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            hashes = []
            for files in (DP_COUNT, SALES_COUNT):
                summary, _ = alice.submit_package(files)
                olga.approve_package(summary.hash, days=30)
                hashes.append(summary.hash)
            rejected, _ = alice.submit_package(REJECTED)
            olga.reject_package(rejected.hash, "not needed")
            olga.set_budget("alice", "population", 2.0, 1e-6)
            with (
                closing(sqlite3.connect(state / "saferoom.db")) as conn,
                conn,
            ):  # what is older than this is in the main file
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            before_jobs_db = root / "before-jobs.db"
            shutil.copyfile(state / "saferoom.db", before_jobs_db)
            dp_job = alice.wait(alice.run_job(hashes[0]).id, timeout=120)
            exact_job = alice.wait(alice.run_job(hashes[1]).id, timeout=120)
            assert dp_job.state == exact_job.state == "succeeded", (dp_job.error_message, exact_job.error_message)
            alice.get_result(dp_job.id)
        crashed = copy_state(state, root / "crashed")  # idle: the files are what a kill -9 now would leave
    finally:
        srv.stop(1.0)
    stopped = copy_state(state, root / "stopped")
    return States(stopped, crashed, before_jobs_db, dp_job.id, exact_job.id)


def refusal(state: Path, catalog_dir: Path, deployment: Deployment) -> str:
    """Start a server on ``state``: it must refuse (a saferoom error, not a traceback); the reason."""
    try:
        srv, _ = create_server(server_config(catalog_dir, state, deployment.pki))
    except SaferoomError as exc:
        return exc.message
    srv.stop(1.0)
    raise AssertionError(f"a server started on the damaged state {state}")


def frame_ends(log: Path) -> list[int]:
    """The offset just after each record of an audit log."""
    return [f.offset + HEADER.size + len(f.body) + SIGNATURE_BYTES for f in iter_frames(log.read_bytes())]


def execute(state: Path, sql: str, args: tuple[object, ...] = ()) -> int:
    """Edit a stopped server's database behind its back; the number of rows changed."""
    with closing(sqlite3.connect(state / "saferoom.db")) as conn, conn:
        changed = conn.execute(sql, args).rowcount
    return changed
