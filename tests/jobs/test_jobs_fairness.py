"""The fair-share rules of the job slots (``saferoom.jobs.fairness``), on a clock the test moves."""

from __future__ import annotations

import threading
import time

import pytest

from saferoom.errors import JobCancelled
from saferoom.jobs.fairness import EngineSlots, FairSlots


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_share_is_the_slots_divided_among_owners_rounded_up_and_at_least_one() -> None:
    slots = FairSlots(3)
    assert slots.share(["a"]) == 3
    assert slots.share(["a", "b"]) == 2
    assert slots.share(["a", "b", "c", "d", "e"]) == 1
    slots.start("x")  # owners with running jobs count too
    assert slots.share(["a", "b"]) == 1


def test_nobody_over_their_share_runs_while_others_wait_but_a_free_slot_never_idles() -> None:
    slots = FairSlots(3)
    slots.start("hog")
    slots.start("hog")
    assert slots.choose(["hog", "alice"]) == "alice"  # hog holds 2 = ceil(3 / 2)
    assert slots.choose(["hog"]) == "hog"  # alone: all slots


def test_whoever_used_the_slots_least_lately_goes_first() -> None:
    clock = Clock()
    slots = FairSlots(2, clock=clock)
    slots.start("hog")
    clock.now += 10  # a job that ran into the code phase's limits
    slots.end("hog")
    slots.start("alice")
    clock.now += 0.2
    slots.end("alice")
    assert slots.choose(["hog", "alice"]) == "alice"  # though hog is first in turn
    assert slots.usage("hog") == pytest.approx(10 * 0.5 ** (0.2 / 60))
    clock.now += 600  # ten half-lives later both have next to nothing and are forgotten: turn order again
    slots.start("other")
    slots.end("other")
    assert slots.usage("hog") == 0 and slots.usage("alice") == 0
    assert slots.choose(["hog", "alice"]) == "hog"


def test_running_jobs_count_as_they_go() -> None:
    clock = Clock()
    slots = FairSlots(4, clock=clock)
    slots.start("long")
    clock.now += 5
    assert slots.usage("long") == pytest.approx(5)
    assert slots.choose(["long", "new"]) == "new"


def test_the_cap_holds_even_alone() -> None:
    slots = FairSlots(8, cap=2)
    slots.start("hog")
    slots.start("hog")
    assert slots.choose(["hog"]) is None
    assert slots.choose(["hog", "alice"]) == "alice"


def test_engine_slots_are_given_by_the_same_rules_and_a_cancel_ends_the_wait() -> None:
    engine = EngineSlots(1)
    never = threading.Event()
    engine.acquire("hog", never)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        engine.acquire("alice", cancel)
    assert time.monotonic() - started < 2
    got: list[str] = []
    waiter = threading.Thread(target=lambda: (engine.acquire("alice", never), got.append("alice")))
    waiter.start()
    time.sleep(0.1)
    assert got == []  # the only slot is hog's
    engine.release("hog")
    waiter.join(timeout=5)
    assert got == ["alice"]
    engine.release("alice")
