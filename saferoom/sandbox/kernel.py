"""Kernel-level layers under the worker: a seccomp filter, a Landlock read-only view, a network namespace.

Each is applied where it is cheapest and holds on its own:

- network namespace: once, by the zygote, right after its initializer (every worker forked from it then has
  no network interface but a down loopback; the already-open socket to the pool keeps working);
- Landlock (Linux >= 5.13): per worker, in ``confine``: reads only beneath the interpreter's and saferoom's own
  directories and the datasets, no writes anywhere, no TCP bind/connect (ABI >= 4), no abstract unix sockets
  or signals outside the worker (ABI >= 6);
- seccomp (libseccomp): per worker, last in ``confine``: deny by default (EPERM); allowed are the system calls a
  Python worker needs after set-up: memory, futexes, time, reads, read-only opens, and I/O on the descriptors
  it already holds. No socket, connect, bind, execve, fork (clone only for threads), ptrace, mount, unshare,
  open for writing, unlink, chmod, kill, ...

A layer the host cannot provide is reported as missing (``available_layers``), and the server logs which
layers are active on this host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "available_layers",
    "compile_seccomp",
    "enter_network_namespace",
    "install_seccomp",
    "prepare_seccomp",
    "restrict_filesystem",
]

_LIBC = ctypes.CDLL(None, use_errno=True)

# ------------------------------------------------------------------ network namespace

CLONE_NEWNET = 0x40000000


def enter_network_namespace() -> bool:
    """Move the calling process into a new, empty network namespace; False if the host does not allow it."""
    return int(_LIBC.unshare(ctypes.c_int(CLONE_NEWNET))) == 0


# ------------------------------------------------------------------ Landlock

_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_FS_READ_FILE, _FS_READ_DIR = 1 << 2, 1 << 3
_FS_ALL_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2


def _syscall(number: int, *args: object) -> int:
    """syscall(2) with every integer argument passed as a full C long (it is variadic)."""
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(_LIBC.syscall(ctypes.c_long(number), *converted))


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]  # fmt: skip


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers (0: none)."""
    version = int(_syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    return max(version, 0)


def default_read_paths(extra: Iterable[str] = ()) -> list[str]:
    """What a worker may read: the interpreter, its libraries, saferoom's own package, and ``extra`` (datasets).

    Not the rest of ``sys.path``: an editable install puts the whole checkout there (and with it, perhaps, a
    state directory), and the working directory may be anything.
    """
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/usr/lib", "/usr/lib64", "/lib", "/lib64",
             "/usr/share/zoneinfo", "/sys/devices/system/cpu", "/dev/null", "/dev/urandom", "/proc/self"}  # fmt: skip
    paths.add(str(Path(__file__).resolve().parent.parent))  # the saferoom package
    paths.update(extra)
    return sorted(p for p in paths if os.path.exists(p))


