"""Attacks on approvals: someone with write access to the server's disk, or a researcher, tries to make an
unapproved or altered package run. Each must be refused with FAILED_PRECONDITION and a clear reason."""

from __future__ import annotations

import io
import sqlite3
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from saferoom.client import Client
from saferoom.errors import InvalidRequest, NotApproved, PackageTampered, PermissionDenied
from saferoom.identity import init_authority, issue_identity, revoke_identity
from saferoom.packages import package_from_files, sign_approval
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, make_deployment


def package_files(name: str) -> dict[str, bytes]:
    """A small valid package whose content (and so hash) is unique to this call."""
    manifest = f'name = "{name}"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["bus_stops"]\n'
    source = f'# {uuid.uuid4().hex}\ndef run(ctx):\n    return {{"n": ctx.table("bus_stops").agg(n=count())}}\n'
    return {"saferoom.toml": manifest.encode(), "main.py": source.encode()}


@pytest.fixture
def alice(server: SaferoomServer, deployment: Deployment) -> Iterator[Client]:
    with deployment.client("alice", server.port) as c:
        yield c


@pytest.fixture
def olga(server: SaferoomServer, deployment: Deployment) -> Iterator[Client]:
    with deployment.client("olga", server.port) as c:
        yield c


def approved(alice: Client, olga: Client, name: str, days: float = 30) -> str:
    summary, _ = alice.submit_package(package_files(name))
    olga.approve_package(summary.hash, days=days)
    job = alice.run_job(summary.hash)
    assert alice.wait(job.id, timeout=60).state == "succeeded"  # it runs before the attack
    return summary.hash


def refused(alice: Client, ref: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as caught:
        alice.run_job(ref)
    assert caught.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert fragment in str(caught.value)


def blob(server: SaferoomServer, package_hash: str) -> Path:
    return server.database.path.parent / "packages" / package_hash[:2] / f"{package_hash}.zip"


def edit_db(server: SaferoomServer, sql: str, *args: object) -> None:
    """Write to the server's SQLite file from outside, as an attacker with disk access would."""
    with sqlite3.connect(server.database.path) as conn:
        assert conn.execute(sql, args).rowcount >= 1


def test_a_stored_file_changed_after_approval(server: SaferoomServer, alice: Client, olga: Client) -> None:
    package_hash = approved(alice, olga, "tamper-file")
    path = blob(server, package_hash)
    archive = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    files = {n: archive.read(n) for n in archive.namelist()}
    files["main.py"] = b'def run(ctx):\n    return {"rows": ctx.table("bus_stops")}\n'
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, c in files.items():
            z.writestr(n, c)
    path.write_bytes(out.getvalue())
    refused(alice, package_hash, PackageTampered, "no longer match its hash")
    assert alice.get_package(package_hash).status == "invalid"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "deleted"])
def test_a_stored_file_damaged(server: SaferoomServer, alice: Client, olga: Client, damage: str) -> None:
    package_hash = approved(alice, olga, f"damaged-{damage}")
    path = blob(server, package_hash)
    if damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-30])
    else:
        path.unlink()
    refused(alice, package_hash, PackageTampered, "stored files")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("not_after", 4_102_444_800),  # extend the validity to 2100
        ("not_before", 0),
        ("actor", "oscar"),  # claim another operator approved it
        ("signature", bytes(64)),
    ],
)
def test_an_approval_record_edited_in_sqlite(
    server: SaferoomServer, alice: Client, olga: Client, column: str, value: object
) -> None:
    package_hash = approved(alice, olga, f"edited-{column.replace('_', '-')}")
    edit_db(server, f"UPDATE package_decisions SET {column} = ? WHERE package_hash = ?", value, package_hash)
    refused(alice, package_hash, NotApproved, "approval")
    assert alice.get_package(package_hash).status == "invalid"


def test_an_approval_row_pointing_at_a_researchers_certificate(
    server: SaferoomServer, deployment: Deployment, alice: Client, olga: Client
) -> None:
    package_hash = approved(alice, olga, "cert-swap")
    researcher_cert = (deployment.pki / "identities" / "alice" / "cert.pem").read_bytes()
    edit_db(server, "UPDATE package_decisions SET certificate_pem = ?, actor = 'alice' WHERE package_hash = ?",
            researcher_cert, package_hash)  # fmt: skip
    refused(alice, package_hash, NotApproved, "not made by an operator")


def test_an_approval_row_signed_by_a_key_no_operator_holds(
    server: SaferoomServer, deployment: Deployment, alice: Client
) -> None:
    """Alice inserts an approval of her own package, signed with a key she made, naming olga."""
    summary, _ = alice.submit_package(package_files("self-signed"))
    package = package_from_files(alice.download_package(summary.hash)[1])
    now = int(time.time())
    signature = sign_approval(ed25519.Ed25519PrivateKey.generate(), package, "olga", now - 10, now + 86_400)
    olga_cert = (deployment.pki / "identities" / "olga" / "cert.pem").read_bytes()
    with sqlite3.connect(server.database.path) as conn:
        conn.execute(
            "INSERT INTO package_decisions (package_hash, kind, actor, reason, decided_at, not_before, not_after,"
            " signature, certificate_pem) VALUES (?, 'approved', 'olga', '', ?, ?, ?, ?, ?)",
            (summary.hash, now, now - 10, now + 86_400, signature, olga_cert),
        )
    refused(alice, summary.hash, NotApproved, "signature")


