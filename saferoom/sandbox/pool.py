"""A pool of fresh worker processes, each forked from a warm zygote for exactly one task.

The server never forks itself (it holds keys, sockets and database handles): it starts a zygote as a clean
interpreter and asks it for a child per task, passing the child one end of a new socketpair. The parent alone
enforces the wall-clock limit and cancellation, by killing the child's process group.

Forking and confining a worker costs milliseconds (more for a zygote with large datasets mapped), so the pool keeps
one **spare**: a worker forked and confined in advance, by a background thread, then warmed up (the pool's
``warm`` function, run confined on constants, so that the copy-on-write faults a fresh process takes on its first
touches of the zygote's memory are paid off the task's path) and blocked reading its task frame. The warm-up
costs processor time of its own (about a millisecond beyond the faults it moves), which pays while the pool runs
one task at a time: a spare taken while another task of the pool is running means tasks overlap, and the next
spare is not warmed (the processors are the limit then, not the wait). A task takes
the spare if there is one (a fresh process all the same: it has run nothing of anybody's, only the warm-up, and
was forked from the same unchanging zygote) and a new spare is forked behind it, off the task's path: once
that task has ended, or ``_SPARE_DEFER`` after it started if it runs longer. A short task (a trivial job's are a
millisecond or two) then runs without the next spare's fork and warm-up (about 10 ms of processor time, measured)
competing with it for the processors, and a long one still finds its successor ready when it ends. A spare
that died (its zygote was replaced) is noticed when its task cannot be sent, and the task goes to a freshly forked
worker instead.

A zygote answers each control request within ``answer_seconds`` (a fork takes milliseconds) or is taken for
hung (stopped, wedged, swapped out for good): it is killed and a fresh one started in its place, so a job never
waits on it forever. A cancel is seen while waiting for the zygote too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from saferoom.errors import (
    JobCancelled,
    JobTimeout,
    LimitExceeded,
    SaferoomError,
    Unavailable,
    WorkerCrashed,
    error_from_code,
)
from saferoom.sandbox.limits import Limits
from saferoom.sandbox.protocol import FrameError, FrameTooLarge, recv_frame, send_frame
from saferoom.sandbox.zygote import WARM_READY, control_recv, control_send

__all__ = ["Reply", "WorkerPool"]

_log = logging.getLogger(__name__)
_POLL_SECONDS = 0.05
_SPARE_DEFER = 0.02  # how long the next spare waits for the task that took the last one (module docstring)
_STARTUP_SECONDS = 120.0
_ANSWER_SECONDS = 5.0  # longer than the zygote's own wait for a worker's exit status (2 s)


class Reply(NamedTuple):
    """A worker's answer: JSON data and raw blobs (e.g. Arrow IPC streams)."""

    data: dict[str, Any]
    blobs: list[bytes]


def _clean_environment() -> dict[str, str]:
    """The zygote's environment: enough to start Python, nothing else (no secrets, no tokens)."""
    source_root = str(Path(__file__).resolve().parent.parent.parent)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONPATH": source_root}
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONDONTWRITEBYTECODE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


