"""Publishing a job's end at its release boundary, from a timer thread, so that waiting holds no job slot.

With timing protection on (README "Timing"), a job may end (its result, or a refusal that depends on data) only
at its boundary: once the admitted worst cases of its releases have passed, on the release quantum's grid. The
job thread used to sleep until then holding a code-phase slot, so throughput was bounded by slots / quantum
with the processors idle. Now the job thread prepares everything that does not show (the stored outputs, their
hash, the audit summary), hands the job's *ending* over to the ``Publisher`` and gives its slot back; the
publisher's timer thread hands the ending at the boundary, never before it, to one of a few recording threads.
Until then nothing of the end exists outside this process's memory: the job is RUNNING in the store, no audit
record, no stream update. A crash in between loses nothing that was acknowledged (start-up recovery marks the
RUNNING job interrupted, as for any crash mid-job). A cancel (or shutdown) while a job waits ends it at once as
cancelled, never early with its result.

Pending endings hold their results in memory, so they are bounded: at most ``per_owner`` jobs of one owner and
``max_bytes`` of results in all. A job that does not fit waits in its own thread, holding its slot as before (its
owner's other jobs then wait their turn), until it fits or its boundary has come, when it ends there itself.
"""

from __future__ import annotations

import collections
import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Ending", "Publisher"]

_log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05  # how soon a job waiting for room in the publisher sees its cancel


@dataclass(order=True)
class Ending:
    """One job's end, due at ``due`` (``time.monotonic``): ``publish`` unless ``cancel`` is set by then, else
    ``cancelled`` (which also runs, at once, for a cancel that comes while the ending waits)."""

    due: float
    seq: int
    owner: str = field(compare=False)
    size: int = field(compare=False)
    cancel: threading.Event = field(compare=False)
    publish: Callable[[], None] = field(compare=False)
    cancelled: Callable[[], None] = field(compare=False)

    def run(self) -> None:
        """Publish, or end as cancelled; never raises (a job that cannot be recorded is recovered at start-up)."""
        try:
            if self.cancel.is_set():
                self.cancelled()
            else:
                self.publish()
        except Exception:
            _log.exception("a job's end could not be recorded; it is recovered at the next start")


class Publisher:
    """Runs each job's ``Ending`` at its due time (a timer thread hands it to a few recording threads); bounded
    per owner and in result bytes."""

    def __init__(self, per_owner: int = 16, max_bytes: int = 512 * 2**20, recorders: int = 8) -> None:
        self._per_owner = per_owner
        self._max_bytes = max_bytes
        self._changed = threading.Condition()
        self._heap: list[Ending] = []
        self._pending: collections.Counter[str] = collections.Counter()
        self._bytes = 0
        self._seq = itertools.count()
        self._closed = False
        # Recording an end (SQLite, the audit log's fsync) takes milliseconds, more on a loaded machine: endings
        # due together are recorded side by side, so that one's recording does not delay the next one's.
        self._recorders = concurrent.futures.ThreadPoolExecutor(recorders, thread_name_prefix="job-publish")
        self._thread = threading.Thread(target=self._loop, name="job-publisher", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Endings waiting for their boundary."""
        with self._changed:
            return len(self._heap)

    def hand_over(
        self,
        due: float,
        owner: str,
        size: int,
        cancel: threading.Event,
        publish: Callable[[], None],
        cancelled: Callable[[], None],
    ) -> None:
        """Run ``publish`` at ``due`` (or ``cancelled``); returns at once when there is room for it, otherwise
        waits in the caller's thread until there is, or runs the ending here at ``due`` or on a cancel."""
        with self._changed:
            while not self._closed and not self._fits(owner, size):
                now = time.monotonic()
                if cancel.is_set() or now >= due:
                    break
                self._changed.wait(min(_POLL_SECONDS, due - now))
            else:
                if not self._closed:
                    ending = Ending(due, next(self._seq), owner, size, cancel, publish, cancelled)
                    heapq.heappush(self._heap, ending)
                    self._pending[owner] += 1
                    self._bytes += size
                    self._changed.notify_all()
                    return
        # No room (or shutting down): end it in this thread, at its boundary, as the job thread always did.
        remaining = due - time.monotonic()
        if not self._closed and remaining > 0:
            cancel.wait(remaining)
        Ending(due, -1, owner, size, cancel, publish, cancelled).run()

    def wake(self) -> None:
        """A cancel was set: end the cancelled endings now."""
        with self._changed:
            self._changed.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Stop (idempotent): endings still waiting run at once, as cancelled if their cancel is set (the job
        service sets every cancel before it closes the publisher)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.error("the job publisher did not stop within %.0f s of the shutdown; leaving it", timeout)

    def _fits(self, owner: str, size: int) -> bool:
        if self._pending[owner] >= self._per_owner:
            return False
        return not self._heap or self._bytes + size <= self._max_bytes

    def _take(self) -> list[Ending]:
        """Wait (lock held) until some endings are due, cancelled, or the publisher closes; remove and return them."""
        while True:
            now = time.monotonic()
            ready = [e for e in self._heap if self._closed or e.due <= now or e.cancel.is_set()]
            if ready:
                taken = {id(e) for e in ready}
                self._heap = [e for e in self._heap if id(e) not in taken]
                heapq.heapify(self._heap)
                for e in ready:
                    self._pending[e.owner] -= 1
                    if self._pending[e.owner] <= 0:
                        del self._pending[e.owner]
                    self._bytes -= e.size
                ready.sort()
                self._changed.notify_all()  # room for job threads waiting to hand over
                return ready
            if self._closed:
                return []
            self._changed.wait(self._heap[0].due - now if self._heap else None)

    def _loop(self) -> None:
        while True:
            with self._changed:
                ready = self._take()
                closed = self._closed and not self._heap
            for ending in ready:
                self._recorders.submit(ending.run)
            if closed and not ready:
                self._recorders.shutdown(wait=True)
                return
