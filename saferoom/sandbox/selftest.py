"""The worker pool's self-test tasks (used by its tests and by `bench/`): each exercises one failure mode."""

from __future__ import annotations

import ctypes
import os
import resource
import time
from typing import Any

from saferoom.errors import UserCodeError

__all__ = ["abort", "allocate", "echo", "identity", "initialize", "raise_user_error", "sleep", "spin", "trickle"]

Result = tuple[dict[str, Any], list[bytes]]


def initialize(greeting: str = "") -> str:
    return greeting


def echo(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    """Returns the request and the blobs reversed."""
    return {"request": request, "state": state}, [b[::-1] for b in blobs]


def sleep(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    time.sleep(float(request.get("seconds", 1)))
    return {}, []


def allocate(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    """Allocates ``mib`` MiB, touching every page."""
    chunks = [bytearray(2**20) for _ in range(int(request.get("mib", 1)))]
    return {"allocated": len(chunks)}, []


def abort(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    os.abort()


def spin(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    n = 0
    while True:
        n += 1


def raise_user_error(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    raise UserCodeError(str(request.get("message", "")))


def identity(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    """What the worker's confinement looks like from inside."""
    libc = ctypes.CDLL(None)
    return {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "uid": os.getuid(),
        "open_fds": len(os.listdir("/proc/self/fd")) - 1,  # minus the listing's own fd
        "fsize_limit": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
        "core_limit": resource.getrlimit(resource.RLIMIT_CORE)[0],
        "no_new_privs": int(libc.prctl(39, 0, 0, 0, 0)),  # PR_GET_NO_NEW_PRIVS
    }, []


def trickle(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    """Sends a reply header announcing a large blob, then trickles it a byte at a time (a slowloris worker)."""
    import socket
    import struct

    sock = socket.socket(fileno=int(request["fd"])) if "fd" in request else None
    if sock is None:
        for fd in range(3, 64):
            try:
                candidate = socket.socket(fileno=fd)
            except OSError:
                continue
            if candidate.type == socket.SOCK_STREAM:
                sock = candidate
                break
    assert sock is not None
    header = b'{"ok":{},"blobs":[1000000]}'
    sock.sendall(struct.pack(">I", len(header)) + header)
    while True:
        sock.sendall(b"x")
        time.sleep(0.1)
