"""The job service: accepts jobs, runs them on a bounded pool of threads, and answers about them.

Knows nothing of gRPC. A job is persisted (QUEUED) before it is acknowledged; each state change is a
compare-and-set in the store (see ``saferoom.jobs.state``), and that job's watchers (only theirs: sixteen
watched jobs must not each re-read the store on every change of every other job) are woken on it. The job
threads wait on their own condition, woken only when a job is scheduled, a slot is given back or the service
closes.

A failed job records only a code and message of the catalogue in ``saferoom.jobs.failures``: the pipeline turns
anything raised once the engine started on data into a fixed ``EngineError``, whose original text is written
to the diagnostic log here (with the job id) and nowhere else; anything that is not a ``SaferoomError`` is
recorded as ``internal``.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

import pyarrow as pa

from saferoom.audit import AuditLog, EventType
from saferoom.audit.log import Entry
from saferoom.disclosure.budgets import BudgetService, budget_summary
from saferoom.errors import (
    AuditLogDamaged,
    EngineError,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    LimitExceeded,
    SaferoomError,
    StateDamaged,
    StorageFull,
    Unavailable,
)
from saferoom.identity import Identity, Role
from saferoom.jobs.checking import CheckService
from saferoom.jobs.failures import log_engine_failure
from saferoom.jobs.fairness import EngineSlots, FairSlots
from saferoom.jobs.pipeline import JobOutcome, Pipeline, ReleaseDeadline, dumps_value
from saferoom.jobs.publishing import Publisher
from saferoom.jobs.state import ACTIVE_STATES, SETTLED_STATES, JobState
from saferoom.metrics import JobTimer, Metrics
from saferoom.packages import PackageService
from saferoom.store import Budget, Charge, JobRecord, JobStore, StoredOutput, StoredResult
from saferoom.store.budgets import delta_value, epsilon_value
from saferoom.store.jobs import result_hash

__all__ = ["JobService"]

_log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
T = TypeVar("T")
JOB_ID_LENGTH = 32  # uuid4 hex
MIN_PREFIX = 6  # the shortest id prefix accepted (ids and hashes are shown with 8 to 12 characters)
_INTERRUPTED = "the server stopped while this job was running; run it again"


_EVENTS = {
    JobState.RUNNING: EventType.JOB_STARTED,
    JobState.FAILED: EventType.JOB_FAILED,
    JobState.CANCELLED: EventType.JOB_CANCELLED,
}


def _spent(charges: list[Charge]) -> dict[str, dict[str, float]]:
    return {c.dataset: {"epsilon": epsilon_value(c.epsilon), "delta": delta_value(c.delta)} for c in charges}


def _charge_entry(job: JobRecord, charge: Charge, after: Budget) -> Entry:
    """The ``budget_charged`` record of one dataset of a job: what it spent, and what is left after it."""
    objects = {"job": job.id, "package": job.package_hash, "identity": charge.researcher, "dataset": charge.dataset}
    summary = {"epsilon": epsilon_value(charge.epsilon), "delta": delta_value(charge.delta), **budget_summary(after)}
    return (EventType.BUDGET_CHARGED, "saferoom", "server", objects, summary)


def _release_summary(outcome: JobOutcome, digest: str, charges: list[Charge]) -> dict[str, Any]:
    """What was released, for the audit log: only what the researcher receives anyway (rows, the hash, the
    budget), never values nor counts of what was withheld (an exact count of the data: issue 11)."""
    outputs = [
        {"name": o.name, "kind": o.kind, "rows": o.table.num_rows if o.table is not None else 1}
        for o in outcome.outputs
    ]
    return {
        "result_hash": digest,
        "outputs": outputs,
        "cells_released": sum(o["rows"] for o in outputs),
        "budget_charged": _spent(charges),
    }


def table_to_ipc(table: pa.Table) -> bytes:
    """An Arrow table as an IPC stream (how released tables are stored and sent)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


