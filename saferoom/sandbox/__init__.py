"""The sandbox: RestrictedPython policy, confined pre-forked workers, and the algorithm runner."""

from saferoom.sandbox.limits import Limits
from saferoom.sandbox.pool import Reply, WorkerPool

__all__ = ["Limits", "Reply", "WorkerPool"]
