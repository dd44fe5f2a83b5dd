"""The wire format between the server and its worker processes: data only, never code (no pickle).

A message is a frame: a 4-byte big-endian header length, a JSON header (an object), then the raw bytes of each
blob whose sizes the header lists under ``"blobs"``. Every length is checked against a limit before anything is
allocated, so a hostile or broken peer cannot make the reader allocate more than it allows.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

__all__ = ["FrameError", "FrameTooLarge", "recv_frame", "send_frame"]

_HEADER = struct.Struct(">I")
MAX_HEADER = 32 * 1024 * 1024


class FrameError(Exception):
    """The peer closed the connection or sent a malformed frame."""


class FrameTooLarge(FrameError):
    """The peer announced more bytes than the reader accepts."""


def send_frame(sock: socket.socket, header: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...] = ()) -> None:
    """Send one frame."""
    data = json.dumps({**header, "blobs": [len(b) for b in blobs]}, separators=(",", ":"), allow_nan=False)
    encoded = data.encode("utf-8")
    sock.sendall(_HEADER.pack(len(encoded)) + encoded)
    for blob in blobs:
        sock.sendall(blob)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buffer = bytearray(n)
    view = memoryview(buffer)
    got = 0
    while got < n:
        if deadline is not None:  # bounds the whole message, not each recv: a peer trickling bytes gains nothing
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the peer did not send its message in time")
            sock.settimeout(remaining)
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise FrameError("connection closed")
        got += k
    return bytes(buffer)


def recv_frame(sock: socket.socket, limit: int, deadline: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """Receive one frame of at most ``limit`` bytes in all, by ``deadline`` (time.monotonic) if given."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    if size > min(limit, MAX_HEADER):
        raise FrameTooLarge(f"header of {size} bytes exceeds the limit")
    try:
        header = json.loads(_recv_exact(sock, size, deadline))
    except (ValueError, RecursionError) as exc:
        raise FrameError("malformed header") from exc
    sizes = header.get("blobs") if isinstance(header, dict) else None
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise FrameError("malformed header")
    if size + sum(sizes) > limit:
        raise FrameTooLarge(f"message of {size + sum(sizes)} bytes exceeds the limit of {limit}")
    blobs = [_recv_exact(sock, s, deadline) for s in sizes]
    del header["blobs"]
    return header, blobs
