"""The Mock servicer: publication budgets, publications and mock data descriptions, to and from protobuf."""

from __future__ import annotations

import math
from typing import Any

from saferoom._proto.saferoom.v1 import mock_pb2 as _mock_pb2
from saferoom._proto.saferoom.v1 import mock_pb2_grpc as _mock_pb2_grpc
from saferoom.errors import InvalidRequest
from saferoom.mock import MockInfo, MockKind, MockService
from saferoom.server.auth import Caller
from saferoom.store.budgets import epsilon_value

__all__ = ["MockServicer", "mock_info_to_proto"]

_KINDS = {
    MockKind.SYNTHETIC: _mock_pb2.MOCK_KIND_SYNTHETIC,
    MockKind.DECLARED_DOMAIN: _mock_pb2.MOCK_KIND_DECLARED_DOMAIN,
    MockKind.PUBLIC_ROWS: _mock_pb2.MOCK_KIND_PUBLIC_ROWS,
}


def _fidelity(values: dict[str, float]) -> list[_mock_pb2.MarginalFidelity]:
    return [_mock_pb2.MarginalFidelity(marginal=k, tvd=v) for k, v in sorted(values.items())]


def mock_info_to_proto(info: MockInfo) -> _mock_pb2.MockInfo:
    """A ``MockInfo`` as the domain built it for the caller (operator-only fields are None otherwise)."""
    out = _mock_pb2.MockInfo(
        dataset=info.dataset,
        kind=_KINDS[info.kind],
        label=info.label,
        version=info.version,
        epsilon=info.epsilon,
        delta=info.delta,
        structure=list(info.structure),
        rows=info.rows,
        estimated=_fidelity(info.estimated),
        note=info.note,
        measured=_fidelity(info.measured or {}),
        published_by=info.published_by,
        dataset_hash=info.dataset_hash,
    )
    for name in ("mean_tvd_structure", "budget_epsilon_total", "budget_epsilon_spent"):
        value = getattr(info, name)
        if value is not None:
            setattr(out, name, value)
    return out


def _epsilon(value: float) -> float:
    if not math.isfinite(value):
        raise InvalidRequest("epsilon must be a finite number")
    return value


class MockServicer(_mock_pb2_grpc.MockServiceServicer):
    """Thin: proto -> ``MockService`` -> proto."""

    def __init__(self, mock: MockService, caller: Caller) -> None:
        self._mock = mock
        self._caller = caller

    def SetMockBudget(self, request: _mock_pb2.SetMockBudgetRequest, context: Any) -> Any:
        budget = self._mock.set_budget(request.dataset, _epsilon(request.epsilon), self._caller(context))
        return _mock_pb2.SetMockBudgetResponse(
            dataset=budget.dataset,
            epsilon_total=epsilon_value(budget.epsilon_total),
            epsilon_spent=epsilon_value(budget.epsilon_spent),
            epsilon_remaining=epsilon_value(budget.epsilon_remaining),
        )

    def PublishMock(self, request: _mock_pb2.PublishMockRequest, context: Any) -> Any:
        info = self._mock.publish(request.dataset, _epsilon(request.epsilon), self._caller(context))
        return _mock_pb2.PublishMockResponse(info=mock_info_to_proto(info))

    def GetMockInfo(self, request: _mock_pb2.GetMockInfoRequest, context: Any) -> Any:
        info = self._mock.info(request.dataset, self._caller(context))
        return _mock_pb2.GetMockInfoResponse(info=mock_info_to_proto(info))
