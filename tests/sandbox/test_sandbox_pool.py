"""The worker pool: fresh confined processes, limits enforced, failures isolated."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from saferoom.errors import JobCancelled, JobTimeout, LimitExceeded, UserCodeError, WorkerCrashed
from saferoom.sandbox import Limits, WorkerPool

TASKS = [
    "tests.sandbox_tasks:echo",
    "tests.sandbox_tasks:sleep",
    "tests.sandbox_tasks:allocate",
    "tests.sandbox_tasks:abort",
    "tests.sandbox_tasks:spin",
    "tests.sandbox_tasks:identity",
    "tests.sandbox_tasks:raise_user_error",
    "tests.sandbox_tasks:trickle",
    "tests.sandbox_tasks:warmed",
]


@pytest.fixture(scope="module")
def pool():
    limits = Limits(memory_bytes=256 * 2**20, cpu_seconds=5, wall_seconds=10, output_bytes=2**20)
    with WorkerPool(
        name="test",
        initializer="tests.sandbox_tasks:initialize",
        init_args={"greeting": "hi"},
        tasks=TASKS,
        limits=limits,
    ) as p:
        yield p


def test_echo_round_trip_with_blobs(pool: WorkerPool) -> None:
    reply = pool.run("tests.sandbox_tasks:echo", {"x": [1, "two"]}, [b"abc", b""])
    assert reply.data == {"request": {"x": [1, "two"]}, "state": "hi"}
    assert reply.blobs == [b"cba", b""]


def test_each_task_gets_a_fresh_confined_process(pool: WorkerPool) -> None:
    a = pool.run("tests.sandbox_tasks:identity", {}).data
    b = pool.run("tests.sandbox_tasks:identity", {}).data
    assert a["pid"] != b["pid"] != os.getpid()
    assert a["pgid"] == a["pid"]  # its own process group
    assert a["open_fds"] <= 4  # 0, 1, 2 and its socket
    assert a["fsize_limit"] == 0 and a["core_limit"] == 0
    assert a["no_new_privs"] == 1
    if os.geteuid() == 0:
        assert a["uid"] == 65534


def test_unknown_task_is_refused(pool: WorkerPool) -> None:
    with pytest.raises(WorkerCrashed):
        pool.run("os:system", {})


def test_wall_clock_limit_kills_the_worker(pool: WorkerPool) -> None:
    started = time.monotonic()
    with pytest.raises(JobTimeout, match="wall-clock limit of 1 s"):
        pool.run("tests.sandbox_tasks:sleep", {"seconds": 30}, limits=Limits(wall_seconds=1.0))
    assert time.monotonic() - started < 5


def test_memory_limit(pool: WorkerPool) -> None:
    with pytest.raises(LimitExceeded, match="memory limit of 256 MiB"):
        pool.run("tests.sandbox_tasks:allocate", {"mib": 2048})


def test_cpu_limit(pool: WorkerPool) -> None:
    with pytest.raises(LimitExceeded, match="CPU time limit of 1 s"):
        pool.run("tests.sandbox_tasks:spin", {}, limits=Limits(cpu_seconds=1, wall_seconds=20))


def test_crash_is_reported(pool: WorkerPool) -> None:
    # SIGABRT, or SIGSEGV under seccomp: the filter refuses even tgkill to itself, so abort() falls through.
    with pytest.raises(WorkerCrashed, match=r"signal (6|11)"):
        pool.run("tests.sandbox_tasks:abort", {})


def test_output_limit(pool: WorkerPool) -> None:
    with pytest.raises(LimitExceeded, match="output larger than"):
        pool.run("tests.sandbox_tasks:echo", {}, [b"x" * (3 * 2**20)])


def test_domain_errors_cross_the_pipe(pool: WorkerPool) -> None:
    with pytest.raises(UserCodeError, match="bad input"):
        pool.run("tests.sandbox_tasks:raise_user_error", {"message": "bad input"})


def test_cancel(pool: WorkerPool) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(JobCancelled):
        pool.run("tests.sandbox_tasks:sleep", {"seconds": 30}, cancel=cancel)


def test_hostile_tasks_fail_alone_while_good_ones_succeed(pool: WorkerPool) -> None:
    hostile = [
        ("tests.sandbox_tasks:sleep", {"seconds": 30}, Limits(wall_seconds=1.5)),
        ("tests.sandbox_tasks:allocate", {"mib": 4096}, None),
        ("tests.sandbox_tasks:abort", {}, None),
    ]
    with concurrent.futures.ThreadPoolExecutor(6) as executor:
        bad = [executor.submit(pool.run, t, r, limits=lim) for t, r, lim in hostile]
        good = [executor.submit(pool.run, "tests.sandbox_tasks:echo", {"i": i}) for i in range(6)]
        assert [f.result().data["request"]["i"] for f in good] == list(range(6))
        for future in bad:
            with pytest.raises((JobTimeout, LimitExceeded, WorkerCrashed)):
                future.result()
    assert pool.run("tests.sandbox_tasks:echo", {"after": True}).data["request"] == {"after": True}


def test_pool_survives_its_zygote_dying(pool: WorkerPool) -> None:
    assert pool.zygote_pid is not None
    os.kill(pool.zygote_pid, 9)
    time.sleep(0.2)
    assert pool.run("tests.sandbox_tasks:echo", {"n": 1}).data["request"] == {"n": 1}


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def _running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_workers_die_with_their_zygote() -> None:
    pool = WorkerPool(name="orphans", initializer="tests.sandbox_tasks:initialize", init_args={}, tasks=TASKS)
    zygote = pool.zygote_pid
    assert zygote is not None
    errors: list[BaseException] = []

    def spin() -> None:
        try:
            pool.run("tests.sandbox_tasks:spin", {})
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=spin)
    worker.start()
    deadline = time.monotonic() + 10
    children: list[int] = []
    while not children:  # the spinning task's worker (not the spare, which waits for the next task)
        children = [pid for pid in _children(zygote) if pid != pool.spare_pid]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    children = _children(zygote)  # the spare too: every child of the zygote must die with it
    os.kill(zygote, 9)  # as when the server is killed with -9
    for pid in children:
        while _running(pid):
            assert time.monotonic() < deadline, "an orphaned worker kept running"
            time.sleep(0.02)
    worker.join(timeout=10)
    assert errors  # the job saw its worker die
    pool.close()


def test_a_worker_trickling_its_reply_still_hits_the_wall_clock_limit(pool: WorkerPool) -> None:
    started = time.monotonic()
    with pytest.raises(JobTimeout):
        pool.run("tests.sandbox_tasks:trickle", {}, limits=Limits(wall_seconds=1.0))
    assert time.monotonic() - started < 4


def test_a_stopped_zygote_is_replaced() -> None:
    """A zygote that stops answering (here SIGSTOPped) is killed and replaced; the task runs on the new one."""
    with WorkerPool(
        name="hung", initializer="tests.sandbox_tasks:initialize", init_args={}, tasks=TASKS, answer_seconds=1.0
    ) as pool:
        stopped = pool.zygote_pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        pool.discard_spare()  # forked before the stop, it would run the task without asking the zygote
        started = time.monotonic()
        assert pool.run("tests.sandbox_tasks:echo", {"n": 5}).data["request"] == {"n": 5}
        assert time.monotonic() - started < 30
        assert pool.replaced == 1 and pool.zygote_pid != stopped
        assert not _running(stopped)


def test_cancel_while_waiting_for_a_stopped_zygote() -> None:
    """A cancel is seen while a task waits for the pool (another task is talking to the hung zygote) at once, and
    by the one talking to it once the zygote's answer time is up."""
    answer = 4.0
    with WorkerPool(
        name="hung-cancel",
        initializer="tests.sandbox_tasks:initialize",
        init_args={},
        tasks=TASKS,
        answer_seconds=answer,
    ) as pool:
        assert pool.zygote_pid is not None
        os.kill(pool.zygote_pid, signal.SIGSTOP)
        pool.discard_spare()  # forked before the stop, it would run the task without asking the zygote
        cancel = threading.Event()

        def timed() -> tuple[str, float]:
            try:
                pool.run("tests.sandbox_tasks:echo", {}, cancel=cancel)
                return "ran", time.monotonic()
            except JobCancelled:
                return "cancelled", time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            talking = executor.submit(timed)
            time.sleep(0.3)
            waiting = executor.submit(timed)
            time.sleep(0.3)
            cancelled_at = time.monotonic()
            cancel.set()
            outcome, at = waiting.result(timeout=30)
            assert outcome == "cancelled" and at - cancelled_at < 1.0
            outcome, at = talking.result(timeout=30)
            assert outcome == "cancelled" and at - cancelled_at < answer + 1.0


