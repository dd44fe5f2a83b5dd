"""Every error saferoom raises on purpose, in one tree.

Each class carries ``code`` (a stable, machine-readable string kept apart from the human message) and
``status`` (the name of the gRPC status code it maps to). The domain never imports grpc: the server maps
``status`` to ``grpc.StatusCode`` in one place (``saferoom.server.errors``).

    SaferoomError                      INTERNAL            base; never shown with host details
    ├── InvalidRequest                 INVALID_ARGUMENT    a client sent something malformed
    │   ├── InvalidParameter           INVALID_ARGUMENT    a job parameter fails the package's schema
    │   ├── InvalidPackage             INVALID_ARGUMENT    manifest or files of a package are unusable
    │   └── InvalidPlan                INVALID_ARGUMENT    a plan (from the sandbox) is malformed
    ├── AuthenticationFailed           UNAUTHENTICATED     no usable identity: revoked, expired or not ours
    ├── PermissionDenied               PERMISSION_DENIED   the caller's roles do not allow this call
    ├── NotFound                       NOT_FOUND
    │   ├── DatasetNotFound            NOT_FOUND
    │   ├── PackageNotFound            NOT_FOUND
    │   └── JobNotFound                NOT_FOUND
    ├── FailedPrecondition             FAILED_PRECONDITION the request is valid but the state forbids it
    │   ├── JobNotFinished             FAILED_PRECONDITION a result was asked for before the job ended
    │   ├── JobFailed                  FAILED_PRECONDITION a result was asked for a job that failed
    │   ├── NotApproved                FAILED_PRECONDITION no valid approval covers this package or run
    │   ├── PackageTampered            FAILED_PRECONDITION stored bytes no longer match the package hash
    │   ├── ReviewConflict             FAILED_PRECONDITION a review decision the package's state forbids
    │   └── CheckConflict              FAILED_PRECONDITION an output check decision the job's state forbids
    │                                                      (not held, already decided by this checker)
    ├── JobError                       (job failures; recorded on the job, raised only by local runs)
    │   ├── CodeRefused                INVALID_ARGUMENT    the code does not compile under the policy
    │   ├── UserCodeError              INVALID_ARGUMENT    the code raised, or misused the API, at run time
    │   ├── ReleaseRefused             FAILED_PRECONDITION a returned value may not leave (row-level data)
    │   ├── LimitExceeded              RESOURCE_EXHAUSTED  memory, CPU, output size or plan size limit hit
    │   ├── JobTimeout                 DEADLINE_EXCEEDED   wall-clock limit hit; the worker was killed
    │   ├── WorkerCrashed              INTERNAL            the worker died without answering
    │   ├── JobCancelled               CANCELLED
    │   └── EngineError                                    a failure once the engine started on data: fixed text
    │       ├── EngineFailed           INTERNAL            anything else that failed there (engine, release, fit)
    │       ├── EngineTimeout          DEADLINE_EXCEEDED   the engine phase ran out of wall-clock time
    │       ├── EngineLimitExceeded    RESOURCE_EXHAUSTED  an engine worker hit its memory, CPU or output limit
    │       └── EngineUnavailable      UNAVAILABLE         the engine pool or the Spark cluster could not be reached
    ├── BudgetExhausted                RESOURCE_EXHAUSTED  the privacy budget left cannot pay for a run
    ├── Unavailable                    UNAVAILABLE         the server is shutting down or the pool is gone
    ├── StorageFull                    RESOURCE_EXHAUSTED  the disk holding the state is full: nothing was acknowledged
    ├── AuditLogDamaged                DATA_LOSS           the audit log failed verification or cannot be written
    └── StateDamaged                   DATA_LOSS           the state database disagrees with the log or is damaged

Messages are written for the researcher: they name the line of *their* code where relevant and never
contain host paths, memory addresses or frames of saferoom's own code.

An ``EngineError`` always carries its class's fixed message, whatever text it is built with: what the engine
or the release step said may quote a value of the data. Which phase may raise what, and which messages may carry
text derived from the plan, is the catalogue in ``saferoom.jobs.failures``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "ERROR_CODE_METADATA_KEY",
    "AuditLogDamaged",
    "AuthenticationFailed",
    "BudgetExhausted",
    "CheckConflict",
    "CodeRefused",
    "DatasetNotFound",
    "EngineError",
    "EngineFailed",
    "EngineLimitExceeded",
    "EngineTimeout",
    "EngineUnavailable",
    "FailedPrecondition",
    "InvalidPackage",
    "InvalidParameter",
    "InvalidPlan",
    "InvalidRequest",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFinished",
    "JobNotFound",
    "JobTimeout",
    "LimitExceeded",
    "NotApproved",
    "NotFound",
    "PackageNotFound",
    "PackageTampered",
    "PermissionDenied",
    "ReleaseRefused",
    "ReviewConflict",
    "SaferoomError",
    "StateDamaged",
    "StorageFull",
    "Unavailable",
    "UserCodeError",
    "WorkerCrashed",
    "error_from_code",
]


# The gRPC trailing-metadata key that carries ``code`` from server to client.
ERROR_CODE_METADATA_KEY = "saferoom-error-code"


MAX_PROBLEMS = 50  # problems one InvalidPackage lists (a hostile package could produce thousands)
_LISTED = re.compile(r"^the package has \d+ problems:\n- ")


class SaferoomError(Exception):
    """Base of all deliberate saferoom errors."""

    code = "internal"
    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(SaferoomError):
    code = "invalid_request"
    status = "INVALID_ARGUMENT"


class InvalidParameter(InvalidRequest):
    code = "invalid_parameter"


class InvalidPackage(InvalidRequest):
    """Every problem found in a package at once: ``problems`` lists them, the message shows them one a line
    (so that they survive the trip as a gRPC status message and are rebuilt from it on the client)."""

    code = "invalid_package"

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        listed = message.split("\n- ")[1:] if _LISTED.match(message) else []
        self.problems: tuple[str, ...] = tuple(problems) or tuple(listed) or (message,)

    @classmethod
    def listing(cls, problems: Sequence[str]) -> InvalidPackage:
        """One error for all of ``problems``, each kept to one line. Its message shows at most ``MAX_PROBLEMS``
        and counts the rest (what crosses the wire is bounded); ``problems`` keeps them all, so that lists from
        several checks can be joined before they are cut."""
        every = [" ".join(p.split()) for p in problems] or ["the package is not valid"]
        lines = every[:MAX_PROBLEMS]
        if len(every) > MAX_PROBLEMS:
            lines.append(f"... and {len(every) - MAX_PROBLEMS} more")
        if len(lines) == 1:
            return cls(lines[0], every)
        return cls(f"the package has {len(lines)} problems:" + "".join(f"\n- {line}" for line in lines), every)


class InvalidPlan(InvalidRequest):
    code = "invalid_plan"


class AuthenticationFailed(SaferoomError):
    code = "unauthenticated"
    status = "UNAUTHENTICATED"


class PermissionDenied(SaferoomError):
    code = "permission_denied"
    status = "PERMISSION_DENIED"


class NotFound(SaferoomError):
    code = "not_found"
    status = "NOT_FOUND"


class DatasetNotFound(NotFound):
    code = "dataset_not_found"


class PackageNotFound(NotFound):
    code = "package_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class FailedPrecondition(SaferoomError):
    code = "failed_precondition"
    status = "FAILED_PRECONDITION"


class JobNotFinished(FailedPrecondition):
    code = "job_not_finished"


class JobFailed(FailedPrecondition):
    code = "job_failed"


class NotApproved(FailedPrecondition):
    code = "not_approved"


class PackageTampered(FailedPrecondition):
    code = "package_tampered"


class ReviewConflict(FailedPrecondition):
    code = "review_conflict"


class CheckConflict(FailedPrecondition):
    code = "check_conflict"


class JobError(SaferoomError):
    """A job failed; the code and message are recorded on the job."""

    code = "job_error"


class CodeRefused(JobError):
    code = "code_refused"
    status = "INVALID_ARGUMENT"


class UserCodeError(JobError):
    code = "user_code_error"
    status = "INVALID_ARGUMENT"


class ReleaseRefused(JobError):
    code = "release_refused"
    status = "FAILED_PRECONDITION"


class LimitExceeded(JobError):
    code = "limit_exceeded"
    status = "RESOURCE_EXHAUSTED"


class JobTimeout(JobError):
    code = "timeout"
    status = "DEADLINE_EXCEEDED"


class WorkerCrashed(JobError):
    code = "worker_crashed"
    status = "INTERNAL"


class JobCancelled(JobError):
    code = "cancelled"
    status = "CANCELLED"


class EngineError(JobError):
    """A job failed after the engine started on data: only the class's fixed ``fixed_message`` is ever shown.

    The text it is given (for instance by ``error_from_code`` after crossing a process pipe) is dropped, so no
    path can put the engine's own words, which may quote a personal value, into a job record or the audit log.
    """

    code = "engine_error"
    fixed_message = "the engine could not complete the plan; no result was released"

    def __init__(self, message: str = "") -> None:
        super().__init__(self.fixed_message)


class EngineFailed(EngineError):
    code = "engine_failed"
    status = "INTERNAL"
    fixed_message = "the engine could not complete the plan; no result was released"


class EngineTimeout(EngineError):
    code = "engine_timeout"
    status = "DEADLINE_EXCEEDED"
    fixed_message = "the engine did not finish the plan within the job's time limit; no result was released"


class EngineLimitExceeded(EngineError):
    code = "engine_limit_exceeded"
    status = "RESOURCE_EXHAUSTED"
    fixed_message = (
        "the engine reached the job's memory, CPU or output limit while running the plan; no result was released"
    )


class EngineUnavailable(EngineError):
    code = "engine_unavailable"
    status = "UNAVAILABLE"
    fixed_message = "the engine could not be reached while running the plan; no result was released: run it again"


class BudgetExhausted(SaferoomError):
    """A run would spend more privacy budget than the researcher has left on a dataset (nothing was charged)."""

    code = "budget_exhausted"
    status = "RESOURCE_EXHAUSTED"


class Unavailable(SaferoomError):
    code = "unavailable"
    status = "UNAVAILABLE"


class StorageFull(SaferoomError):
    """The disk holding the database or the audit log is full: the action was refused (not acknowledged)."""

    code = "storage_full"
    status = "RESOURCE_EXHAUSTED"


class AuditLogDamaged(SaferoomError):
    code = "audit_log_damaged"
    status = "DATA_LOSS"


class StateDamaged(SaferoomError):
    """The state database is damaged, or disagrees with the audit log (what it holds is not what was recorded)."""

    code = "state_damaged"
    status = "DATA_LOSS"


def _all_subclasses(cls: type[SaferoomError]) -> list[type[SaferoomError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE = {cls.code: cls for cls in _all_subclasses(SaferoomError)}


def error_from_code(code: str, message: str) -> SaferoomError:
    """Rebuild an error from its machine-readable code (e.g. after it crossed a process pipe)."""
    return _BY_CODE.get(code, SaferoomError)(message)
