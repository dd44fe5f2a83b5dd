"""The catalogue of how a job can end in failure, and the line after which no error text is trusted.

A job's ``error_code`` and ``error_message`` reach the researcher (``jobs get``, ``GetResult``), every operator
(``jobs list``) and the audit log (``job_failed``). So a message may be built from the plan, the package, the
parameters, the configuration and the catalog, never from the data. Errors raised before the engine touches
data keep their messages: nothing they could say depends on a row. From the first engine call on, any
exception becomes one of a few errors whose message is fixed (``EnginePhase``), and what it said goes only to
the server's diagnostic log (``log_engine_failure``).

    code                   phase                                             message
    ─────────────────────  ────────────────────────────────────────────────  ──────────────────────────────
    not_approved           start: the approval re-checked                    package, datasets, parameters
    package_tampered       start: the stored package re-hashed               package
    code_refused           sandbox: compiling under the policy               names the line of user code
    user_code_error        sandbox: the algorithm raised or misused the API  names the line of user code
    release_refused        sandbox reply, release rewrite (protect)          plan and catalog
    invalid_plan           sandbox reply, release rewrite, admission         plan and catalog
    limit_exceeded         sandbox worker limits; plan admission (cost)      configured limits, plan, catalog
    timeout                sandbox worker wall clock                         configured limit
    worker_crashed         sandbox worker died or sent a malformed reply     fixed per cause
    unavailable            a worker pool is closed or not answering          fixed
    engine_failed          engine phase: engine worker, Spark, release,      fixed
                           secondary suppression, marking, noise, model fit
    engine_timeout         engine phase: wall-clock limit                    fixed
    engine_limit_exceeded  engine phase: memory, CPU or output limit         fixed
    engine_unavailable     engine phase: engine pool or Spark cluster gone   fixed
    cancelled              any phase: the researcher cancelled               fixed
    interrupted            the server stopped while the job ran              fixed
    audit_log_damaged      submission: the audit log refused the job         fixed
    internal               a bug of saferoom's outside the engine phase      fixed ("internal error")

The engine phase starts at the first engine call and ends with the job: everything after it reads results of
the data, even code that only post-processes released tables. Whether one of its errors arises, and which kind,
is still one bit about the data; the engine being total and plans being admitted by their worst case
(``saferoom.engine.cost``) keep that bit from depending on values.
"""

from __future__ import annotations

import logging
from types import TracebackType

from saferoom.errors import (
    EngineError,
    EngineFailed,
    EngineLimitExceeded,
    EngineTimeout,
    EngineUnavailable,
    JobCancelled,
    JobTimeout,
    LimitExceeded,
    Unavailable,
)

__all__ = ["EnginePhase", "engine_error", "log_engine_failure"]

_log = logging.getLogger(__name__)

CANCELLED_MESSAGE = "the job was cancelled"


def engine_error(exc: BaseException) -> EngineError | JobCancelled:
    """The fixed error that stands for ``exc`` raised during the engine phase."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, JobCancelled):
        return JobCancelled(CANCELLED_MESSAGE)
    if isinstance(exc, JobTimeout):
        return EngineTimeout()
    if isinstance(exc, LimitExceeded):
        return EngineLimitExceeded()
    if isinstance(exc, Unavailable):
        return EngineUnavailable()
    return EngineFailed()


class EnginePhase:
    """Wraps the part of a job that may run on data; once ``start()`` was called (just before the first engine
    call), any exception leaving the block is replaced by its fixed ``engine_error`` (the original is kept as
    ``__cause__`` for the diagnostic log). Before that, exceptions pass unchanged: they are data-independent.
    ``engine_seconds`` sums the time spent waiting for engine runs (for the metrics' engine/release split)."""

    def __init__(self) -> None:
        self.started = False
        self.engine_seconds = 0.0

    def start(self) -> None:
        """From now on the job's work depends on data."""
        self.started = True

    def __enter__(self) -> EnginePhase:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is None or not self.started or not isinstance(exc, Exception):
            return
        fixed = engine_error(exc)
        if fixed is exc:
            return
        raise fixed from exc


def log_engine_failure(job_id: str, exc: BaseException) -> None:
    """Write what an engine-phase failure really said to the server's diagnostic log (never anywhere else)."""
    cause = exc.__cause__
    if isinstance(exc, EngineError) and cause is not None:
        detail = str(cause) or type(cause).__name__
        _log.warning("job %s ended %s: %s: %s", job_id, exc.code, type(cause).__name__, detail, exc_info=cause)
