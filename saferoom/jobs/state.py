"""The job lifecycle, as an explicit state machine.

    QUEUED ──► RUNNING ──► SUCCEEDED
       │          ├──────► FAILED      (error_code + error_message say why, for the researcher)
       │          └──────► CANCELLED
       └─────────────────► CANCELLED

A job is QUEUED once acknowledged to the client (persisted first), RUNNING while its worker processes work,
and ends in exactly one final state. Transitions are compare-and-set in the store, so repeating one is
harmless and two racing threads cannot both win. After a server crash, QUEUED jobs run again and RUNNING jobs
are marked FAILED ("interrupted"): never silently lost, never run twice.
"""

from __future__ import annotations

import enum

__all__ = ["FINAL_STATES", "JobState"]


class JobState(enum.StrEnum):
    """Where a job is in its lifecycle (stored as these strings)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
