"""The Checks servicer: output checkers' review of held results, translated to and from protobuf."""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from saferoom._proto.saferoom.v1 import checks_pb2 as _checks_pb2
from saferoom._proto.saferoom.v1 import checks_pb2_grpc as _checks_pb2_grpc
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom.checks import Decision
from saferoom.errors import InvalidRequest
from saferoom.jobs import CheckService, HeldView
from saferoom.server import convert
from saferoom.server.auth import Caller
from saferoom.wire import enum_to_proto

__all__ = ["ChecksServicer", "held_to_proto"]

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_DECISIONS = {
    _checks_pb2.CHECK_DECISION_APPROVE: Decision.APPROVE,
    _checks_pb2.CHECK_DECISION_REJECT: Decision.REJECT,
    _checks_pb2.CHECK_DECISION_REQUEST_CHANGES: Decision.REQUEST_CHANGES,
}
_DECISION_CODES = {d: code for code, d in _DECISIONS.items()}


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _job_id(value: str) -> str:
    if not _JOB_ID.match(value):
        raise InvalidRequest("job_id must be 32 lowercase hex characters")
    return value


def held_to_proto(view: HeldView, full: bool = True) -> _checks_pb2.HeldResult:
    """A held result; ``full`` adds the outputs, the printed text and the package files."""
    held = view.held
    out = _checks_pb2.HeldResult(
        job=convert.job_to_proto(view.job),
        result_hash=held.result_hash,
        checkers_required=held.checkers_required,
        submitters=list(view.submitters),
        held_at=_timestamp(held.held_at),
        decisions=[
            _checks_pb2.CheckDecisionRecord(
                checker=d.checker,
                decision=_DECISION_CODES[Decision(d.decision)],
                reason=d.reason,
                decided_at=_timestamp(float(d.decided_at)),
                signature=d.signature,
            )
            for d in held.decisions
        ],
    )
    if full:
        checks = {str(c.get("output")): c for c in held.checks}
        for o in view.result.outputs:
            check = checks.get(o.name, {})
            out.outputs.append(
                _checks_pb2.HeldOutput(
                    name=o.name,
                    kind=enum_to_proto(_jobs_pb2.OutputKind, o.kind),
                    arrow_ipc=o.arrow_ipc or b"",
                    value_json=o.value_json or "",
                    report_json=o.report_json,
                    check_json=json.dumps(check.get("check", {}), sort_keys=True),
                    flags=[str(f) for f in check.get("flags", [])],
                )
            )
        out.printed = str(view.result.report.get("printed", ""))
        out.files.extend(convert.files_to_proto(view.package))
    return out


class ChecksServicer(_checks_pb2_grpc.ChecksServiceServicer):
    """List, show and decide on held results."""

    def __init__(self, checks: CheckService, caller: Caller) -> None:
        self._checks = checks
        self._caller = caller

    def ListHeld(self, request: _checks_pb2.ListHeldRequest, context: Any) -> Any:
        views = self._checks.list_held(self._caller(context))
        return _checks_pb2.ListHeldResponse(held=[held_to_proto(v, full=False) for v in views])

    def GetHeld(self, request: _checks_pb2.GetHeldRequest, context: Any) -> Any:
        held = held_to_proto(self._checks.get_held(_job_id(request.job_id), self._caller(context)))
        return _checks_pb2.GetHeldResponse(held=held)

    def Decide(self, request: _checks_pb2.DecideRequest, context: Any) -> Any:
        caller = self._caller(context)
        decision = _DECISIONS.get(request.decision)
        if decision is None:
            raise InvalidRequest("decision must be approve, reject or request_changes")
        if not _HASH.match(request.result_hash):
            raise InvalidRequest("result_hash must be 64 lowercase hex characters")
        if len(request.signature) != 64:
            raise InvalidRequest("signature must be a 64-byte Ed25519 signature")
        if len(request.reason) > 4 * 2000:
            raise InvalidRequest("the reason is too long")
        job_id = _job_id(request.job_id)
        self._checks.decide(
            job_id, caller, decision, request.reason, request.decided_at, request.signature, request.result_hash
        )
        return _checks_pb2.DecideResponse(held=held_to_proto(self._checks.get_held(job_id, caller)))