def _spare(pool: WorkerPool) -> int:
    deadline = time.monotonic() + 20
    while pool.spare_pid is None:
        assert time.monotonic() < deadline, "no spare worker was forked"
        time.sleep(0.01)
    return pool.spare_pid


def test_each_task_gets_a_fresh_confined_process_even_from_the_spare() -> None:
    """The spare, forked and confined ahead, serves exactly one task (a new one is forked behind it), and is as
    confined as a worker forked for the task; a spare that died before its task is replaced unnoticed."""
    with WorkerPool(name="spare", initializer="tests.sandbox_tasks:initialize", init_args={}, tasks=TASKS) as pool:
        spare = _spare(pool)
        first = pool.run("tests.sandbox_tasks:identity", {}).data
        assert first["pid"] == spare and first["pgid"] == spare  # the spare ran it, in its own process group
        assert first["seccomp_mode"] == (2 if pool.layers.get("seccomp") else 0)
        assert first["no_new_privs"] == 1 and first["fsize_limit"] == 0 and first["open_fds"] <= 4
        second_spare = _spare(pool)
        assert second_spare != spare
        deadline = time.monotonic() + 10
        while _running(spare):  # used once, then killed
            assert time.monotonic() < deadline, "the spare outlived its task"
            time.sleep(0.01)
        os.kill(second_spare, signal.SIGKILL)  # the spare dies before it is given anything
        while _running(second_spare):
            time.sleep(0.01)
        again = pool.run("tests.sandbox_tasks:identity", {}).data
        assert again["pid"] not in (spare, second_spare)
        assert {k: v for k, v in again.items() if k not in ("pid", "pgid")} == {
            k: v for k, v in first.items() if k not in ("pid", "pgid")
        }


