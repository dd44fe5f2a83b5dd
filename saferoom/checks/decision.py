"""Signed output-check decisions: what a checker's Ed25519 signature covers.

The checker's client recomputes the result hash from the held outputs it was shown (so the signature covers
what the checker saw, not what the server says) and signs, with the key whose public half the authority put in
the checker's certificate, the canonical JSON::

    b"saferoom-output-check-v1\\n" + {"checker", "decided_at", "decision", "job", "reason", "result_hash", "v"}
                                     (sorted keys, no spaces; decided_at in UTC epoch seconds)

The server rebuilds the payload from the job it holds and the caller's name, and verifies before it records;
the ``result_checked`` audit record keeps the payload's fields, the signature and the certificate, so that an
auditor re-verifies every decision from a copy of the log alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from saferoom.errors import InvalidRequest
from saferoom.store.jobs import result_digest  # one definition of a result's hash

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

_PREFIX = b"saferoom-output-check-v1\n"
MAX_REASON = 2000
# A decision must be signed close to when the server receives it: an old signature is not a fresh decision.
DECISION_WINDOW_SECONDS = 600


class Decision(StrEnum):
    """What a checker decides about a held result."""

    APPROVE = "approve"  # release it (with enough approvals)
    REJECT = "reject"  # never release it: a final state with the reason
    REQUEST_CHANGES = "request_changes"  # not as it is: the researcher may change the code and run again


@dataclass(frozen=True)
class SignedDecision:
    """One checker's decision as signed and recorded."""

    job_id: str
    result_hash: str
    decision: Decision
    reason: str
    checker: str
    decided_at: int
    signature: bytes = field(repr=False)
    certificate_pem: bytes = field(repr=False, default=b"")


def checked_reason(decision: Decision, reason: str) -> str:
    """The reason, stripped; required (1 to MAX_REASON characters) unless the decision is an approval."""
    reason = reason.strip()
    if len(reason) > MAX_REASON or (decision is not Decision.APPROVE and not reason):
        what = decision.value.replace("_", " ")
        raise InvalidRequest(f"a reason of 1 to {MAX_REASON} characters is required to {what}")
    return reason


def decision_payload(
    job_id: str, result_hash: str, decision: Decision, reason: str, checker: str, decided_at: int
) -> bytes:
    """The exact bytes a decision signature covers."""
    body = {
        "v": 1,
        "job": job_id,
        "result_hash": result_hash,
        "decision": decision.value,
        "reason": reason,
        "checker": checker,
        "decided_at": int(decided_at),
    }
    return _PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_decision(
    key: ed25519.Ed25519PrivateKey,
    job_id: str,
    result_hash: str,
    decision: Decision,
    reason: str,
    checker: str,
    decided_at: int,
) -> bytes:
    """A checker's signature over ``decision_payload`` (made on the checker's machine)."""
    return key.sign(decision_payload(job_id, result_hash, decision, reason, checker, decided_at))


def verify_decision(decision: SignedDecision, public_key: bytes) -> bool:
    """True if ``public_key`` (raw Ed25519) signed exactly this decision."""
    payload = decision_payload(
        decision.job_id,
        decision.result_hash,
        decision.decision,
        decision.reason,
        decision.checker,
        decision.decided_at,
    )
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(decision.signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True
