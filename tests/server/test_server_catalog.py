"""Catalog service, health, reflection and message limits against a real server."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import jobs_pb2_grpc as _jobs_pb2_grpc
from saferoom.catalog import Catalog
from saferoom.client import Client
from saferoom.server import SaferoomServer


def test_list_and_describe(client: Client) -> None:
    names = {d.name for d in client.list_datasets()}
    assert {
        "population",
        "housing_transactions",
        "bus_stops",
        "schools",
        "land_use",
        "convenience_stores",
    } <= names
    population = client.describe_dataset("population")
    assert population.sensitivity == "personal"
    assert population.privacy_unit == "person_id"
    assert population.policy.min_contributors == 10
    income = population.column("income")
    assert income.min is not None and income.max is not None
    assert client.describe_dataset("bus_stops").is_public


def test_mock_download_has_the_schema_but_not_the_rows(client: Client, catalog_dir) -> None:
    _, mock = client.download_mock("population", rows=500, seed=1)
    assert mock.num_rows == 500
    real = Catalog.open(catalog_dir)
    try:
        real_table = real.table("population")
        assert mock.column_names == real_table.column_names
        assert set(mock.column("income").to_pylist()).isdisjoint(set(real_table.column("income").to_pylist()))
    finally:
        real.close()
    again = client.download_mock("population", rows=500, seed=1)[1]
    assert again.equals(mock)


def test_health_and_reflection(server: SaferoomServer, deployment) -> None:
    with deployment.channel("audrey", server.port) as channel:  # any authenticated identity may ask
        health = health_pb2_grpc.HealthStub(channel)
        for service in (
            "",
            "saferoom.v1.JobsService",
            "saferoom.v1.CatalogService",
            "saferoom.v1.PackagesService",
            "saferoom.v1.ReviewService",
        ):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for r in replies for s in r.list_services_response.service}
        assert {
            "saferoom.v1.JobsService",
            "saferoom.v1.CatalogService",
            "saferoom.v1.ReviewService",
            "grpc.health.v1.Health",
        } <= services


def test_oversized_message_is_refused_and_server_keeps_serving(
    server: SaferoomServer, client: Client, deployment
) -> None:
    options = [("grpc.max_send_message_length", 256 * 2**20)]
    with deployment.channel("alice", server.port, options) as channel:
        stub = _jobs_pb2_grpc.JobsServiceStub(channel)
        huge = _jobs_pb2.RunJobRequest(package="echo", params={"label": _jobs_pb2.Value(str_value="x" * 80 * 2**20)})
        with pytest.raises(grpc.RpcError) as info:
            stub.RunJob(huge, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.list_datasets()


def test_unknown_method_is_unimplemented(server: SaferoomServer, deployment) -> None:
    with deployment.channel("alice", server.port) as channel:
        call = channel.unary_unary("/saferoom.v1.JobsService/DropAllTables")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_busy_port_is_a_clear_error(server: SaferoomServer, catalog_dir, deployment, tmp_path, make_config) -> None:
    from saferoom.errors import Unavailable
    from saferoom.server import create_server

    with pytest.raises(Unavailable, match="cannot listen"):
        create_server(make_config(catalog_dir, tmp_path, deployment.pki, listen=f"127.0.0.1:{server.port}"))
