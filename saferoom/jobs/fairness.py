"""Fair shares of the job slots: who runs next when a slot frees.

Two rules, in order:

1. **A fair share of the slots.** While others wait, nobody runs more than ceil(slots / owners with waiting or
   running jobs), at least one. Alone, an owner may use every slot up to ``cap``: the job service caps each
   owner's code phases at the engine's slots (more would only wait for the engine), so that a few identities
   flooding an idle server leave code slots free for whoever comes next.
2. **Least recent use first.** Among the owners within their share, the one whose jobs held slots for the
   fewest seconds lately (slot-seconds, halved every ``half_life`` seconds; running jobs count as they go)
   runs next; ties go to whoever has waited longest for a turn. Counting starts alone would let a researcher
   whose jobs run into the code phase's limits hold the slots nine times out of ten against researchers with
   short jobs; counting time, their long jobs put them behind everybody whose jobs are short.

There is no preemption: slots taken while nobody else waited are given back as those jobs end (which the code
phase's own tight limits bound). ``FairSlots`` is not thread-safe on its own (the job service calls it under its
lock); ``EngineSlots`` is, and applies the same rules to the engine's slots, which a job's code phase does not
hold.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Sequence

from saferoom.errors import JobCancelled

__all__ = ["EngineSlots", "FairSlots"]

_POLL_SECONDS = 0.05  # how soon a waiting job sees its cancel


class FairSlots:
    """The bookkeeping behind the two rules: jobs running per owner and each owner's recent slot-seconds."""

    def __init__(
        self,
        slots: int,
        cap: int | None = None,
        half_life: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = slots
        self.cap = slots if cap is None else cap  # the most one owner may ever hold, even alone
        self._half_life = half_life
        self._clock = clock
        self._running: collections.Counter[str] = collections.Counter()
        self._since: dict[str, list[float]] = {}  # owner -> start times of its running jobs
        self._used: dict[str, tuple[float, float]] = {}  # owner -> (slot-seconds, when last brought up to date)

    def running(self, owner: str) -> int:
        return self._running[owner]

    @property
    def busy(self) -> int:
        """Slots in use."""
        return sum(self._running.values())

    def share(self, waiting: Sequence[str]) -> int:
        """How many slots one owner may hold while the ``waiting`` owners wait."""
        owners = len(set(waiting) | set(self._running))
        return max(1, math.ceil(self.slots / max(1, owners)))

    def usage(self, owner: str) -> float:
        """The owner's recent slot-seconds, decayed, including its jobs still running."""
        now = self._clock()
        used, at = self._used.get(owner, (0.0, now))
        return self._decayed(used, now - at) + sum(now - t for t in self._since.get(owner, ()))

    def choose(self, turns: Sequence[str]) -> str | None:
        """The owner whose job runs next, of the waiting ``turns`` (in turn order), or None if every one of them
        holds ``cap`` slots already."""
        share = self.share(turns)
        allowed = [o for o in turns if self._running[o] < self.cap]
        within = [o for o in allowed if self._running[o] < share] or allowed
        return min(within, key=self.usage, default=None)  # min keeps the first of equals: turn order breaks ties

    def start(self, owner: str) -> None:
        self._running[owner] += 1
        self._since.setdefault(owner, []).append(self._clock())

    def end(self, owner: str) -> None:
        """One of ``owner``'s jobs gave its slot back: its seconds join the owner's usage."""
        now = self._clock()
        started = self._since[owner].pop(0)
        used, at = self._used.get(owner, (0.0, now))
        self._used[owner] = (self._decayed(used, now - at) + now - started, now)
        self._running[owner] -= 1
        if self._running[owner] <= 0:
            del self._running[owner]
            del self._since[owner]
        self._forget_idle(now)

    def _decayed(self, value: float, elapsed: float) -> float:
        return float(value * 0.5 ** (max(0.0, elapsed) / self._half_life))

    def _forget_idle(self, now: float) -> None:
        """Drop owners whose usage has decayed to nothing, so that the table stays small."""
        for owner, (used, at) in list(self._used.items()):
            if owner not in self._running and self._decayed(used, now - at) < 0.01:
                del self._used[owner]


class EngineSlots:
    """The engine's slots, shared by the same two rules among the jobs whose code phase has ended.

    A job's code phase (the sandbox worker, niced, only building plans) does not hold one of these: code that
    spins until its CPU limit then keeps no engine slot from anybody. Thread-safe.
    """

    def __init__(self, slots: int) -> None:
        self._fair = FairSlots(slots)
        self._changed = threading.Condition()
        self._waiting: list[tuple[str, object]] = []  # (owner, ticket), in the order they asked

    def acquire(self, owner: str, cancel: threading.Event) -> None:
        """Wait for an engine slot for one of ``owner``'s jobs; raises ``JobCancelled`` if ``cancel`` is set."""
        ticket = object()
        with self._changed:
            self._waiting.append((owner, ticket))
            try:
                while True:
                    if cancel.is_set():
                        raise JobCancelled("the job was cancelled")
                    chosen = self._fair.choose([o for o, _ in self._waiting])
                    first = next((t for o, t in self._waiting if o == chosen), None)
                    if self._fair.busy < self._fair.slots and first is ticket:
                        self._fair.start(owner)
                        return
                    self._changed.wait(_POLL_SECONDS)
            finally:
                self._waiting.remove((owner, ticket))
                self._changed.notify_all()

    @property
    def busy(self) -> int:
        """Engine slots in use."""
        with self._changed:
            return self._fair.busy

    def release(self, owner: str) -> None:
        with self._changed:
            self._fair.end(owner)
            self._changed.notify_all()