def test_a_spare_runs_the_warm_up_confined_then_serves_one_task_and_a_cold_worker_runs_none() -> None:
    """The pool's warm-up runs in the spare, after it was confined and before its task arrives (in the same
    process the task then runs in); a worker forked for a task (no spare ready) is not warmed; a warm-up that
    fails leaves a worker that serves its task all the same."""
    warm = "tests.sandbox_tasks:warm_up"
    with WorkerPool(name="warm", initializer="tests.sandbox_tasks:initialize", init_args={}, tasks=TASKS,
                    warm=warm) as pool:  # fmt: skip
        spare = _spare(pool)
        reply = pool.run("tests.sandbox_tasks:warmed", {}).data
        assert reply["pid"] == spare and reply["warmed"]["pid"] == spare
        assert reply["warmed"]["no_new_privs"] == 1 and reply["warmed"]["fsize_limit"] == 0
        assert reply["warmed"]["seccomp_mode"] == (2 if pool.layers.get("seccomp") else 0)
        assert reply["warmed"]["open_fds"] <= 4
        if os.geteuid() == 0:
            assert reply["warmed"]["uid"] == 65534  # already unprivileged when the warm-up ran
    with WorkerPool(name="cold", initializer="tests.sandbox_tasks:initialize", init_args={}, tasks=TASKS,
                    warm=warm, spare=False) as pool:  # fmt: skip
        assert pool.run("tests.sandbox_tasks:warmed", {}).data["warmed"] == {}
    with WorkerPool(name="failing", initializer="tests.sandbox_tasks:initialize", init_args={}, tasks=TASKS,
                    warm="tests.sandbox_tasks:failing_warm_up") as pool:  # fmt: skip
        spare = _spare(pool)
        assert pool.run("tests.sandbox_tasks:echo", {"x": 1}).data["request"] == {"x": 1}


