"""Jobs: the lifecycle of a run, the pipeline that executes it, and the service that schedules it."""

from saferoom.jobs.checking import CheckService, HeldView
from saferoom.jobs.pipeline import JobOutcome, Pipeline, ReleasedOutput
from saferoom.jobs.service import JobService, table_to_ipc
from saferoom.jobs.state import FINAL_STATES, SETTLED_STATES, JobState

__all__ = [
    "FINAL_STATES",
    "SETTLED_STATES",
    "CheckService",
    "HeldView",
    "JobOutcome",
    "JobService",
    "JobState",
    "Pipeline",
    "ReleasedOutput",
    "table_to_ipc",
]
