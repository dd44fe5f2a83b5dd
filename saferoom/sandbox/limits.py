"""OS-level confinement of one worker process, applied in the child right after fork, before any task runs."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from dataclasses import dataclass

from saferoom.sandbox import kernel

__all__ = ["Limits", "confine"]

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """Per-worker limits. ``memory_kind``: "address_space" (RLIMIT_AS) or "data" (RLIMIT_DATA, for workers whose
    memory-mapped datasets would otherwise count against them)."""

    memory_bytes: int = 2 * 2**30  # on top of what the worker already uses when it starts
    cpu_seconds: int = 60
    wall_seconds: float = 120.0
    open_files: int = 64
    output_bytes: int = 64 * 2**20  # the largest reply accepted from a worker
    memory_kind: str = "address_space"
    max_processes: int | None = None  # RLIMIT_NPROC (0: no fork or threads); None leaves it alone
    seccomp: bool = True  # the deny-by-default system call filter (saferoom.sandbox.kernel)
    landlock: bool = True  # read-only view of the interpreter, saferoom and ``read_paths``; no writes
    read_paths: tuple[str, ...] = ()  # more directories the worker may read (the datasets)
    nice: int = 0  # added to the worker's scheduling niceness: a spinning worker yields the CPU to the others

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_paths", tuple(self.read_paths))  # it arrives as a JSON list
        if self.memory_kind not in ("address_space", "data"):
            raise ValueError("memory_kind must be address_space or data")
        if min(self.memory_bytes, self.cpu_seconds, self.open_files, self.output_bytes) <= 0 or self.wall_seconds <= 0:
            raise ValueError("limits must be positive")
        if not 0 <= self.nice <= 19:
            raise ValueError("nice must be between 0 and 19")


# Loaded once, in the zygote: resolving libc by name per worker would spawn ldconfig on every fork.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> bool:
    return int(_LIBC.prctl(option, value, 0, 0, 0)) == 0


def _current_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def close_inherited_fds(keep: int) -> None:
    """Close every file descriptor but ``keep`` and 2 (stderr, for diagnostics); 0 and 1 become /dev/null."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if null > 2:
        os.close(null)
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def confine(limits: Limits, keep_fd: int) -> list[str]:
    """Confine the calling (freshly forked) process; returns the layers that are active."""
    active = []
    parent = os.getppid()
    os.setpgid(0, 0)  # its own process group: the parent kills the group on timeout
    close_inherited_fds(keep_fd)
    active.append("inherited fds closed")
    if _prctl(PR_SET_NO_NEW_PRIVS, 1):
        active.append("no_new_privs")
    if limits.memory_kind == "data":
        base = _current_kib("VmData") * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (base + limits.memory_bytes,) * 2)
    else:
        base = _current_kib("VmSize") * 1024
        resource.setrlimit(resource.RLIMIT_AS, (base + limits.memory_bytes,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 2))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    active.append("rlimits")
    if limits.nice:
        os.nice(limits.nice)  # only ever lowered: without privileges it cannot be raised back
        active.append("niced")
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        active.append("unprivileged uid")
    if limits.max_processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes,) * 2)
        active.append("no new processes")
    # Changing uid clears the parent-death signal: set it after. If the zygote is already gone, so are we.
    if _prctl(PR_SET_PDEATHSIG, signal.SIGKILL):
        active.append("dies with its parent")
    if os.getppid() != parent:
        os._exit(1)
    if limits.landlock and kernel.restrict_filesystem(kernel.default_read_paths(limits.read_paths)):
        active.append("landlock")
    if limits.seccomp and kernel.install_seccomp():  # last: from here on, only the allowed system calls
        active.append("seccomp")
    return active
