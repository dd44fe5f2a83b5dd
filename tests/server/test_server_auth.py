"""Mutual TLS and roles against a real server: every RPC for every role, revocation, and who sees what."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory

from saferoom._proto.saferoom.v1 import (
    audit_pb2,
    budgets_pb2,
    catalog_pb2,
    jobs_pb2,
    mock_pb2,
    packages_pb2,
    review_pb2,
)
from saferoom.errors import AuthenticationFailed, JobNotFound, PackageNotFound, PermissionDenied, SaferoomError
from saferoom.identity import init_authority, issue_identity, revoke_identity
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, make_deployment

SERVICES = [
    s
    for m in (catalog_pb2, packages_pb2, review_pb2, jobs_pb2, audit_pb2, budgets_pb2, mock_pb2)
    for s in m.DESCRIPTOR.services_by_name.values()
]
ALL_METHODS = {f"{s.full_name}/{m.name}": m for s in SERVICES for m in s.methods}

# The expected permissions, written out independently of saferoom.identity.permissions.
CATALOG = {
    "saferoom.v1.CatalogService/ListDatasets",
    "saferoom.v1.CatalogService/DescribeDataset",
    "saferoom.v1.CatalogService/DownloadMock",
    "saferoom.v1.MockService/GetMockInfo",
}
PUBLISH_MOCK = {"saferoom.v1.MockService/SetMockBudget", "saferoom.v1.MockService/PublishMock"}
READ_PACKAGES = {"saferoom.v1.PackagesService/GetPackage", "saferoom.v1.PackagesService/ListPackages",
                 "saferoom.v1.PackagesService/DownloadPackage"}  # fmt: skip
OBSERVE_JOBS = {"saferoom.v1.JobsService/GetJob", "saferoom.v1.JobsService/WatchJob",
                "saferoom.v1.JobsService/ListJobs", "saferoom.v1.JobsService/CancelJob"}  # fmt: skip
REVIEW = {f"saferoom.v1.ReviewService/{m}" for m in ("ListPending", "GetPackageReview", "ApprovePackage",
                                                     "RejectPackage", "RevokeApproval")}  # fmt: skip
LIST_BUDGETS = {
    "saferoom.v1.BudgetsService/ListBudgets"
}  # what each role sees through it: tests/server/test_budgets.py
EXPECTED = {
    "alice": CATALOG | READ_PACKAGES | OBSERVE_JOBS | LIST_BUDGETS | {"saferoom.v1.PackagesService/SubmitPackage",
                                                     "saferoom.v1.JobsService/RunJob",
                                                     "saferoom.v1.JobsService/GetResult"},
    "olga": CATALOG | READ_PACKAGES | OBSERVE_JOBS | REVIEW | LIST_BUDGETS | PUBLISH_MOCK
    | {"saferoom.v1.BudgetsService/SetBudget"},
    "audrey": {"saferoom.v1.AuditService/ReadLog", "saferoom.v1.AuditService/GetCheckpoint",
               "saferoom.v1.AuditService/VerifyLog"}
    | LIST_BUDGETS,
}  # fmt: skip


def test_the_expectations_cover_every_rpc() -> None:
    covered = set().union(*EXPECTED.values())
    assert covered == set(ALL_METHODS), "a new RPC needs a line in EXPECTED and in the permission table"


def call(channel: grpc.Channel, path: str) -> grpc.StatusCode:
    """Call ``path`` with an empty request; the status code it ends with (OK if it succeeds)."""
    method = ALL_METHODS[path]
    request_class = message_factory.GetMessageClass(method.input_type)
    kwargs = {"request_serializer": request_class.SerializeToString, "response_deserializer": lambda b: b}
    try:
        if method.server_streaming:
            for _ in channel.unary_stream(f"/{path}", **kwargs)(request_class(), timeout=10):
                pass
        else:
            channel.unary_unary(f"/{path}", **kwargs)(request_class(), timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("who", sorted(EXPECTED))
@pytest.mark.parametrize("path", sorted(ALL_METHODS))
def test_every_rpc_for_every_role(server: SaferoomServer, deployment: Deployment, who: str, path: str) -> None:
    with deployment.channel(who, server.port) as channel:
        code = call(channel, path)
    if path in EXPECTED[who]:
        assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), code
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_no_certificate_or_a_foreign_one_never_reaches_a_method(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    ca = (deployment.pki / "ca.crt").read_bytes()
    other = make_deployment(tmp_path / "other")  # a whole other authority, with an 'alice' of its own
    foreign = other.profile("alice")
    attempts = {
        "no certificate": grpc.ssl_channel_credentials(root_certificates=ca),
        "another authority": grpc.ssl_channel_credentials(ca, foreign.key.read_bytes(), foreign.cert.read_bytes()),
    }
    for label, credentials in attempts.items():
        with grpc.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
            assert call(channel, "saferoom.v1.CatalogService/ListDatasets") == grpc.StatusCode.UNAVAILABLE, label
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:  # plaintext
        assert call(channel, "saferoom.v1.CatalogService/ListDatasets") == grpc.StatusCode.UNAVAILABLE
    with deployment.client("alice", server.port) as alice:
        assert alice.list_datasets()  # the server kept serving


def test_revocation_is_refused_at_once_and_recorded(catalog_dir: Path, tmp_path: Path, make_config) -> None:
    pki = tmp_path / "pki"
    init_authority(pki)
    for name in ("carol", "dave"):
        issue_identity(pki, name, "researcher")
    refusals: list[tuple[str, str, str, SaferoomError]] = []
    server, port = create_server(
        make_config(catalog_dir, tmp_path / "state", pki), on_refused=lambda *r: refusals.append(r)
    )
    deployment = Deployment(pki)
    try:
        with deployment.client("carol", port) as carol, deployment.client("dave", port) as dave:
            assert carol.list_datasets()
            revoke_identity(pki, "carol")  # no restart, same open connection
            with pytest.raises(AuthenticationFailed) as caught:
                carol.list_datasets()
            assert caught.value.grpc_code == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
            assert "revoked" in caught.value.message
            assert dave.list_datasets()
            with pytest.raises(PermissionDenied):
                dave.list_pending()
        assert [(m, who, roles, type(e).__name__) for m, who, roles, e in refusals] == [
            ("/saferoom.v1.CatalogService/ListDatasets", "carol", "unauthenticated", "AuthenticationFailed"),
            ("/saferoom.v1.ReviewService/ListPending", "dave", "researcher", "PermissionDenied"),
        ]
    finally:
        server.stop(1.0)


@pytest.fixture(scope="module")
def alices_job(server: SaferoomServer, deployment: Deployment) -> Iterator[str]:
    with deployment.client("alice", server.port) as alice:
        job = alice.run_job("echo", {"n": 2})
        assert alice.wait(job.id, timeout=60).state == "succeeded"
        yield job.id


def test_a_researcher_cannot_see_another_researchers_work(
    server: SaferoomServer, deployment: Deployment, alices_job: str
) -> None:
    with deployment.client("alice", server.port) as alice, deployment.client("bob", server.port) as bob:
        echo = alice.get_package("echo")
        for attempt in (
            lambda: bob.get_job(alices_job),
            lambda: bob.get_result(alices_job),
            lambda: bob.cancel_job(alices_job),
            lambda: list(bob.watch_job(alices_job)),
        ):
            with pytest.raises(JobNotFound):  # the same answer as for a job that does not exist
                attempt()
        assert alices_job not in {j.id for j in bob.list_jobs(page_size=100)[0]}
        assert bob.list_packages() == []
        for ref in (echo.hash, "echo", "echo@" + echo.version):
            with pytest.raises(PackageNotFound):
                bob.get_package(ref)
            with pytest.raises(PackageNotFound):
                bob.run_job(ref)  # approved, but bob did not submit it
        with pytest.raises(PackageNotFound):
            bob.download_package(echo.hash)


def test_operators_oversee_but_never_read_results(
    server: SaferoomServer, deployment: Deployment, alices_job: str
) -> None:
    with deployment.client("olga", server.port) as olga:
        assert olga.get_job(alices_job).owner == "alice"
        assert alices_job in {j.id for j in olga.list_jobs(page_size=100)[0]}
        assert {"echo", "site-selection"} <= {p.name for p in olga.list_packages()}
        assert all(p.submitters == ["alice"] for p in olga.list_packages() if p.name == "echo")
        with pytest.raises(PermissionDenied):
            olga.get_result(alices_job)
        with pytest.raises(PermissionDenied):
            olga.run_job("echo")


def test_a_dual_role_identity_may_not_approve_its_own_submission(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    package = tmp_path / "own"
    package.mkdir()
    (package / "saferoom.toml").write_text(
        'name = "own-work"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["schools"]\n'
    )
    (package / "main.py").write_text('def run(ctx):\n    return {"n": ctx.table("schools").agg(n=count())}\n')
    with deployment.client("rex", server.port) as rex, deployment.client("oscar", server.port) as oscar:
        summary, created = rex.submit_package(package)
        assert created and summary.status == "pending"
        with pytest.raises(PermissionDenied, match="submitted themselves"):
            rex.approve_package(summary.hash)
        assert oscar.approve_package(summary.hash).status == "approved"
        job = rex.run_job("own-work")
        assert rex.wait(job.id, timeout=60).state == "succeeded"


def test_every_identity_that_called_is_recorded_with_its_certificate(
    server: SaferoomServer, deployment: Deployment
) -> None:
    from saferoom.store import IdentityStore

    with deployment.client("audrey", server.port) as audrey, pytest.raises(PermissionDenied):
        audrey.list_datasets()
    records = {r.name: r for r in IdentityStore(server.database).list_identities()}
    assert {"alice", "olga", "audrey"} <= set(records)
    assert records["olga"].roles == "operator"
    assert records["audrey"].certificate_pem == (deployment.pki / "identities" / "audrey" / "cert.pem").read_bytes()