def test_a_spare_taken_while_another_task_runs_is_followed_by_one_not_warmed() -> None:
    """Tasks that overlap make the processors the limit: a spare taken while another task of the pool runs is
    followed by a spare that skips the warm-up; one task at a time, every spare is warmed."""
    with WorkerPool(name="busy", initializer="tests.sandbox_tasks:initialize", init_args={}, tasks=TASKS,
                    warm="tests.sandbox_tasks:warm_up") as pool:  # fmt: skip
        alone = _spare(pool)
        assert pool.run("tests.sandbox_tasks:warmed", {}).data["warmed"]["pid"] == alone
        taken_by_long = _spare(pool)
        stop = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(1) as other:
            long = other.submit(pool.run, "tests.sandbox_tasks:sleep", {"seconds": 60}, cancel=stop)
            deadline = time.monotonic() + 20
            while pool.spare_pid in (None, taken_by_long):
                assert time.monotonic() < deadline, "the long task did not take the spare"
                time.sleep(0.01)
            assert _running_tasks(pool) == 1
            overlapping = _spare(pool)  # forked warm: the long task was alone when it took its spare
            reply = pool.run("tests.sandbox_tasks:warmed", {}).data
            assert reply["pid"] == overlapping and reply["warmed"]["pid"] == overlapping
            after = _spare(pool)  # forked after a spare was taken while the long task ran: not warmed
            assert pool.run("tests.sandbox_tasks:warmed", {}).data == {"warmed": {}, "pid": after}
            stop.set()
            with pytest.raises(JobCancelled):
                long.result(timeout=30)


def _running_tasks(pool: WorkerPool) -> int:
    return pool._running  # the pool's own count of tasks in flight


@pytest.mark.parametrize("defer", [30.0, 0.2])
def test_the_next_spare_waits_for_the_task_that_took_the_last_one(
    monkeypatch: pytest.MonkeyPatch, defer: float
) -> None:
    """The next spare's fork and warm-up wait for the task that took the spare: until it ends, or ``_SPARE_DEFER``
    after it started if it runs longer (then it is ready before that task ends)."""
    from saferoom.sandbox import pool as pool_module

    monkeypatch.setattr(pool_module, "_SPARE_DEFER", defer)
    with WorkerPool(name="defer", initializer="tests.sandbox_tasks:initialize", init_args={}, tasks=TASKS) as pool:
        taken = _spare(pool)
        seconds = 1.0 if defer > 1 else 8.0
        with concurrent.futures.ThreadPoolExecutor(1) as other:
            task = other.submit(pool.run, "tests.sandbox_tasks:sleep", {"seconds": seconds})
            while pool.spare_pid == taken:
                time.sleep(0.005)
            if defer > 1:  # the task ends first: no spare while it runs
                watched = time.monotonic() + 0.5  # of its 1 s
                while time.monotonic() < watched:
                    assert pool.spare_pid is None and not task.done()
                    time.sleep(0.01)
                task.result(timeout=30)
                assert _spare(pool) != taken
            else:  # the task runs past the deferral: its successor is forked while it still runs
                after = _spare(pool)
                assert after != taken and not task.done()
                task.result(timeout=30)
