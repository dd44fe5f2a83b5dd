"""Jobs: the lifecycle of a run, the pipeline that executes it, and the service that schedules it.

The names below are imported on first use (PEP 562), not with the package: the engine worker's zygote imports
``saferoom.jobs.engine_task`` alone, and every module it does not need is memory each worker's fork copies the
page tables of (the service, the pipeline and the checkers bring the audit log, the DP samplers and the
disclosure rules: 21 MB of private memory in the zygote, measured).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saferoom.jobs.checking import CheckService, HeldView
    from saferoom.jobs.pipeline import JobOutcome, Pipeline, ReleasedOutput
    from saferoom.jobs.service import JobService, table_to_ipc
    from saferoom.jobs.state import FINAL_STATES, SETTLED_STATES, JobState

_HOMES = {
    "CheckService": "checking",
    "HeldView": "checking",
    "JobOutcome": "pipeline",
    "Pipeline": "pipeline",
    "ReleasedOutput": "pipeline",
    "JobService": "service",
    "table_to_ipc": "service",
    "FINAL_STATES": "state",
    "SETTLED_STATES": "state",
    "JobState": "state",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"saferoom.jobs.{home}"), name)
