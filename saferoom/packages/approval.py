"""Signed approvals: what an operator's Ed25519 signature covers, and how every run re-checks it.

The operator's client computes the payload from the files it reviewed (so the signature covers what the
operator saw, not what the server says) and signs it with the operator's signing key; the server rebuilds the
same payload from the stored package and verifies the signature with the public key that the deployment's
certificate authority put in the operator's certificate. The payload is canonical JSON:

    b"saferoom-approval-v1\\n" + {"approver", "datasets", "name", "not_after", "not_before", "package",
                                  "parameters", "v", "version"}  (sorted keys, no spaces, UTC epoch seconds)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from saferoom.errors import AuthenticationFailed, NotApproved
from saferoom.identity import Role, TrustStore
from saferoom.packages.package import Package

__all__ = [
    "Approval",
    "approval_payload",
    "parameter_schema",
    "sign_approval",
    "verify_approval",
    "verify_signature",
]

_PREFIX = b"saferoom-approval-v1\n"
# (public key, signature, signed payload) triples whose Ed25519 signature verified: a pure function of the three,
# so a job start re-checks who signed (the certificate, its revocation, the operator role) and what the payload
# covers, but not the same curve arithmetic twice. Bounded; cleared whole when full.
_VERIFIED: set[tuple[bytes, bytes, bytes]] = set()
_VERIFIED_LOCK = threading.Lock()
_VERIFIED_MAX = 4096


def parameter_schema(package: Package) -> dict[str, dict[str, Any]]:
    """The parameter schema as plain data: part of what an approval covers."""
    return {
        name: {
            "type": spec.type,
            "default": spec.default,
            "min": spec.min,
            "max": spec.max,
            "choices": None if spec.choices is None else list(spec.choices),
        }
        for name, spec in sorted(package.parameters.items())
    }


def approval_payload(package: Package, approver: str, not_before: int, not_after: int) -> bytes:
    """The exact bytes an approval signature covers."""
    body = {
        "v": 1,
        "package": package.hash,
        "name": package.name,
        "version": package.version,
        "datasets": sorted(package.datasets),
        "parameters": parameter_schema(package),
        "approver": approver,
        "not_before": int(not_before),
        "not_after": int(not_after),
    }
    return _PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def sign_approval(
    key: ed25519.Ed25519PrivateKey, package: Package, approver: str, not_before: int, not_after: int
) -> bytes:
    """An operator's signature over ``approval_payload`` (done on the operator's machine)."""
    return key.sign(approval_payload(package, approver, not_before, not_after))


@dataclass(frozen=True)
class Approval:
    """One approval decision as stored; valid only while ``verify_approval`` says so."""

    package_hash: str
    approver: str
    not_before: int
    not_after: int
    signature: bytes = field(repr=False)
    certificate_pem: bytes = field(repr=False)
    decided_at: float = 0.0
    revoked_by: str | None = None
    revoke_reason: str | None = None

    def in_effect(self, now: float) -> bool:
        return self.not_before <= now < self.not_after

    def describe_validity(self) -> str:
        fmt = "%Y-%m-%d %H:%M UTC"  # time.gmtime: datetime.fromtimestamp took 0.1 ms a call, twice per job start
        start, end = (time.strftime(fmt, time.gmtime(t)) for t in (self.not_before, self.not_after))
        return f"{start} to {end}"


def verify_signature(approval: Approval, package: Package, trust: TrustStore) -> None:
    """Raise ``NotApproved`` unless an operator the authority vouches for signed exactly this approval."""
    if approval.package_hash != package.hash:
        raise NotApproved(f"the approval on record is for another package than {package.ref}")
    try:
        approver = trust.identify(approval.certificate_pem, at=datetime.fromtimestamp(approval.decided_at, UTC))
    except AuthenticationFailed as exc:
        raise NotApproved(f"the approval of {package.ref} is no longer vouched for: {exc.message}") from None
    if approver.name != approval.approver or not approver.has(Role.OPERATOR) or approver.signing_key is None:
        raise NotApproved(f"the approval of {package.ref} was not made by an operator of this deployment")
    payload = approval_payload(package, approval.approver, approval.not_before, approval.not_after)
    checked = (approver.signing_key, approval.signature, payload)
    if checked in _VERIFIED:  # the same key, signature and signed bytes verified before: the same answer
        return
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(approver.signing_key).verify(approval.signature, payload)
    except (InvalidSignature, ValueError):
        raise NotApproved(f"the approval signature of {package.ref} does not verify") from None
    with _VERIFIED_LOCK:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED.add(checked)


def verify_approval(approval: Approval, package: Package, trust: TrustStore, now: float | None = None) -> None:
    """Raise ``NotApproved`` (with the reason) unless ``approval`` lets ``package`` run now."""
    if approval.revoked_by is not None:
        raise NotApproved(
            f"the approval of {package.ref} was revoked by {approval.revoked_by}: {approval.revoke_reason}"
        )
    verify_signature(approval, package, trust)
    if not approval.in_effect(time.time() if now is None else now):
        raise NotApproved(f"the approval of {package.ref} is not in effect (valid {approval.describe_validity()})")
