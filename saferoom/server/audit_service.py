"""The Audit servicer: the log for auditors, translated to and from protobuf."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from saferoom._proto.saferoom.v1 import audit_pb2 as _audit_pb2
from saferoom._proto.saferoom.v1 import audit_pb2_grpc as _audit_pb2_grpc
from saferoom.audit import AuditFilter, AuditLog, AuditRecord, Checkpoint, EventType
from saferoom.errors import InvalidRequest
from saferoom.server.auth import Caller

__all__ = ["AuditServicer", "record_to_proto"]

MAX_LIMIT = 1_000_000
_EVENTS = frozenset(e.value for e in EventType)


def record_to_proto(record: AuditRecord) -> _audit_pb2.AuditRecord:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(record.ts))
    return _audit_pb2.AuditRecord(
        seq=record.seq,
        ts=ts,
        event=record.event,
        actor=record.actor,
        role=record.role,
        objects_json=json.dumps(record.objects, sort_keys=True),
        summary_json=json.dumps(record.summary, sort_keys=True),
        prev=record.prev,
        hash=record.hash,
    )


def _checkpoint_to_proto(c: Checkpoint) -> _audit_pb2.Checkpoint:
    return _audit_pb2.Checkpoint(covers=c.covers, head=c.head, signature=c.signature, public_key=c.public_key)


def _filter(request: _audit_pb2.ReadLogRequest) -> AuditFilter:
    unknown = set(request.events) - _EVENTS
    if unknown:
        raise InvalidRequest(f"unknown event types: {', '.join(sorted(unknown))[:200]}")
    if request.after_seq < 0 or not 0 <= request.limit <= MAX_LIMIT:
        raise InvalidRequest(f"after_seq must be >= 0 and limit between 0 and {MAX_LIMIT}")
    return AuditFilter(
        after_seq=request.after_seq,
        since=request.since.ToNanoseconds() / 1e9 if request.HasField("since") else None,
        until=request.until.ToNanoseconds() / 1e9 if request.HasField("until") else None,
        actor=request.actor,
        events=frozenset(request.events),
        package=request.package,
        job=request.job,
    )


class AuditServicer(_audit_pb2_grpc.AuditServiceServicer):
    """ReadLog, GetCheckpoint and VerifyLog, for auditors (the permission table says so)."""

    def __init__(self, audit: AuditLog, caller: Caller) -> None:
        self._audit = audit
        self._caller = caller

    def ReadLog(self, request: _audit_pb2.ReadLogRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        wanted = _filter(request)
        if not 0 <= request.tail <= MAX_LIMIT:
            raise InvalidRequest(f"tail must be between 0 and {MAX_LIMIT}")
        if request.tail:
            last = self._audit.last_seq
            recent = deque(self._audit.read(wanted, upto_seq=last), maxlen=request.tail)
            yield from (_audit_pb2.ReadLogResponse(record=record_to_proto(r)) for r in recent)
            if not request.follow:
                return
            wanted = replace(wanted, after_seq=max(wanted.after_seq, last))
        if request.follow:
            records = self._audit.follow(wanted, stop=lambda: not context.is_active())
        else:
            records = self._audit.read(wanted)
        for count, record in enumerate(records, start=1):
            yield _audit_pb2.ReadLogResponse(record=record_to_proto(record))
            if request.limit and count >= request.limit:
                return

    def GetCheckpoint(self, request: _audit_pb2.GetCheckpointRequest, context: Any) -> Any:
        return _audit_pb2.GetCheckpointResponse(checkpoint=_checkpoint_to_proto(self._audit.checkpoint()))

    def VerifyLog(self, request: _audit_pb2.VerifyLogRequest, context: Any) -> Any:
        caller = self._caller(context)
        if len(request.anchors) > 1000:
            raise InvalidRequest("at most 1000 anchors")
        anchors = tuple(Checkpoint(a.covers, a.head, a.signature, a.public_key) for a in request.anchors)
        for anchor in anchors:
            if anchor.public_key and anchor.public_key != self._audit.public_key_raw:
                raise InvalidRequest("an anchor was signed by another audit key than this server's")
            if not anchor.verify(self._audit.public_key):
                raise InvalidRequest(f"the anchor for record {anchor.covers} is not signed by this server's key")
        report = self._audit.verify(anchors)
        summary = {
            "ok": report.ok,
            "records": report.records,
            "checkpoints": report.checkpoints,
            "first_bad_seq": report.first_bad_seq,
            "reason": report.reason,
            "anchors": len(anchors),
        }
        self._audit.append(EventType.LOG_VERIFIED, caller.name, caller.role_names, {}, summary)
        return _audit_pb2.VerifyLogResponse(
            ok=report.ok,
            records=report.records,
            checkpoints=report.checkpoints,
            last_seq=report.last_seq,
            head=report.head,
            first_bad_seq=report.first_bad_seq or 0,
            reason=report.reason,
            decisions=report.decisions,
        )