class _Zygote:
    def __init__(
        self,
        initializer: str,
        init_args: dict[str, Any],
        tasks: Sequence[str],
        network_namespace: bool,
        warm: str | None = None,
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        self.process = subprocess.Popen(
            [sys.executable, "-m", "saferoom.sandbox", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            close_fds=True,
            env=_clean_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        control_send(
            ours,
            {"initializer": initializer, "init_args": init_args, "tasks": list(tasks),
             "network_namespace": network_namespace, "warm": warm},
        )  # fmt: skip
        ours.settimeout(_STARTUP_SECONDS)
        try:
            reply, _ = control_recv(ours)
        except (OSError, ValueError) as exc:
            self.close()
            raise Unavailable("the worker pool could not start") from exc
        ours.settimeout(None)
        if not reply.get("ready"):
            self.close()
            raise Unavailable(f"the worker pool could not start: {reply.get('error', 'no answer')}")
        self.layers: dict[str, bool] = {str(k): bool(v) for k, v in dict(reply.get("layers", {})).items()}

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.control.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


class _Worker(NamedTuple):
    """A forked worker and the pool's end of its socket."""

    sock: socket.socket
    pid: int
    limits: Limits
    zygote: _Zygote | None


class WorkerPool:
    """Runs allow-listed task functions in fresh confined processes forked from a warm zygote."""

    def __init__(
        self,
        *,
        name: str,
        initializer: str,
        init_args: dict[str, Any],
        tasks: Sequence[str],
        limits: Limits | None = None,
        network_namespace: bool = True,
        answer_seconds: float = _ANSWER_SECONDS,
        spare: bool = True,
        warm: str | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or Limits()
        self._answer_seconds = answer_seconds
        self.replaced = 0  # zygotes found dead or hung and started again
        # ``warm``: "module:function" the spare runs, confined, before its task (None: no warm-up)
        self._spec = (initializer, dict(init_args), tuple(tasks), network_namespace, warm)
        self._lock = threading.Lock()
        self._closed = False
        self._zygote: _Zygote | None = _Zygote(*self._spec)
        self._spare: _Worker | None = None
        self._running = 0  # tasks of this pool running now (guarded by ``_wanted``)
        self._taken_at = 0.0  # when the last spare was taken (monotonic; guarded by ``_wanted``)
        self._warm_next = warm is not None  # whether the next spare is warmed (False while tasks overlap)
        self._wanted = threading.Condition()  # a spare is wanted, or the pool closed
        self._spares = threading.Thread(target=self._keep_spare, name=f"{name}-spare", daemon=True) if spare else None
        if self._spares is not None:
            self._spares.start()

    @property
    def layers(self) -> dict[str, bool]:
        """The kernel layers this host provides to the pool's workers (and whether each is switched on)."""
        zygote = self._zygote
        found = dict(zygote.layers) if zygote is not None else {}
        found["seccomp"] = found.get("seccomp", False) and self.limits.seccomp
        found["landlock"] = found.get("landlock", False) and self.limits.landlock
        return found

    @property
    def zygote_pid(self) -> int | None:
        """The zygote's process id (its children are the workers)."""
        zygote = self._zygote
        return None if zygote is None else zygote.process.pid

    @property
    def spare_pid(self) -> int | None:
        """The process id of the spare worker, forked and waiting for a task (None while there is none)."""
        spare = self._spare
        return None if spare is None else spare.pid

    def _control(
        self, message: dict[str, Any], fds: list[int] | None = None, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """One request/response with the zygote. A dead or hung zygote (no answer within ``answer_seconds``) is
        killed; for fork requests a fresh one is started and asked once more (its workers died with the old
        one, so for other requests there is nothing left to ask about)."""
        while not self._lock.acquire(timeout=_POLL_SECONDS):
            if cancel is not None and cancel.is_set():
                raise JobCancelled("the job was cancelled")
        try:
            if self._closed:
                raise Unavailable(f"the {self.name} pool is closed")
            for _ in range(2):
                if self._zygote is None or not self._zygote.alive():
                    if message.get("op") != "fork":
                        return {}
                    if self._zygote is not None:
                        self._zygote.close()
                        self.replaced += 1
                    self._zygote = _Zygote(*self._spec)
                try:
                    self._zygote.control.settimeout(self._answer_seconds)
                    control_send(self._zygote.control, message, fds)
                    reply, _ = control_recv(self._zygote.control)
                    if reply:
                        return reply
                except (OSError, ValueError):  # TimeoutError among them: a hung zygote
                    pass
                _log.warning("the %s zygote did not answer: replacing it", self.name)
                self._zygote.close()
                self._zygote = None
                self.replaced += 1
                if cancel is not None and cancel.is_set():
                    raise JobCancelled("the job was cancelled")
            raise Unavailable(f"the {self.name} worker pool is not answering")
        finally:
            self._lock.release()

    def run(
        self,
        task: str,
        request: dict[str, Any],
        blobs: Sequence[bytes] = (),
        *,
        limits: Limits | None = None,
        cancel: threading.Event | None = None,
    ) -> Reply:
        """Run ``task`` in a fresh worker; raises the task's SaferoomError, or a limit/crash error."""
        with self._wanted:
            self._running += 1
        try:
            return self._run(task, request, blobs, limits or self.limits, cancel)
        finally:
            with self._wanted:
                self._running -= 1
                self._wanted.notify_all()  # a spare deferred for this task is forked now

    def _run(
        self,
        task: str,
        request: dict[str, Any],
        blobs: Sequence[bytes],
        limits: Limits,
        cancel: threading.Event | None,
    ) -> Reply:
        worker = self._take_spare(limits)
        if worker is not None:
            try:
                send_frame(worker.sock, {"task": task, "request": request}, list(blobs))
            except OSError:  # the spare died before it was given anything (its zygote was replaced)
                worker.sock.close()
                self._kill(worker.pid)
                worker = None
            else:
                # The next spare only now: forking it while this thread still had the task to send made the send
                # wait for the interpreter lock behind the spare thread's own Python.
                self._want_spare()
                try:
                    return self._talk(worker.sock, worker.pid, None, limits, cancel)
                finally:
                    worker.sock.close()
        self._want_spare()
        worker = self._fork(limits, cancel)
        try:
            return self._talk(worker.sock, worker.pid, (task, request, list(blobs)), limits, cancel)
        finally:
            worker.sock.close()

    def _fork(self, limits: Limits, cancel: threading.Event | None = None, warm: bool = False) -> _Worker:
        """A new worker, confined with ``limits`` (and warmed up, if ``warm``) and waiting for its task."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                request = {"op": "fork", "limits": asdict(limits), "warm": warm}
                reply = self._control(request, [theirs.fileno()], cancel)
            finally:
                theirs.close()
            pid = reply.get("pid")
            if not isinstance(pid, int) or pid <= 0:
                raise Unavailable(f"the {self.name} worker pool could not start a worker")
        except BaseException:
            ours.close()
            raise
        return _Worker(ours, pid, limits, self._zygote)

    def _want_spare(self) -> None:
        """Wake the spare thread: the spare was taken (it forks the next one)."""
        if self._spares is not None:
            with self._wanted:
                self._wanted.notify_all()

    def _take_spare(self, limits: Limits) -> _Worker | None:
        """The spare worker if it has ``limits`` and its zygote is still the pool's (the caller then asks for the
        next one: ``_want_spare``)."""
        if self._spares is None:
            return None
        with self._wanted:
            spare, self._spare = self._spare, None
            if spare is not None:
                self._warm_next = self._spec[4] is not None and self._running <= 1  # this task alone: warm
                self._taken_at = time.monotonic()
        if spare is None:
            return None
        zygote = spare.zygote
        if spare.limits != limits or zygote is not self._zygote or zygote is None or not zygote.alive():
            spare.sock.close()
            self._kill(spare.pid)
            return None
        return spare

    def discard_spare(self) -> None:
        """Kill the spare worker (a fresh one is forked behind it): for operators' tools and tests that need the
        next task to fork from the zygote as it is now."""
        with self._wanted:
            spare, self._spare = self._spare, None
            self._wanted.notify_all()
        if spare is not None:
            spare.sock.close()
            self._kill(spare.pid)

    def _warmed(self, worker: _Worker) -> bool:
        """Wait for a spare's ``WARM_READY``: offered while still warming up, it would make its task wait."""
        try:
            worker.sock.settimeout(_STARTUP_SECONDS)
            ready = worker.sock.recv(1) == WARM_READY
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                worker.sock.settimeout(None)
        return ready

    def _keep_spare(self) -> None:
        """Background: keep one spare worker forked and confined, until the pool closes."""
        delay = _POLL_SECONDS
        while True:
            with self._wanted:
                while not self._closed:
                    if self._spare is not None:
                        self._wanted.wait()
                    elif (deferred := self._deferred()) > 0:
                        self._wanted.wait(deferred)
                    else:
                        break
                if self._closed:
                    return
            warm = self._warm_next
            try:
                worker = self._fork(self.limits, warm=warm)
            except SaferoomError:  # the pool is closed, or the zygote is not answering: try again later
                if self._closed:
                    return
                time.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            delay = _POLL_SECONDS
            if warm and not self._warmed(worker):  # died warming up (its zygote replaced, the pool closed)
                worker.sock.close()
                self._kill(worker.pid)
                continue
            with self._wanted:
                if self._closed or self._spare is not None:
                    worker.sock.close()
                    self._kill(worker.pid)
                    if self._closed:
                        return
                else:
                    self._spare = worker

    def _deferred(self) -> float:
        """Seconds the next spare still waits for the task that took the last one (called with ``_wanted``)."""
        if self._running == 0:
            return 0.0
        return self._taken_at + _SPARE_DEFER - time.monotonic()

    def _talk(
        self,
        sock: socket.socket,
        pid: int,
        task: tuple[str, dict[str, Any], list[bytes]] | None,
        limits: Limits,
        cancel: threading.Event | None,
    ) -> Reply:
        """Send ``task`` (None: already sent) and wait for the reply, within the wall-clock limit."""
        deadline = time.monotonic() + limits.wall_seconds
        try:
            if task is not None:
                name, request, blobs = task
                send_frame(sock, {"task": name, "request": request}, blobs)
            while True:
                ready, _, _ = select.select([sock], [], [], _POLL_SECONDS)
                if ready:
                    break
                if cancel is not None and cancel.is_set():
                    self._kill(pid)
                    raise JobCancelled("the job was cancelled")
                if time.monotonic() > deadline:
                    self._kill(pid)
                    raise JobTimeout(f"the job exceeded the wall-clock limit of {limits.wall_seconds:g} s")
            header, out = recv_frame(sock, limits.output_bytes + 1024 * 1024, deadline)
        except TimeoutError:
            self._kill(pid)
            raise JobTimeout(f"the job exceeded the wall-clock limit of {limits.wall_seconds:g} s") from None
        except FrameTooLarge:
            self._kill(pid)
            raise LimitExceeded(f"output larger than {limits.output_bytes // 2**20} MiB") from None
        except (FrameError, OSError) as exc:
            # How it died first: a SIGKILL of ours sent while it was still exiting would hide the real cause
            # (and be reported as "may have run out of memory").
            death = self._death(pid, limits)
            self._kill(pid)
            raise death from exc
        self._kill(pid)  # no worker outlives its task, whatever it does after replying
        if "ok" in header and isinstance(header["ok"], dict):
            return Reply(header["ok"], out)
        error = header.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str):
            raise error_from_code(error["code"], error["message"][:4000])
        raise WorkerCrashed("the worker sent a malformed reply")

    def _kill(self, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _reap(self, pid: int) -> int | None:
        try:
            status = self._control({"op": "status", "pid": pid}).get("status")
        except SaferoomError:
            return None
        return status if isinstance(status, int) else None

    def _death(self, pid: int, limits: Limits) -> SaferoomError:
        """Why a worker died without replying."""
        status = self._reap(pid)
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return LimitExceeded(f"CPU time limit of {limits.cpu_seconds} s exceeded")
            if sig == signal.SIGXFSZ:
                return WorkerCrashed("the worker was killed (SIGXFSZ): it tried to write a file")
            if sig == signal.SIGSYS:
                return WorkerCrashed("the worker was killed (SIGSYS): it made a system call the sandbox forbids")
            if sig == signal.SIGKILL:
                return WorkerCrashed("the worker was killed (signal 9): it may have run out of memory or CPU time")
            return WorkerCrashed(f"the worker died: killed by signal {sig}")
        if status is not None and os.WIFEXITED(status):
            return WorkerCrashed(f"the worker died: exit code {os.WEXITSTATUS(status)}")
        return WorkerCrashed("the worker died without answering")

    def close(self) -> None:
        """Stop the zygote; running workers (and the spare) die with it (idempotent)."""
        with self._wanted:
            already = self._closed
            self._closed = True
            spare, self._spare = self._spare, None
            self._wanted.notify_all()
        if spare is not None:
            spare.sock.close()
            self._kill(spare.pid)
        if already:
            return
        with self._lock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None
        if self._spares is not None and self._spares is not threading.current_thread():
            self._spares.join(10)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
