"""Hostile input at the transport: bodies that do not decode, and numbers out of range, to every RPC.

Layer that must stop each: the error interceptor (``saferoom/server/errors.py``) for a body that is not a
valid message of the method's type (gRPC itself would answer INTERNAL), the servicer for a number out of
range. Either way the answer is INVALID_ARGUMENT, never INTERNAL, and the server keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from saferoom._proto.saferoom.v1 import audit_pb2 as _audit_pb2
from saferoom._proto.saferoom.v1 import budgets_pb2 as _budgets_pb2
from saferoom._proto.saferoom.v1 import catalog_pb2 as _catalog_pb2
from saferoom._proto.saferoom.v1 import catalog_pb2_grpc as _catalog_pb2_grpc
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from saferoom._proto.saferoom.v1 import review_pb2 as _review_pb2
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

MODULES = (_audit_pb2, _budgets_pb2, _catalog_pb2, _jobs_pb2, _packages_pb2, _review_pb2)
METHODS = sorted(
    (f"/{service.full_name}/{method.name}", method.server_streaming)
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)

# Bodies no protobuf message decodes, whatever its fields: each is refused by the wire format itself.
UNDECODABLE = {
    "truncated_length": b"\x0a\x05ab",  # field 1, length 5, two bytes follow
    "overlong_varint": b"\x08" + b"\xff" * 11,  # a varint longer than 10 bytes
    "truncated_fixed64": b"\x09\x01\x02",  # field 1, eight bytes announced, two follow
    "unmatched_end_group": b"\x0c",  # an end-group tag with no group open
    "wire_type_7": b"\x0f\x00",  # no such wire type
    "random": bytes.fromhex("8f3ac1ffe07b2d99aa00ff17c3"),
}


@pytest.fixture(scope="module")
def bare_server(
    catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    """A real server with nothing submitted: hostile bodies need no packages."""
    srv, _port = create_server(server_config(catalog_dir, tmp_path_factory.mktemp("state"), deployment.pki))
    try:
        yield srv
    finally:
        srv.stop(1.0)


@pytest.fixture(scope="module")
def channel(bare_server: SaferoomServer, deployment: Deployment) -> Iterator[grpc.Channel]:
    with deployment.channel("rex", bare_server.port) as ch:
        yield ch


@pytest.fixture(scope="module")
def auditor_channel(bare_server: SaferoomServer, deployment: Deployment) -> Iterator[grpc.Channel]:
    with deployment.channel("audrey", bare_server.port) as ch:
        yield ch


def test_every_rpc_is_enumerated() -> None:
    assert len(METHODS) >= 20
    assert ("/saferoom.v1.CatalogService/DownloadMock", True) in METHODS


def _raw_call(channel: grpc.Channel, method: str, streaming: bool, body: bytes) -> grpc.RpcError:
    if streaming:
        call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            list(call(body, timeout=20))
    else:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(body, timeout=20)
    return info.value


@pytest.mark.parametrize(("method", "streaming"), METHODS)
def test_an_undecodable_body_is_invalid_argument_on_every_rpc(
    channel: grpc.Channel, method: str, streaming: bool
) -> None:
    for name, body in UNDECODABLE.items():
        error = _raw_call(channel, method, streaming, body)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, name, error.code(), error.details())
        assert "not a valid message" in (error.details() or "")
        assert dict(error.trailing_metadata() or ()).get("saferoom-error-code") == "invalid_request"


def test_bad_utf8_in_a_string_field_is_invalid_argument(channel: grpc.Channel) -> None:
    body = b"\x0a\x02\xc3\x28"  # DescribeDatasetRequest.name = invalid UTF-8
    assert _catalog_pb2.DescribeDatasetRequest.DESCRIPTOR.fields_by_number[1].name == "name"
    error = _raw_call(channel, "/saferoom.v1.CatalogService/DescribeDataset", False, body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("seed", [-1, -(2**63)])
def test_a_negative_mock_seed_is_invalid_argument(channel: grpc.Channel, seed: int) -> None:
    stub = _catalog_pb2_grpc.CatalogServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.DownloadMock(_catalog_pb2.DownloadMockRequest(name="population", rows=10, seed=seed), timeout=20))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "seed" in (info.value.details() or "")


@pytest.mark.parametrize("rows", [-1, 2**62])
def test_a_mock_row_count_out_of_range_is_invalid_argument(channel: grpc.Channel, rows: int) -> None:
    stub = _catalog_pb2_grpc.CatalogServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.DownloadMock(_catalog_pb2.DownloadMockRequest(name="population", rows=rows), timeout=20))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("method", "streaming", "message"),
    [
        ("/saferoom.v1.JobsService/ListJobs", False, _jobs_pb2.ListJobsRequest(page_size=-1)),
        ("/saferoom.v1.JobsService/ListJobs", False, _jobs_pb2.ListJobsRequest(page_size=2**31 - 1)),
        # Enums are open on the wire: a number that is no JobState, or JOB_STATE_UNSPECIFIED, is refused.
        ("/saferoom.v1.JobsService/ListJobs", False, _jobs_pb2.ListJobsRequest(states=[cast(Any, 99)])),
        ("/saferoom.v1.JobsService/ListJobs", False, _jobs_pb2.ListJobsRequest(states=[cast(Any, 0)])),
        ("/saferoom.v1.AuditService/ReadLog", True, _audit_pb2.ReadLogRequest(limit=-1)),
        ("/saferoom.v1.AuditService/ReadLog", True, _audit_pb2.ReadLogRequest(after_seq=-5)),
        ("/saferoom.v1.AuditService/ReadLog", True, _audit_pb2.ReadLogRequest(tail=-1)),
        ("/saferoom.v1.AuditService/ReadLog", True, _audit_pb2.ReadLogRequest(limit=2**31 - 1)),
    ],
)
def test_counts_and_limits_out_of_range_are_invalid_argument(
    channel: grpc.Channel, auditor_channel: grpc.Channel, method: str, streaming: bool, message: object
) -> None:
    caller = auditor_channel if ".AuditService/" in method else channel
    error = _raw_call(caller, method, streaming, message.SerializeToString())  # type: ignore[attr-defined]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())


def test_the_server_keeps_serving_after_hostile_input(channel: grpc.Channel) -> None:
    for method, streaming in METHODS:
        _raw_call(channel, method, streaming, UNDECODABLE["random"])
    stub = _catalog_pb2_grpc.CatalogServiceStub(channel)
    assert stub.ListDatasets(_catalog_pb2.ListDatasetsRequest(), timeout=20).datasets
    chunks = list(stub.DownloadMock(_catalog_pb2.DownloadMockRequest(name="population", rows=10, seed=2**63 - 1)))
    assert chunks[0].dataset.name == "population" and any(c.arrow_ipc for c in chunks[1:])


@pytest.mark.parametrize(
    "request_fields",
    [
        {"since": {"seconds": 10**15}},  # beyond any datetime
        {"since": {"seconds": -(10**15)}},
        {"states": [999]},  # no such state
        {"owner": "x" * 65},
        {"package": "../etc"},
        {"page_size": 101},
    ],
)
def test_bad_job_list_filters_are_invalid_argument(channel: grpc.Channel, request_fields: dict[str, Any]) -> None:
    from saferoom._proto.saferoom.v1 import jobs_pb2_grpc

    request = _jobs_pb2.ListJobsRequest()
    for name, value in request_fields.items():
        if name == "since":
            request.since.seconds = value["seconds"]
        elif name == "states":
            request.states.extend(value)
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.RpcError) as caught:
        jobs_pb2_grpc.JobsServiceStub(channel).ListJobs(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
