"""The start-up self-test: before a server serves, one task of each kind runs in a real confined worker.

A worker drops privileges and is confined before its task runs, so whatever the zygote failed to import or
prepare (a module loaded lazily from an interpreter the worker may not read, a kernel layer this host refuses)
shows up as a failed task. Better at start-up, with the reason, than in the first researcher's job as "the
worker was killed". Each pool's owner says what one task of each kind is asked and what its answer must hold
(``Probe``); ``run_self_test`` runs them in order and raises ``SelfTestFailed`` on the first that fails.

One task is the server's own and not a job's: ``readable`` reports which of the server's private files (its
database, its TLS and audit keys, the CA key) a confined worker can open. Landlock or the drop to uid 65534 is
what keeps workers out of them (RestrictedPython alone has no ``open``); the owner of each pool refuses to serve
when either lets a worker read them, unless the operator has said otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from saferoom.errors import InvalidRequest, SaferoomError, Unavailable
from saferoom.sandbox.pool import Reply, WorkerPool

__all__ = ["PROBE_PACKAGE", "READABLE_TASK", "Probe", "SelfTestFailed", "readable", "run_self_test"]

READABLE_TASK = "saferoom.sandbox.selftest:readable"

# A package the sandbox's tasks compile and run: it builds one plan over ``dataset`` (never executed here) and
# uses what algorithm code commonly does (a non-ASCII identifier, a comprehension, print).
PROBE_PACKAGE = {
    "main.py": (
        "def run(ctx, dataset):\n"
        "    t\u00e4ble = ctx.table(dataset)\n"
        "    names = [c for c in t\u00e4ble.columns]\n"
        "    print('columns', len(names))\n"
        "    return {'rows': t\u00e4ble.agg(n=count()), 'columns': len(names)}\n"
    ),
}


class SelfTestFailed(Unavailable):
    """A task of the start-up self-test failed: the server must not serve."""


@dataclass(frozen=True)
class Probe:
    """One task of a pool, what it is sent, and a check of its answer (None if good, else what is wrong)."""

    task: str
    request: dict[str, Any]
    check: Callable[[Reply], str | None]
    blobs: tuple[bytes, ...] = field(default=())


def run_self_test(pool: WorkerPool, probes: Sequence[Probe]) -> float:
    """Run every probe in a fresh confined worker of ``pool``; returns the seconds it took.

    Raises ``SelfTestFailed`` naming the pool, the task and what went wrong.
    """
    started = time.monotonic()
    for probe in probes:
        try:
            reply = pool.run(probe.task, probe.request, probe.blobs)
            problem = probe.check(reply)
        except SaferoomError as exc:
            problem = f"{exc.code}: {exc.message}"
        if problem is not None:
            raise SelfTestFailed(
                f"start-up self-test failed: the {pool.name} pool's task {probe.task} in a confined worker: {problem}"
            )
    return time.monotonic() - started


def readable(state: Any, request: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """Which of ``request["paths"]`` this confined worker can open for reading (a start-up probe, never a job's)."""
    paths = request.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise InvalidRequest("readable: paths must be a list of strings")
    found = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        os.close(fd)
        found.append(path)
    return {"readable": found}, []