class JobService:
    """Runs jobs for the server: submit, observe, cancel, fetch results."""

    def __init__(
        self,
        store: JobStore,
        packages: PackageService,
        pipeline: Pipeline,
        audit: AuditLog,
        budgets: BudgetService,
        max_concurrent: int = 2,
        max_queued: int = 100,
        release_quantum: float = 0.0,
        checking: CheckService | None = None,
        max_code_phases: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()  # phase timings only (saferoom.metrics: what may be exported)
        self._checking = checking  # holds results that need an output checker (None: nothing is held)
        self._quantum = release_quantum
        self._audit = audit
        self._packages = packages
        self._pipeline = pipeline
        self._budgets = budgets
        self._max_queued = max_queued
        # Fair queueing: one queue per owner, so that one researcher's twenty jobs (or bombs) do not stand in
        # front of everybody else's; and fair slots (``saferoom.jobs.fairness``): while others wait, nobody runs
        # more than a fair share, and whoever used the slots least lately goes first.
        # A job holds one of ``max_code_phases`` slots from its start, and one of ``max_concurrent`` engine slots
        # from the end of its code phase on (the same rules for both).
        code_phases = max(max_concurrent, max_code_phases or max_concurrent)
        self._slots = FairSlots(code_phases, cap=max_concurrent)
        self._engine_slots = EngineSlots(max_concurrent)
        # With timing protection on, a job's end is published at its boundary by this timer thread: waiting for
        # it holds no slot (``saferoom.jobs.publishing``).
        self._publisher = Publisher()
        self._waiting: dict[str, collections.deque[str]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self._workers = [threading.Thread(target=self._work, name=f"job-{i}", daemon=True) for i in range(code_phases)]
        self._changed = threading.Condition()
        # job id -> [event set at the job's next state change, watchers] (a leaf lock: nothing is taken under it)
        self._watched: dict[str, list[Any]] = {}
        self._watch_lock = threading.Lock()
        self._cancels: dict[str, threading.Event] = {}
        self._cancelled_by: dict[str, str] = {}
        self._queued = 0
        self._closed = False
        for worker in self._workers:
            worker.start()

    # ----------------------------------------------------------------- lifecycle

    def recover(self) -> tuple[int, int]:
        """After a restart: fail jobs that were running, run again those still queued. Returns the counts."""
        failed = 0
        for job in self._store.jobs_in_states([s.value for s in ACTIVE_STATES]):
            if self._transition(job.id, JobState.FAILED, list(ACTIVE_STATES), "interrupted", _INTERRUPTED):
                failed += 1
        queued = self._store.jobs_in_states([JobState.QUEUED.value])
        for job in sorted(queued, key=lambda j: j.created_at):
            self._schedule(job.id, job.owner)
        return failed, len(queued)

    def occupancy(self) -> dict[str, int]:
        """Slots in use and jobs waiting, now (for the metrics endpoint)."""
        with self._changed:
            return {"code": self._slots.busy, "engine": self._engine_slots.busy, "queued": self._queued}

    def close(self, timeout: float = 30.0) -> None:
        """Cancel running jobs and stop taking new ones (idempotent). Waits at most ``timeout`` seconds for the
        job threads: one that does not end by then is left (logged); its job, still RUNNING in the store, is
        marked interrupted at the next start, so a stuck job never keeps the server from stopping."""
        with self._changed:
            self._closed = True
            for event in self._cancels.values():
                event.set()
            self._changed.notify_all()
        self._wake_all_watchers()
        deadline = time.monotonic() + timeout
        for worker in self._workers:  # each finishes (or is cancelled out of) its current job; waiting jobs
            worker.join(max(0.0, deadline - time.monotonic()))  # stay QUEUED and run after the next start
        stuck = [w.name for w in self._workers if w.is_alive()]
        if stuck:
            _log.error("job threads %s did not stop within %.0f s of the shutdown; leaving them", stuck, timeout)
        self._publisher.close(max(0.0, deadline - time.monotonic()))  # jobs waiting for their boundary: interrupted

    # ----------------------------------------------------------------- commands

    def submit(
        self,
        package_ref: str,
        params: Mapping[str, Any],
        caller: Identity,
        datasets: Collection[str] = (),
        request_id: str = "",
    ) -> JobRecord:
        """Check the caller may run this approved package so, charge its privacy budgets, persist the job and
        schedule it. It is QUEUED.

        The charge and the job are one transaction: a run the budgets cannot pay for is refused
        (``BudgetExhausted``) before any work, charging nothing; a retry of an accepted request charges nothing.
        """
        if self._closed:
            raise Unavailable("the server is shutting down")
        if request_id and not _REQUEST_ID.match(request_id):
            raise InvalidRequest("request_id must be 1 to 64 letters, digits, '-' or '_'")
        package, checked, chosen = self._packages.authorize_run(package_ref, caller, params, datasets)
        costs = self._budgets.costs(package, chosen)
        with self._changed:
            if self._queued >= self._max_queued:
                raise LimitExceeded(f"too many queued jobs (limit {self._max_queued}); try again later")
            self._queued += 1
        now = time.time()
        job = JobRecord(
            id=uuid.uuid4().hex,
            owner=caller.name,
            package_hash=package.hash,
            package_name=package.name,
            package_version=package.version,
            params_json=json.dumps(checked, sort_keys=True),
            datasets_json=json.dumps(list(chosen)),
            state=JobState.QUEUED.value,
            error_code=None,
            error_message=None,
            created_at=now,
            started_at=None,
            finished_at=None,
            updated_at=now,
            request_id=request_id or None,
        )

        def records(inserted: tuple[JobRecord, list[tuple[Charge, Budget]]]) -> list[Entry]:
            stored, charges = inserted
            if stored.id != job.id:  # a retry: recorded the first time
                return []
            queued: Entry = (
                EventType.JOB_QUEUED,
                caller.name,
                caller.role_names,
                job.audit_objects(),
                {"params": checked, "request_id": request_id},
            )
            return [queued, *(_charge_entry(job, c, after) for c, after in charges)]

        try:
            # The job, its charges and their records are one unit, appended to the log before the answer.
            (stored, _), _ = self._audit.commit(
                lambda conn: self._store.insert_charged_job_in(conn, job, costs), records
            )
        except BaseException:
            if self._stored(job.id):  # committed, its records wait in the outbox: it runs once they are appended
                self._schedule(job.id, caller.name, counted=True)
            else:
                with self._changed:
                    self._queued -= 1
            raise
        if stored.id != job.id:  # a retry of a request already accepted: the same job, not a second one
            with self._changed:
                self._queued -= 1
            if (stored.package_hash, stored.params_json, stored.datasets_json) != (
                job.package_hash,
                job.params_json,
                job.datasets_json,
            ):
                raise InvalidRequest(f"request_id {request_id!r} was already used for a different job")
            return stored
        self._schedule(job.id, caller.name, counted=True)
        return job

    def _stored(self, job_id: str) -> bool:
        try:
            self._store.get_job(job_id)
        except (JobNotFound, SaferoomError):
            return False
        return True

    def cancel(self, job_id: str, caller: Identity) -> JobRecord:
        """Cancel a queued or running job; a finished job is returned unchanged."""
        job = self._job_for(job_id, caller)
        job_id = job.id
        if job.state == JobState.QUEUED.value and self._transition(
            job_id, JobState.CANCELLED, [JobState.QUEUED], "cancelled", "cancelled before it ran", caller
        ):
            self._unschedule(job_id, job.owner)
        with self._changed:
            event = self._cancels.get(job_id)
            if event is not None:
                self._cancelled_by[job_id] = caller.name
        if event is not None:
            event.set()
            self._publisher.wake()  # a job waiting for its boundary ends as cancelled now
        return self._store.get_job(job_id)

    # ----------------------------------------------------------------- queries

    def _job_for(self, job_id: str, caller: Identity, result: bool = False) -> JobRecord:
        """The job if ``caller`` may see it: its owner, or (except for results) an operator.

        Anyone else is told it does not exist, so job ids cannot be probed.
        """
        if len(job_id) < JOB_ID_LENGTH:  # a prefix: resolved among the jobs the caller may see, and only those
            owner = None if caller.has(Role.OPERATOR) and not result else caller.name
            ids = self._store.find_ids(job_id, owner) if len(job_id) >= MIN_PREFIX else []
            if len(ids) > 1:
                shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
                raise InvalidRequest(f"{job_id} starts {'more than 10' if len(ids) > 10 else len(ids)} job ids "
                                     f"({shown}): give more of its characters")  # fmt: skip
            if not ids:
                raise JobNotFound(f"no job starts with {job_id}" if len(job_id) >= MIN_PREFIX else f"no job {job_id}")
            job_id = ids[0]
        try:
            job = self._store.get_job(job_id)
        except JobNotFound:
            job = None
        if job is None or not (job.owner == caller.name or (caller.has(Role.OPERATOR) and not result)):
            raise JobNotFound(f"no job {job_id}")
        return job

    def get(self, job_id: str, caller: Identity) -> JobRecord:
        return self._job_for(job_id, caller)

    def list_jobs(
        self,
        caller: Identity,
        limit: int,
        after: str | None,
        states: Collection[str] = (),
        owner: str = "",
        package: str = "",
        since: float | None = None,
    ) -> list[JobRecord]:
        """The caller's jobs (all jobs for operators, or one ``owner``'s), newest first, filtered."""
        if not caller.has(Role.OPERATOR):
            if owner and owner != caller.name:
                return []  # a researcher sees only their own jobs: another owner's are none of theirs
            owner = caller.name
        unknown = sorted(set(states) - {s.value for s in JobState})
        if unknown:
            raise InvalidRequest(f"unknown job state {unknown[0][:40]!r}")
        return self._store.list_jobs(
            owner=owner or None, limit=limit, after=after, states=tuple(states), package=package or None, since=since
        )

    def watch(self, job_id: str, caller: Identity, poll_seconds: float = 1.0) -> Iterator[JobRecord]:
        """Yield the job now and after each state change, ending after a final state or AWAITING_CHECK (settled:
        what follows is a person's decision, which may take days)."""
        job_id = self._job_for(job_id, caller).id
        last: str | None = None
        with self._watch_lock:
            self._watched.setdefault(job_id, [threading.Event(), 0])[1] += 1
        try:
            while True:
                with self._watch_lock:
                    change: threading.Event = self._watched[job_id][0]  # before the read: a later change sets it
                job = self._store.get_job(job_id)
                if job.state != last:
                    last = job.state
                    yield job
                if job.state in SETTLED_STATES:
                    return
                if self._closed:
                    raise Unavailable("the server is shutting down")
                change.wait(poll_seconds)
        finally:
            with self._watch_lock:
                watch = self._watched[job_id]
                watch[1] -= 1
                if watch[1] == 0:
                    del self._watched[job_id]

    def result(self, job_id: str, caller: Identity) -> StoredResult:
        job = self._job_for(job_id, caller, result=True)
        job_id = job.id
        if job.state in (JobState.QUEUED.value, *ACTIVE_STATES):
            raise JobNotFinished(f"job {job_id} is {job.state}; its result is not ready")
        if job.state == JobState.AWAITING_CHECK.value:
            raise JobNotFinished(f"job {job_id} is awaiting_check: an output checker must release its result first")
        if job.state != JobState.SUCCEEDED.value:
            raise JobFailed(f"job {job_id} {job.state}: {job.error_message or 'no result'}")
        result = self._store.get_result(job_id)
        self._check_integrity(job, result)
        summary = {"result_hash": result.report.get("result_hash", ""), "owner": job.owner}
        self._audit.append(EventType.RESULT_DOWNLOADED, caller.name, caller.role_names, job.audit_objects(), summary)
        return result

    def _check_integrity(self, job: JobRecord, result: StoredResult) -> None:
        """Serve a result only if what is stored is what its ``result_released`` record pins."""
        pinned = self._audit.released_hash(job.id)
        if pinned is None and self._audit.pending:
            raise StorageFull("this result is not recorded in the audit log yet (the disk is full); try again later")
        actual = result_hash(result.outputs)
        if pinned is None or pinned != actual or result.report.get("result_hash") != actual:
            _log.error(
                "job %s: the stored result (hash %s, report says %s) does not match its result_released record "
                "(%s): NOT served; the state database is damaged, restore it from a backup",
                job.id,
                actual,
                result.report.get("result_hash"),
                pinned,
            )
            raise StateDamaged(
                f"the stored result of job {job.id} does not match what the audit log recorded as released; it is "
                "not served (an operator has been told)"
            )

    # ----------------------------------------------------------------- execution

    def _schedule(self, job_id: str, owner: str, counted: bool = False) -> None:
        with self._changed:
            if self._closed:  # the job stays QUEUED in the store and runs after the next start
                if counted:
                    self._queued -= 1
                return
            if not counted:
                self._queued += 1
            self._cancels[job_id] = threading.Event()
            if owner not in self._waiting:
                self._waiting[owner] = collections.deque()
                self._turns.append(owner)
            self._waiting[owner].append(job_id)
            self._changed.notify_all()

    def _unschedule(self, job_id: str, owner: str) -> None:
        """Forget a job cancelled while it waited, so that it no longer counts its owner as waiting."""
        with self._changed:
            jobs = self._waiting.get(owner)
            if jobs is None or job_id not in jobs:
                return  # already taken by a worker, which will find it cancelled
            jobs.remove(job_id)
            self._queued -= 1
            self._cancels.pop(job_id, None)
            if not jobs:
                del self._waiting[owner]
                self._turns.remove(owner)

    def _next(self) -> tuple[str, str] | None:
        """The next job to run and its owner (None once closed); called with ``_changed`` held: the first
        waiting job of the owner ``FairSlots`` chooses."""
        while not self._closed and (owner := self._slots.choose(self._turns)) is None:
            self._changed.wait()  # nobody waits, or everyone who does holds as many code phases as they may
        if self._closed or owner is None:
            return None
        self._turns.remove(owner)
        jobs = self._waiting[owner]
        job_id = jobs.popleft()
        if jobs:
            self._turns.append(owner)  # back of the line, behind everyone else waiting
        else:
            del self._waiting[owner]
        self._slots.start(owner)
        self._queued -= 1
        return job_id, owner

    def _work(self) -> None:
        while True:
            with self._changed:
                taken = self._next()
            if taken is None:
                return
            job_id, owner = taken
            try:
                self._execute(job_id, owner)
            except Exception:  # never let a job thread die: the job stays where recovery finds it
                _log.exception("job %s could not be recorded; it is recovered at the next start", job_id)
            finally:
                with self._changed:
                    self._slots.end(owner)
                    self._changed.notify_all()

    def _persist(self, action: Callable[[], T]) -> T | None:
        """Run a recorded state change of a running job until it is committed and its records are in the log.

        While the disk is full it waits and tries again (the change is compare-and-set, so a retry of one that was
        committed changes nothing, and the outbox append is retried); None if the server stops first, leaving
        the job where start-up recovery finds it.
        """
        delay = 0.1
        while True:
            try:
                result = action()
                if self._audit.pending:
                    self._audit.flush()
                return result
            except (StorageFull, Unavailable, AuditLogDamaged) as exc:
                if self._closed:
                    return None
                _log.warning("a job's state change cannot be recorded yet (%s); retrying", exc.message)
            with self._changed:
                self._changed.wait(delay)
            delay = min(2.0, delay * 2)

    def _execute(self, job_id: str, owner: str) -> None:
        with self._changed:
            cancel = self._cancels[job_id]
        engine_held: list[str] = []
        timer: JobTimer | None = None
        handed_over = False
        try:
            if self._audit.pending and self._persist(self._flushed) is None:
                return  # the job's own records wait in the outbox: it does not start before they are appended
            if cancel.is_set():  # cancelled while queued (cancel() moved it already)
                return
            if not self._persist(lambda: self._transition(job_id, JobState.RUNNING, [JobState.QUEUED])):
                return  # a cancel set after this point reaches the pipeline, which ends the job as cancelled
            job = self._store.get_job(job_id)
            params, datasets = json.loads(job.params_json), tuple(json.loads(job.datasets_json))
            package = self._packages.verify_run(job.package_hash, params, datasets)  # approval re-checked now
            timer = job_timer = self._metrics.job_started(time.time() - job.created_at)
            started = timer.started  # the boundary's grid and the exported phases start at the same instant
            # Timing protection (README "Timing"): the job ends no earlier than its releases' admitted worst cases
            # allow, and then on the release quantum's grid; both off only with the quantum at 0 (tests).
            deadline = ReleaseDeadline() if self._quantum > 0 else None

            def engine_turn() -> None:
                job_timer.mark("code")
                if deadline is not None:  # RELEASING from the end of the code phase, never the engine's (state.py)
                    self._persist(lambda: self._transition(job_id, JobState.RELEASING, [JobState.RUNNING]))
                self._engine_slots.acquire(job.owner, cancel)
                engine_held.append(job.owner)

            size = 0
            try:
                outcome = self._pipeline.run(
                    package,
                    params,
                    cancel=cancel,
                    datasets=datasets,
                    before_engine=engine_turn,
                    deadline=deadline,
                    on_versions=lambda versions: self._store.record_versions(job_id, versions),
                )
            except JobCancelled:
                raise
            except SaferoomError as exc:  # a refusal that depends on data ends at the same moment as a release
                ending = self._failure(job_id, exc)
                timer.mark("engine")
            else:
                ending, size = self._release(job, outcome, staged=deadline is not None)
                timer.mark_split("engine", outcome.engine_seconds, "release")
            while engine_held:  # the engine is done: its slot goes back before any wait
                self._engine_slots.release(engine_held.pop())
            if deadline is None:
                ending()
            else:  # published at the boundary by the publisher's thread; this job thread's slot goes back now
                due = deadline.boundary(started, self._quantum)
                handed_over = True
                self._publisher.hand_over(
                    due,
                    owner,
                    size,
                    cancel,
                    self._finally(job_id, ending, timer, due),
                    self._finally(job_id, self._cancelled(job_id), timer),
                )
        except JobCancelled as exc:
            self._cancelled(job_id, exc)()
        except SaferoomError as exc:  # raised before any data was touched: its message is data-independent
            self._failure(job_id, exc)()
        except Exception:  # a bug of ours: record it without host details, keep serving
            _log.exception("job %s failed with an internal error", job_id)
            self._end(job_id, JobState.FAILED, "internal", "internal error")
        finally:
            if timer is not None and not handed_over:
                timer.done()
            for held in engine_held:
                self._engine_slots.release(held)
            if not handed_over:
                self._forget(job_id)

    def _release(self, job: JobRecord, outcome: JobOutcome, staged: bool = False) -> tuple[Callable[[], None], int]:
        """Prepare a job's result (nothing of it shows yet) and return what publishes it, and its size in bytes.
        ``staged`` (timing protection on): its rows are written now, before the boundary (padded by the result's
        admitted bytes), so that publishing at the boundary changes its state only, in a time that does not show
        the size of a result held for checkers (README "Timing")."""
        job_id = job.id
        outputs = self._stored_outputs(outcome)
        digest = result_hash(outputs)
        report = {"printed": outcome.printed, "result_hash": digest}
        summary = _release_summary(outcome, digest, self._budgets.charged(job_id))
        size = sum(len(o.arrow_ipc or b"") + len(o.value_json or "") + len(o.report_json) for o in outputs)
        if staged:
            staged = bool(self._persist(lambda: self._store.stage_result(job_id, outputs, report)))
        checking = self._checking
        if checking is not None and (required := checking.checkers_required(job, outcome)):

            def held() -> None:  # exact personal results: stored, held for output checkers, nothing shown
                self._persist(lambda: checking.hold(job, outcome, outputs, report, required, summary, staged))
                self._job_changed(job_id)

            return held, size
        finished = {"owner": job.owner, "outputs": len(outputs)}

        def records(stored: bool) -> list[Entry]:  # one write, one fsync: they describe one moment
            if not stored:
                return []
            return [
                (EventType.RESULT_RELEASED, "saferoom", "server", job.audit_objects(), summary),
                (EventType.JOB_FINISHED, "saferoom", "server", job.audit_objects(), finished),
            ]

        def released() -> None:
            self._persist(
                lambda: self._audit.commit(
                    lambda conn: self._store.finish_with_result_in(conn, job_id, outputs, report, staged=staged),
                    records,
                )
            )
            self._job_changed(job_id)

        return released, size

    def _failure(self, job_id: str, exc: SaferoomError) -> Callable[[], None]:
        """What records a job's failure: an ``EngineError``'s fixed message (what the engine said may quote data:
        the diagnostic log only), or a refusal made before any data was touched, whose message is data-independent."""

        def failed() -> None:
            if isinstance(exc, EngineError):
                log_engine_failure(job_id, exc)
                self._end(job_id, JobState.FAILED, exc.code, exc.fixed_message)
            else:
                self._end(job_id, JobState.FAILED, exc.code, exc.message)

        return failed

    def _cancelled(self, job_id: str, exc: JobCancelled | None = None) -> Callable[[], None]:
        """What records a cancelled job: cancelled, or interrupted if the server is stopping."""
        cancelled = exc or JobCancelled("the job was cancelled")

        def ended() -> None:
            if self._closed:  # the server is stopping, not the researcher cancelling
                self._end(job_id, JobState.FAILED, "interrupted", _INTERRUPTED)
            else:
                self._end(job_id, JobState.CANCELLED, cancelled.code, cancelled.message)

        return ended

    def _finally(
        self, job_id: str, ending: Callable[[], None], timer: JobTimer, due: float | None = None
    ) -> Callable[[], None]:
        """``ending``, then forget the job's cancel (kept until its end is recorded, so a cancel still reaches it)
        and observe its phases (the wait for the boundary, release and quantum together, as ``quantum``; for an
        end published at its boundary ``due``, the exported ``padded`` phase ends there)."""

        def run() -> None:
            try:
                ending()
            finally:
                timer.mark("quantum")
                if due is not None:
                    timer.published_at(due)
                timer.done()
                self._forget(job_id)

        return run

    def _forget(self, job_id: str) -> None:
        with self._changed:
            self._cancels.pop(job_id, None)
            self._cancelled_by.pop(job_id, None)

    def _flushed(self) -> bool:
        self._audit.flush()
        return True

    def _end(self, job_id: str, new: JobState, code: str, message: str) -> None:
        """A running job's final state, recorded (retried while the disk is full)."""
        self._persist(lambda: self._transition(job_id, new, list(ACTIVE_STATES), code, message))

    @staticmethod
    def _stored_outputs(outcome: JobOutcome) -> list[StoredOutput]:
        return [
            StoredOutput(
                name=o.name,
                kind=o.kind,
                position=i,
                arrow_ipc=None if o.table is None else table_to_ipc(o.table),
                value_json=None if o.table is not None else dumps_value(o.value),
                report_json=json.dumps(o.report, sort_keys=True),
            )
            for i, o in enumerate(outcome.outputs)
        ]

    def _transition(
        self,
        job_id: str,
        new: JobState,
        expected: list[JobState],
        error_code: str | None = None,
        error_message: str | None = None,
        actor: Identity | None = None,
    ) -> bool:
        """Compare-and-set the job's state and record it, as one unit (``AuditLog.commit``); then wake watchers.

        RELEASING, a phase of the started job with no record of its own that acknowledges nothing, is set without
        waiting for the disk (``JobStore.move_unrecorded``): recovery treats it as RUNNING, durable already."""
        if new is JobState.RELEASING:
            try:
                return self._store.move_unrecorded(job_id, new.value, [s.value for s in expected])
            finally:
                self._job_changed(job_id)

        def change(conn: sqlite3.Connection) -> JobRecord | None:
            moved = JobStore.update_state_in(
                conn, job_id, new.value, [s.value for s in expected], error_code, error_message, None
            )
            if moved and new in (JobState.FAILED, JobState.CANCELLED):  # ended without its result: drop it
                JobStore.discard_staged_in(conn, job_id)
            return JobStore.get_job_in(conn, job_id) if moved else None

        requested_by = ""
        if new is JobState.CANCELLED:  # read before the transaction: the lock order puts this lock first
            with self._changed:
                requested_by = self._cancelled_by.get(job_id, actor.name if actor else "")

        def records(job: JobRecord | None) -> list[Entry]:
            if job is None or new not in _EVENTS:  # RELEASING: a phase of the started job, no record of its own
                return []
            summary: dict[str, Any] = {"owner": job.owner}
            if error_code:
                summary.update(code=error_code, message=(error_message or "")[:500])
            if new is JobState.CANCELLED:
                summary["requested_by"] = requested_by
            who, role = (actor.name, actor.role_names) if actor else ("saferoom", "server")
            return [(_EVENTS[new], who, role, job.audit_objects(), summary)]

        try:
            # A job starting acknowledges nothing to anyone: its record is made durable by the job's next one.
            moved, _ = self._audit.commit(change, records, durable=new not in ACTIVE_STATES)
        finally:
            self._job_changed(job_id)
        return moved is not None

    def _job_changed(self, job_id: str) -> None:
        """Wake the watchers of ``job_id`` (they re-read it from the store)."""
        with self._watch_lock:
            watch = self._watched.get(job_id)
            if watch is None:
                return
            event, watch[0] = watch[0], threading.Event()
        event.set()

    def _wake_all_watchers(self) -> None:
        with self._watch_lock:
            events = [watch[0] for watch in self._watched.values()]
        for event in events:
            event.set()
