"""The zygote: a warm parent process that forks one fresh, confined worker per task.

Started by ``WorkerPool`` as a clean interpreter (``python -m saferoom.sandbox FD``), so it inherits no
keys, database handles or sockets from the server. It runs the pool's initializer once (imports, memory-mapped
datasets), then serves requests on its control socket:

    {"op": "fork", "limits": {...}, "warm": bool}  + one passed fd  ->  {"pid": N}   (the child serves one task
                                                                       on the fd)
    {"op": "status", "pid": N}                          ->  {"status": wait status or null}

Control messages are single JSON datagrams on a SOCK_SEQPACKET socket (``control_send``/``control_recv``).
The child confines itself (``saferoom.sandbox.limits``), reads one task frame, runs the allow-listed task
function and writes one reply frame: ``{"ok": data}`` or ``{"error": {"code", "message"}}``. A child forked
``warm`` (the pool's spare, forked ahead of its task) first runs the pool's warm-up function, confined, on
constants: the copy-on-write faults of its first touches of the zygote's memory (milliseconds) are then paid
before a job is waiting for it, not after; it then writes ``WARM_READY`` before it reads its task frame.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from saferoom.errors import LimitExceeded, SaferoomError, UserCodeError, WorkerCrashed
from saferoom.sandbox import kernel
from saferoom.sandbox.limits import PR_SET_PDEATHSIG, Limits, _prctl, confine
from saferoom.sandbox.protocol import FrameError, recv_frame, send_frame

__all__ = ["control_recv", "control_send", "main"]

MAX_TASK_BYTES = 64 * 2**20
WARM_READY = b"\x01"  # a warmed worker's one byte to the pool before it reads its task
MAX_CONTROL_BYTES = 1 << 20
Task = Callable[[Any, dict[str, Any], list[bytes]], tuple[dict[str, Any], list[bytes]]]


def control_send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one control datagram (with file descriptors, if any)."""
    socket.send_fds(sock, [json.dumps(message).encode("utf-8")], fds or [])


def control_recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Receive one control datagram; an empty dict means the peer closed the socket."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_CONTROL_BYTES, 4)
    if not data:
        return {}, fds
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("malformed control message")
    return message, fds


def _resolve(name: str) -> Any:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _warm_up(warm: Callable[[Any], None], state: Any) -> None:
    """Run the pool's warm-up in a confined child before its task; a failure only leaves the child cold."""
    depth = sys.getrecursionlimit()
    try:
        warm(state)
    except Exception as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"worker warm-up failed: {type(exc).__name__}\n".encode())
    finally:
        sys.setrecursionlimit(depth)


def _serve_task(
    sock: socket.socket, tasks: dict[str, Task], state: Any, limits: Limits, warm: Callable[[Any], None] | None
) -> None:
    """In the forked child: confine, warm up (a spare), run one task, reply, exit."""
    # RLIMIT_FSIZE is 0 in a worker: where stderr is a regular file (a log, pytest's capture), a diagnostic line
    # would raise SIGXFSZ and kill the worker, hiding the real failure. Ignored, the write just fails.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    confine(limits, sock.fileno())
    if warm is not None:
        _warm_up(warm, state)
        try:  # ready: the pool offers this worker as its spare only now, not while it is still warming up
            sock.sendall(WARM_READY)
        except OSError:
            os._exit(3)
    try:
        header, blobs = recv_frame(sock, MAX_TASK_BYTES)
        task = tasks.get(header.get("task", ""))
        if task is None:
            raise WorkerCrashed("unknown task")
        data, out = task(state, header.get("request", {}), blobs)
        reply: dict[str, Any] = {"ok": data}
    except SaferoomError as exc:
        reply, out = {"error": {"code": exc.code, "message": exc.message}}, []
    except MemoryError:
        limit = f"{limits.memory_bytes // 2**20} MiB"
        reply, out = {"error": {"code": LimitExceeded.code, "message": f"memory limit of {limit} exceeded"}}, []
    except RecursionError:
        reply, out = {"error": {"code": UserCodeError.code, "message": "recursion too deep"}}, []
    except FrameError:
        os._exit(3)
    except Exception as exc:
        # Not traceback.print_exc(): formatting a traceback reads source files and may import modules, which a
        # confined worker cannot do (it was killed trying, and reported as out of memory).
        with contextlib.suppress(OSError):
            os.write(2, f"worker task failed: {type(exc).__name__}\n".encode())
        reply, out = {"error": {"code": WorkerCrashed.code, "message": _failure(exc)}}, []
    size = sum(len(b) for b in out)
    if size > limits.output_bytes:
        limit = f"{limits.output_bytes // 2**20} MiB"
        reply, out = {"error": {"code": LimitExceeded.code, "message": f"output larger than {limit}"}}, []
    try:
        send_frame(sock, reply, out)
    except (OSError, MemoryError, ValueError):
        os._exit(4)
    os._exit(0)


def _failure(exc: Exception) -> str:
    """What went wrong, as what it is: the exception's type (and, for an import, the module), never its text,
    which may quote data."""
    if isinstance(exc, ImportError):
        # A module not imported before the worker dropped privileges (the zygote's initializer missed it).
        return f"the worker failed: {type(exc).__name__} for module {str(exc.name)[:80]!r}"
    return f"the worker failed: {type(exc).__name__}"


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote dies with the server
    if os.getppid() != parent:
        os._exit(1)
    header, _ = control_recv(control)
    try:
        state = _resolve(header["initializer"])(**header.get("init_args", {}))
        tasks = {name: _resolve(name) for name in header["tasks"]}
        warm = _resolve(header["warm"]) if header.get("warm") else None
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        control_send(control, {"error": f"initializer failed: {type(exc).__name__}"})
        return
    kernel.prepare_seccomp()  # compiled once here; each forked worker only loads it
    layers = dict(kernel.available_layers())
    # After the initializer (which may need the network namespace it came from, e.g. for name lookups):
    # every worker forked from here on has no network at all.
    layers["network namespace"] = bool(header.get("network_namespace", True)) and kernel.enter_network_namespace()
    control_send(control, {"ready": True, "pid": os.getpid(), "layers": layers})
    statuses: dict[int, int] = {}
    while True:
        try:
            request, fds = control_recv(control)
        except (OSError, ValueError):
            return
        if not request:
            return  # the pool closed the control socket
        _reap(statuses)
        if request.get("op") == "fork" and len(fds) == 1:
            limits = Limits(**request["limits"])
            pid = os.fork()
            if pid == 0:
                control.close()
                _serve_task(socket.socket(fileno=fds[0]), tasks, state, limits, warm if request.get("warm") else None)
            os.close(fds[0])
            control_send(control, {"pid": pid})
        elif request.get("op") == "status":
            pid = int(request["pid"])
            deadline = time.monotonic() + 2.0
            while pid not in statuses and time.monotonic() < deadline:
                _reap(statuses)
                if pid not in statuses:
                    time.sleep(0.002)
            control_send(control, {"status": statuses.pop(pid, None)})
        else:
            for fd in fds:
                os.close(fd)
            control_send(control, {"error": "bad request"})


def _reap(statuses: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        statuses[pid] = status
        if len(statuses) > 10_000:  # nobody asked about these: forget the oldest
            statuses.pop(next(iter(statuses)))