def restrict_filesystem(read_paths: Iterable[str]) -> int:
    """Landlock this process: read-only beneath ``read_paths``, nothing else; returns the ABI used (0: none)."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    handled_fs = _FS_ALL_BY_ABI[max(k for k in _FS_ALL_BY_ABI if k <= abi)]
    attr = _RulesetAttr(
        handled_access_fs=handled_fs,
        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = int(_syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0))
    if ruleset < 0:
        return 0
    try:
        for path in read_paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                access = _FS_READ_FILE | (_FS_READ_DIR if os.path.isdir(path) else 0)
                rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
                _syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
            finally:
                os.close(fd)
        if int(_syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)) != 0:
            return 0
    finally:
        os.close(ruleset)
    return abi


# ------------------------------------------------------------------ seccomp

_SECCOMP_PATH = ctypes.util.find_library("seccomp")
_SECCOMP = ctypes.CDLL(_SECCOMP_PATH, use_errno=True) if _SECCOMP_PATH else None
_ACT_ALLOW = 0x7FFF0000
_CMP_EQ, _CMP_MASKED_EQ = 4, 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]  # fmt: skip


if _SECCOMP is not None:
    _SECCOMP.seccomp_init.restype = ctypes.c_void_p
    _SECCOMP.seccomp_init.argtypes = [ctypes.c_uint32]
    _SECCOMP.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    _SECCOMP.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    _SECCOMP.seccomp_load.argtypes = [ctypes.c_void_p]
    _SECCOMP.seccomp_release.argtypes = [ctypes.c_void_p]
    _SECCOMP.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]

# Allowed as they are: memory, threads' synchronisation, time, signals to itself, reads and metadata,
# and I/O on descriptors the worker already holds (its socket to the pool, stderr, files opened read-only).
ALLOWED_SYSCALLS = (
    "read", "readv", "pread64", "write", "writev", "close", "close_range", "lseek", "fstat", "newfstatat",
    "stat", "lstat", "statx", "fstatfs", "statfs", "access", "faccessat", "faccessat2", "getcwd", "readlink",
    "readlinkat", "getdents64", "fcntl", "dup", "dup2", "dup3", "fadvise64",
    "mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "mincore", "get_mempolicy",
    "futex", "futex_waitv", "set_robust_list", "get_robust_list", "rseq", "sched_yield", "sched_getaffinity",
    "sched_getparam", "sched_getscheduler", "getcpu",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "getpid", "gettid", "getppid", "getpgid", "getpgrp", "getsid", "getuid", "geteuid", "getgid", "getegid",
    "getgroups", "getresuid", "getresgid", "getrandom", "getrusage", "getrlimit", "uname", "sysinfo",
    "poll", "ppoll", "select", "pselect6", "recvfrom", "recvmsg", "sendto", "sendmsg", "shutdown",
    "getsockopt", "setsockopt", "getsockname", "getpeername",
    "exit", "exit_group",
)  # fmt: skip
# Answered ENOSYS, so that the C library falls back to an allowed, checkable call (clone3 -> clone).
ENOSYS_SYSCALLS = ("clone3", "membarrier")
CLONE_THREAD = 0x00010000
# O_TMPFILE includes O_DIRECTORY's bit: take only its own, or every directory listing would be refused.
_O_WRITE_FLAGS = (
    os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | (getattr(os, "O_TMPFILE", 0) & ~os.O_DIRECTORY)
)
_PR_SET_NAME, _PR_GET_NAME, _PR_GET_SECCOMP, _PR_GET_NO_NEW_PRIVS = 15, 16, 21, 39
_TCGETS, _FIONREAD, _FIONBIO, _FIOCLEX = 0x5401, 0x541B, 0x5421, 0x5451


def seccomp_available() -> bool:
    return _SECCOMP is not None


def compile_seccomp() -> bytes | None:
    """The worker's deny-by-default filter as a BPF program (None if libseccomp is missing).

    Compiled once, in the zygote (libseccomp takes ~1.5 ms); each worker then loads it with one ``prctl``.
    """
    if _SECCOMP is None:
        return None
    lib = _SECCOMP
    ctx = lib.seccomp_init(_act_errno(errno.EPERM))
    if not ctx:
        return None
    try:

        def rule(action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
            nr = int(lib.seccomp_syscall_resolve_name(name.encode()))
            if nr < 0:  # not a system call on this architecture
                return
            array = (_ArgCmp * max(1, len(cmps)))(*(_ArgCmp(*c) for c in cmps))
            if lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array) != 0:
                raise OSError(f"seccomp rule for {name} refused")

        for name in ALLOWED_SYSCALLS:
            rule(_ACT_ALLOW, name)
        for name in ENOSYS_SYSCALLS:
            rule(_act_errno(errno.ENOSYS), name)
        rule(_ACT_ALLOW, "clone", (0, _CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD))  # threads, never processes
        rule(_ACT_ALLOW, "openat", (2, _CMP_MASKED_EQ, _O_WRITE_FLAGS, 0))  # read-only opens
        rule(_ACT_ALLOW, "open", (1, _CMP_MASKED_EQ, _O_WRITE_FLAGS, 0))
        rule(_ACT_ALLOW, "prlimit64", (2, _CMP_EQ, 0, 0))  # read limits, never raise them
        for option in (_PR_SET_NAME, _PR_GET_NAME, _PR_GET_SECCOMP, _PR_GET_NO_NEW_PRIVS):  # names, queries
            rule(_ACT_ALLOW, "prctl", (0, _CMP_EQ, option, 0))
        for request in (_TCGETS, _FIONREAD, _FIONBIO, _FIOCLEX):
            rule(_ACT_ALLOW, "ioctl", (1, _CMP_EQ, request, 0))
        # No kill/tgkill at all, not even to itself: the program must not depend on the worker's pid.
        read_fd, write_fd = os.pipe()
        try:
            if lib.seccomp_export_bpf(ctx, write_fd) != 0:
                return None
            os.close(write_fd)
            write_fd = -1
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
    finally:
        lib.seccomp_release(ctx)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
# Built in the zygote and inherited: a forked worker then spends one system call (~15 us) on its filter.
_PREPARED: tuple[ctypes.Array[ctypes.c_char], _SockFprog] | None = None


def _fprog(program: bytes) -> tuple[ctypes.Array[ctypes.c_char], _SockFprog]:
    buffer = ctypes.create_string_buffer(program, len(program))
    return buffer, _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))


def prepare_seccomp() -> bool:
    """Compile the filter now (in the zygote), so forked workers only load it."""
    global _PREPARED
    program = compile_seccomp()
    _PREPARED = _fprog(program) if program else None
    return _PREPARED is not None


def install_seccomp() -> bool:
    """Install the worker's deny-by-default filter (irrevocable; needs no_new_privs); False if unavailable."""
    prepared = _PREPARED
    if prepared is None:
        program = compile_seccomp()
        if not program:
            return False
        prepared = _fprog(program)
    result = _LIBC.prctl(
        ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(prepared[1]),
        ctypes.c_ulong(0), ctypes.c_ulong(0),
    )  # fmt: skip
    return int(result) == 0


def available_layers() -> dict[str, bool]:
    """Which kernel layers this host can provide (not whether they are in use)."""
    return {"seccomp": seccomp_available(), "landlock": landlock_abi() >= 1}
