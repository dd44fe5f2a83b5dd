"""Worker tasks for the tests of the worker pool (and `bench/`): each exercises one failure mode.

Test-only: the production start-up self-test is `saferoom.sandbox.selftest`; no task here is offered by saferoom
itself (one, `imports_during`, imports and runs any named function).
"""

from __future__ import annotations

import ctypes
import os
import resource
import time
from typing import Any

from saferoom.errors import UserCodeError

__all__ = [
    "abort",
    "allocate",
    "echo",
    "failing_warm_up",
    "identity",
    "initialize",
    "raise_user_error",
    "sleep",
    "spin",
    "trickle",
    "warm_up",
    "warmed",
]

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
        "seccomp_mode": int(libc.prctl(21, 0, 0, 0, 0)),  # PR_GET_SECCOMP: 2 = filter
    }, []


_WARMED: dict[str, Any] = {}  # what ``warm_up`` saw, in the worker it ran in (empty in a worker not warmed)


def warm_up(state: str) -> None:
    """A pool's warm-up: records the process it ran in and how confined it was then."""
    _WARMED.update(identity(state, {}, [])[0])


def failing_warm_up(state: str) -> None:
    raise RuntimeError("a warm-up that fails")


def warmed(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    """What the warm-up recorded in this worker (nothing if it was not warmed), and the worker's own pid."""
    return {"warmed": dict(_WARMED), "pid": os.getpid()}, []


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


def attempt(state: str, request: dict[str, Any], blobs: list[bytes]) -> Result:
    """Raw Python (no RestrictedPython) trying one escape; reports what happened, for the kernel-layer tests.

    Returns {"outcome": "done", "value": ...} if the action succeeded, {"outcome": "refused", "errno": N} if the
    system refused it.
    """
    import errno as errno_names
    import socket

    action, target = str(request["action"]), str(request.get("target", ""))
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int) -> int:
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, errno_names.errorcode.get(code, str(code)))
        return result

    def run() -> Any:
        if action == "read_file":
            with open(target, encoding="utf-8") as f:
                return f.read()
        if action == "write_file":
            with open(target, "w", encoding="utf-8") as f:
                f.write("escaped")
            return "written"
        if action == "unlink":
            os.unlink(target)
            return "unlinked"
        if action == "mkdir":
            os.mkdir(target)
            return "created"
        if action == "connect_tcp":
            host, port = target.rsplit(":", 1)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:  # no name lookup: numeric address
                conn.settimeout(2)
                conn.connect((host, int(port)))
                conn.sendall(b"escaped")
            return "connected"
        if action == "connect_unix":
            with socket.socket(socket.AF_UNIX) as conn:
                conn.connect(target)
            return "connected"
        if action == "interfaces":
            return sorted(name for _, name in socket.if_nameindex())
        if action == "exec":
            os.execv("/bin/sh", ["/bin/sh", "-c", f"echo escaped > {target}"])
        if action == "fork":
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            return "forked"
        if action == "thread":
            import threading

            out: list[int] = []
            worker = threading.Thread(target=lambda: out.append(1))
            worker.start()
            worker.join()
            return "thread ran" if out else "thread did not run"
        if action == "ptrace_parent":
            return check(libc.ptrace(16, os.getppid(), 0, 0))  # PTRACE_ATTACH
        if action == "kill_parent":
            os.kill(os.getppid(), 0)
            return "signalled"
        if action == "setuid_root":
            os.setuid(0)
            return "root"
        if action == "raise_rlimit":
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
            except ValueError:  # Python's word for EPERM here
                raise OSError(errno_names.EPERM, "not allowed to raise the limit") from None
            return "raised"
        if action == "unshare_user":
            return check(libc.unshare(0x10000000))  # CLONE_NEWUSER
        if action == "mount_tmpfs":
            return check(libc.mount(b"none", target.encode(), b"tmpfs", 0, None))
        raise ValueError(f"unknown action {action}")

    try:
        return {"outcome": "done", "value": run()}, []
    except OSError as exc:
        return {"outcome": "refused", "errno": exc.errno}, []


def imports_during(state: Any, request: dict[str, Any], blobs: list[bytes]) -> Result:
    """Runs the task named in the request inside this (confined) worker; replies with the modules it imported.

    Test-only: a warm zygote must have imported everything, since a worker may not be able to read the
    interpreter's files once it has dropped privileges.
    """
    import importlib
    import sys

    before = set(sys.modules)
    module, _, attr = str(request["task"]).partition(":")
    error = ""
    try:
        function = getattr(importlib.import_module(module), attr)
        if request.get("warm_up"):  # a pool's warm-up function: it takes the zygote's state only
            function(state)
        else:
            function(state, request.get("request", {}), blobs)
    except Exception as exc:  # the task's own refusal is fine; only its imports are measured
        if request.get("reraise"):
            raise
        error = type(exc).__name__
    return {"imported": sorted(set(sys.modules) - before), "error": error}, []


def nulls_to_numpy(state: Any, request: dict[str, Any], blobs: list[bytes]) -> Result:
    """What the engine does to a column with nulls: convert it to numpy (pyarrow then loads pandas_compat)."""
    import pyarrow as pa

    for values in ([1, None], [2.5, None], ["a", None]):
        pa.array(values).to_numpy(zero_copy_only=False)
    return {}, []
