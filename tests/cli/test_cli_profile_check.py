"""`saferoom profile check`: connect as your profile's identity and see who the server takes you for, waiting for
a server just started. Through the real CLI, a real server and real certificates."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferoom.cli.main import cli
from saferoom.identity.pki import revoke_identity
from saferoom.server import create_server
from tests.support import Deployment, make_deployment, server_config


def _check(pki: Path, name: str, port: int, *args: str) -> tuple[int, str]:
    profile = pki / "identities" / name / "profile.toml"
    result = CliRunner().invoke(
        cli, ["--profile", str(profile), "profile", "check", *args, "--server", f"127.0.0.1:{port}"]
    )
    return result.exit_code, result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_role_is_told_who_it_is(catalog_dir: Path, deployment: Deployment, tmp_path: Path) -> None:
    srv, port = create_server(server_config(catalog_dir, tmp_path, deployment.pki))
    try:
        for name, roles in (("alice", ["researcher"]), ("olga", ["operator"]), ("audrey", ["auditor"]),
                            ("rita", ["output_checker", "researcher"])):  # fmt: skip
            code, out = _check(deployment.pki, name, port, "--json")
            assert code == 0, out
            assert json.loads(out) == {"name": name, "roles": roles, "server": f"127.0.0.1:{port}", "status": "SERVING"}
        code, out = _check(deployment.pki, "olga", port)
        assert code == 0 and f"olga (operator) at 127.0.0.1:{port}: SERVING" in out
    finally:
        srv.stop(1.0)


def test_without_wait_a_server_that_is_not_up_is_unavailable(deployment: Deployment) -> None:
    started = time.monotonic()
    code, out = _check(deployment.pki, "alice", _free_port(), "--json")
    assert code == 1 and "UNAVAILABLE" in out
    assert time.monotonic() - started < 20  # at once, not after a long wait


def test_wait_rides_out_a_server_that_is_starting(catalog_dir: Path, deployment: Deployment, tmp_path: Path) -> None:
    port = _free_port()
    servers = []

    def start_later() -> None:
        time.sleep(1.5)
        servers.append(create_server(server_config(catalog_dir, tmp_path, deployment.pki, listen=f"127.0.0.1:{port}")))

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        code, out = _check(deployment.pki, "alice", port, "--wait", "60")
        assert code == 0 and "SERVING" in out, out
    finally:
        starter.join()
        for srv, _ in servers:
            srv.stop(1.0)


def test_a_revoked_certificate_is_told_so(catalog_dir: Path, tmp_path: Path) -> None:
    pki = make_deployment(tmp_path / "pki").pki
    srv, port = create_server(server_config(catalog_dir, tmp_path / "state", pki))
    try:
        assert _check(pki, "bob", port)[0] == 0
        revoke_identity(pki, "bob")
        code, out = _check(pki, "bob", port, "--json")
        assert code == 1 and "UNAUTHENTICATED" in out
        assert _check(pki, "alice", port)[0] == 0  # everyone else still gets in
    finally:
        srv.stop(1.0)


@pytest.mark.parametrize("wait", ["-1", "601", "soon"])
def test_a_bad_wait_is_refused_before_connecting(deployment: Deployment, wait: str) -> None:
    code, out = _check(deployment.pki, "alice", _free_port(), "--wait", wait)
    assert code == 2 and "--wait" in out
