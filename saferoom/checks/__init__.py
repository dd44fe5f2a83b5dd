"""Output checking: what an output checker's signed decision on a held result covers, and how it verifies.

Pure functions (no storage, no gRPC), shared by the checker's client (which signs), the server (which verifies
before recording) and offline audit verification (which re-verifies from the log). The held-result workflow
itself is ``saferoom.jobs.checking``.
"""

from saferoom.checks.decision import (
    DECISION_WINDOW_SECONDS,
    MAX_REASON,
    Decision,
    SignedDecision,
    checked_reason,
    decision_payload,
    result_digest,
    sign_decision,
    verify_decision,
)

__all__ = [
    "DECISION_WINDOW_SECONDS",
    "MAX_REASON",
    "Decision",
    "SignedDecision",
    "checked_reason",
    "decision_payload",
    "result_digest",
    "sign_decision",
    "verify_decision",
]