def test_an_approval_copied_from_another_package(server: SaferoomServer, alice: Client, olga: Client) -> None:
    source_hash = approved(alice, olga, "copy-source")
    target, _ = alice.submit_package(package_files("copy-target"))
    edit_db(
        server,
        "INSERT INTO package_decisions (package_hash, kind, actor, reason, decided_at, not_before, not_after,"
        " signature, certificate_pem) SELECT ?, kind, actor, reason, decided_at, not_before, not_after, signature,"
        " certificate_pem FROM package_decisions WHERE package_hash = ?",
        target.hash,
        source_hash,
    )
    refused(alice, target.hash, NotApproved, "signature")


def test_a_researcher_cannot_approve(server: SaferoomServer, deployment: Deployment, alice: Client) -> None:
    summary, _ = alice.submit_package(package_files("diy-approval"))
    package = package_from_files(alice.download_package(summary.hash)[1])
    now = int(time.time())
    key = ed25519.Ed25519PrivateKey.generate()
    from saferoom._proto.saferoom.v1 import review_pb2, review_pb2_grpc

    request = review_pb2.ApprovePackageRequest(
        hash=summary.hash,
        not_before=now,
        not_after=now + 3600,
        signature=sign_approval(key, package, "alice", now, now + 3600),
    )
    with deployment.channel("alice", server.port) as channel, pytest.raises(grpc.RpcError) as caught:
        review_pb2_grpc.ReviewServiceStub(channel).ApprovePackage(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    refused(alice, summary.hash, NotApproved, "awaiting review")


def test_an_operator_cannot_present_a_signature_of_other_content(
    server: SaferoomServer, deployment: Deployment, alice: Client
) -> None:
    """Olga's client signs one package; the request names another: the server rebuilds the payload and refuses."""
    reviewed, _ = alice.submit_package(package_files("signed-one"))
    other, _ = alice.submit_package(package_files("signed-other"))
    from saferoom._proto.saferoom.v1 import review_pb2, review_pb2_grpc
    from saferoom.identity import load_signing_key

    package = package_from_files(alice.download_package(reviewed.hash)[1])
    key = load_signing_key(deployment.pki / "identities" / "olga" / "signing.key")
    now = int(time.time())
    request = review_pb2.ApprovePackageRequest(
        hash=other.hash,
        not_before=now,
        not_after=now + 3600,
        signature=sign_approval(key, package, "olga", now, now + 3600),
    )
    with deployment.channel("olga", server.port) as channel, pytest.raises(grpc.RpcError) as caught:
        review_pb2_grpc.ReviewServiceStub(channel).ApprovePackage(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not verify" in caught.value.details()


@pytest.mark.parametrize("days", [float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 1e300, 3651.0])
def test_an_approval_for_a_senseless_number_of_days_is_refused_before_signing(
    alice: Client, olga: Client, days: float
) -> None:
    summary, _ = alice.submit_package(package_files("any-days"))
    with pytest.raises(InvalidRequest, match="between 0 and 3650"):
        olga.approve_package(summary.hash, days=days)
    assert olga.get_package(summary.hash).status == "pending"


def test_an_expired_approval(alice: Client, olga: Client) -> None:
    package_hash = approved(alice, olga, "short-lived", days=3 / 86_400)  # valid for 3 seconds
    time.sleep(3.5)
    refused(alice, package_hash, NotApproved, "not approved")
    assert alice.get_package(package_hash).status == "expired"
    assert olga.approve_package(package_hash, days=1).status == "approved"  # renewal is a new signature
    alice.run_job(package_hash)


def test_a_revoked_approval_and_a_revoked_operator(catalog_dir: Path, tmp_path: Path, make_config) -> None:
    deployment = make_deployment(tmp_path / "pki")
    server, port = create_server(make_config(catalog_dir, tmp_path / "state", deployment.pki))
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            first = approved(alice, olga, "revoke-me")
            olga.revoke_approval(first, "found a flaw")
            refused(alice, first, NotApproved, "found a flaw")
            second = approved(alice, olga, "signed-by-olga")
            revoke_identity(deployment.pki, "olga")  # her key may have leaked: her signatures stop counting
            refused(alice, second, NotApproved, "no longer vouched for")
    finally:
        server.stop(1.0)


def test_an_approval_revoked_while_the_job_waits_in_the_queue(catalog_dir: Path, tmp_path: Path, make_config) -> None:
    pki = tmp_path / "pki"
    init_authority(pki)
    issue_identity(pki, "alice", "researcher")
    issue_identity(pki, "olga", "operator")
    deployment = Deployment(pki)
    server, port = create_server(make_config(catalog_dir, tmp_path / "state", pki, max_concurrent_jobs=1))
    forever = Path(__file__).resolve().parents[1] / "fixtures" / "packages" / "forever"
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            blocker, _ = alice.submit_package(forever)
            olga.approve_package(blocker.hash)
            waiting_hash = approved(alice, olga, "queued-then-revoked")
            running = alice.run_job(blocker.hash)
            queued = alice.run_job(waiting_hash)
            olga.revoke_approval(waiting_hash, "withdrawn while queued")
            alice.cancel_job(running.id)
            final = alice.wait(queued.id, timeout=60)
            assert final.state == "failed" and final.error_code == "not_approved"
            assert "withdrawn while queued" in final.error_message
    finally:
        server.stop(1.0)


def test_self_approval_through_a_second_identity_name_is_still_refused(
    server: SaferoomServer, deployment: Deployment
) -> None:
    """rex (researcher + operator) submits; the same content submitted by alice later does not launder it."""
    files = package_files("launder")
    with deployment.client("rex", server.port) as rex, deployment.client("alice", server.port) as alice:
        summary, _ = rex.submit_package(files)
        again, created = alice.submit_package(files)
        assert again.hash == summary.hash and not created
        with pytest.raises(PermissionDenied):
            rex.approve_package(summary.hash)
