"""Red team: connections that never finish the TLS handshake, or sit idle after it.

The layer that must stop them: gRPC's own server options, set by ``saferoom.server.app`` from the
configuration (``handshake_timeout_seconds``, ``idle_timeout_seconds``). Before, a connection that never spoke
was held for gRPC's default 120 s, and 300 of them made the server unreachable.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

HANDSHAKE_SECONDS = 1.0
IDLE_SECONDS = 2.0
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags, stream 0


@pytest.fixture(scope="module")
def guarded(
    catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    config = server_config(
        catalog_dir,
        tmp_path_factory.mktemp("guarded"),
        deployment.pki,
        handshake_timeout_seconds=HANDSHAKE_SECONDS,
        idle_timeout_seconds=IDLE_SECONDS,
    )
    srv, _ = create_server(config)
    try:
        yield srv
    finally:
        srv.stop(1.0)


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the peer closes ``sock`` within ``within`` seconds (whatever it sent before closing)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, ssl.SSLError):
            return True
        except ssl.SSLWantReadError:
            continue
    return False


def test_300_connections_that_never_speak_do_not_make_the_server_unreachable(
    guarded: SaferoomServer, deployment: Deployment
) -> None:
    silent = []
    try:
        for _ in range(300):
            silent.append(socket.create_connection(("127.0.0.1", guarded.port), timeout=5))
        started = time.monotonic()
        with deployment.client("alice", guarded.port, timeout=20) as alice:
            assert alice.list_datasets()
        assert time.monotonic() - started < 10, "a real call waited behind the silent connections"
        # and the silent ones are dropped after the handshake timeout, not held for two minutes
        assert all(_closed_by_peer(s, HANDSHAKE_SECONDS + 10) for s in silent)
    finally:
        for s in silent:
            s.close()


def test_a_connection_that_stops_halfway_through_the_handshake_is_closed(guarded: SaferoomServer) -> None:
    """A ClientHello's first bytes, then silence (a slowloris of TLS)."""
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        started = time.monotonic()
        assert _closed_by_peer(sock, HANDSHAKE_SECONDS + 10)
        assert time.monotonic() - started >= HANDSHAKE_SECONDS * 0.5


def test_an_idle_connection_after_the_handshake_is_closed(guarded: SaferoomServer, deployment: Deployment) -> None:
    """A client that completes mutual TLS and HTTP/2's preface, then never calls anything, is dropped after the
    idle timeout."""
    profile = deployment.profile("alice")
    context = ssl.create_default_context(cafile=str(profile.ca))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    context.load_cert_chain(str(profile.cert), str(profile.key))
    with (
        socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(HTTP2_PREFACE + EMPTY_SETTINGS)
        started = time.monotonic()
        assert _closed_by_peer(tls, IDLE_SECONDS + 15)
        assert time.monotonic() - started >= IDLE_SECONDS * 0.5
