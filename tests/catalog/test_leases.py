"""Leases on dataset versions: shared flocks that a collector cannot take over, and that die with their process."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from saferoom.catalog.leases import Claim, Lease, claimed

HOLDER = """
import sys, time
from pathlib import Path
from saferoom.catalog.leases import Lease
lease = Lease()
lease.hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def test_a_leased_version_cannot_be_claimed_until_the_lease_goes(tmp_path: Path) -> None:
    version, directory = tmp_path / "stops-0123.arrow", tmp_path / "parquet-0123"
    version.write_bytes(b"data")
    directory.mkdir()
    with Lease() as lease:
        lease.hold(version)
        lease.hold(directory)
        assert lease.paths == sorted([version, directory])
        for path in (version, directory):
            with claimed(path) as claim:
                assert claim is Claim.HELD
    for path in (version, directory):
        with claimed(path) as claim:
            assert claim is Claim.CLAIMED
    with claimed(tmp_path / "gone.arrow") as claim:
        assert claim is Claim.GONE


def test_a_lease_waits_for_a_deletion_in_progress_and_then_says_it_is_gone(tmp_path: Path) -> None:
    version = tmp_path / "stops-0123.arrow"
    version.write_bytes(b"data")
    outcome: list[BaseException | None] = []
    with claimed(version) as claim:
        assert claim is Claim.CLAIMED

        def lease() -> None:
            try:
                Lease().hold(version)
                outcome.append(None)
            except FileNotFoundError as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=lease)
        waiting.start()
        time.sleep(0.2)
        assert not outcome  # waits while the collector holds the version
        version.unlink()
    waiting.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], FileNotFoundError)


def test_a_lease_dies_with_its_process(tmp_path: Path) -> None:
    version = tmp_path / "stops-0123.arrow"
    version.write_bytes(b"data")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(version)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with claimed(version) as claim:
            assert claim is Claim.HELD
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
        holder.wait(10)
        with claimed(version) as claim:
            assert claim is Claim.CLAIMED
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_dropped_lease_is_released(tmp_path: Path) -> None:
    path = tmp_path / "stops-0123.arrow"
    path.write_bytes(b"data")
    lease = Lease()
    lease.hold(path)
    del lease  # (a catalog nobody refers to any more)
    gc.collect()
    with claimed(path) as claim:
        assert claim is Claim.CLAIMED
