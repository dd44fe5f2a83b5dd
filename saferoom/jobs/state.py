"""The job lifecycle, as an explicit state machine.

    QUEUED ──► RUNNING ──(► RELEASING)──► SUCCEEDED
       │          ├──────────────────────► FAILED      (error_code + error_message say why, for the researcher)
       │          ├──────────────────────► CANCELLED
       │          └──────────────────────► AWAITING_CHECK ──► SUCCEEDED          (output checkers approved: released)
       │                                  ├─► REJECTED           (a checker refused it; their reason)
       │                                  └─► CHANGES_REQUESTED  (a checker asks for another run; their reason)
       └─────────────────► CANCELLED

A job is QUEUED once acknowledged to the client (persisted first), RUNNING while its worker processes work,
and ends in exactly one final state. Transitions are compare-and-set in the store, so repeating one is
harmless and two racing threads cannot both win. After a server crash, QUEUED jobs run again and RUNNING jobs
are marked FAILED ("interrupted"): never silently lost, never run twice.

RELEASING (only with timing protection on, a release quantum above 0): the job's data phase. The engine
computes the releases under the disclosure rules and the job waits out their admitted worst case and the quantum
grid before it publishes its end (README "Timing"). It begins when the sandbox hands its plans over, a moment that
depends on the code and its parameters only, never when the engine finishes: that moment depends on the data, and
showing it would tell what the padding hides. It leaves exactly as RUNNING does, and is recovered like it (a job
RELEASING when the server stopped is marked FAILED, "interrupted"). It has no audit record of its own: the job's
``job_started`` record covers both.

AWAITING_CHECK: the job computed an exact result from a dataset whose policy requires output checking
(``saferoom.checks``). The result is stored, but only output checkers see it; the researcher sees the state
and nothing else until checkers sign a decision. It is *settled*: nothing more happens without a person, so
watching a job ends there as after a final state, and a restart keeps it held.
"""

from __future__ import annotations

import enum

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "SETTLED_STATES", "UNFINISHED_STATES", "JobState"]


class JobState(enum.StrEnum):
    """Where a job is in its lifecycle (stored as these strings)."""

    QUEUED = "queued"
    RUNNING = "running"
    RELEASING = "releasing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    AWAITING_CHECK = "awaiting_check"
    REJECTED = "rejected"
    CHANGES_REQUESTED = "changes_requested"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_settled(self) -> bool:
        """Final, or waiting for a person: nothing more happens on the machine's own."""
        return self in SETTLED_STATES


FINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED, JobState.CHANGES_REQUESTED}
)
SETTLED_STATES = FINAL_STATES | {JobState.AWAITING_CHECK}
ACTIVE_STATES = (JobState.RUNNING, JobState.RELEASING)  # a worker holds the job: it ends from either
# Not final: the job may still read its datasets, or is held with a result computed from them. The dataset
# versions it recorded are kept on disk (``saferoom.importer.retention``).
UNFINISHED_STATES = frozenset(JobState) - FINAL_STATES
