"""Fixtures of the importer's tests: a throwaway PostgreSQL cluster on a loopback port (Debian's package)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("SAFEROOM_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A PostgreSQL server started for the session: initdb + pg_ctl in a temporary directory, 127.0.0.1 only.

    initdb refuses to run as root, so as root the cluster belongs to ``nobody``. Outside CI a machine without the
    binaries skips these tests; in CI (env CI set) it fails: .ci/run installs the package.
    """
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        initdb = found[-1] if found else initdb
    if not initdb.exists():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries are missing: .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL binaries (Debian package postgresql) are not installed")
    bin_dir = initdb.parent
    # Directly under the system's temporary directory: pytest's own is private to root, and as root the
    # cluster's user (nobody) must be able to reach it.
    base = Path(tempfile.mkdtemp(prefix="saferoom-pg-"))
    data = base / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        run_as = [shutil.which("runuser") or "runuser", "-u", "nobody", "--"]
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "owner", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        env=env,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} -c fsync=off"
    subprocess.run(
        [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        yield f"postgresql://owner@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            env=env,
        )
        shutil.rmtree(base, ignore_errors=True)
