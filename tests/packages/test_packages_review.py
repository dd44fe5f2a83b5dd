"""The review workflow in the domain (no gRPC): real SQLite, real files, real certificates and signatures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.audit import AuditLog
from saferoom.errors import (
    InvalidRequest,
    NotApproved,
    PackageNotFound,
    PermissionDenied,
    ReviewConflict,
)
from saferoom.identity import Identity, TrustStore, init_authority, issue_identity, load_signing_key
from saferoom.packages import (
    Package,
    PackageService,
    PackageStatus,
    approval_payload,
    package_from_files,
    sign_approval,
)
from saferoom.sandbox.policy import compile_package
from saferoom.store import Database, PackageStore

DAY = 86_400


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def files(version: str = "1.0.0", body: str = "ctx.table('schools').agg(n=count())") -> dict[str, bytes]:
    manifest = (
        f'name = "review-me"\nversion = "{version}"\nentrypoint = "main.py:run"\ndatasets = ["schools"]\n'
        '[parameters]\nk = { type = "int", default = 3, min = 1, max = 9 }\n'
    )
    return {"saferoom.toml": manifest.encode(), "main.py": f"def run(ctx, k=3):\n    return {{'n': {body}}}\n".encode()}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[PackageService, dict[str, Identity], Path, Clock]]:
    pki = tmp_path / "pki"
    init_authority(pki)
    for name, roles in {
        "alice": "researcher",
        "bob": "researcher",
        "olga": "operator",
        "rex": "researcher,operator",
    }.items():
        issue_identity(pki, name, roles)
    trust = TrustStore(pki)
    people = {
        n: trust.identify((pki / "identities" / n / "cert.pem").read_bytes()) for n in ("alice", "bob", "olga", "rex")
    }
    db = Database.open(tmp_path / "state.db")
    clock = Clock()

    def check(package: Package) -> None:
        compile_package({n: package.source(n) for n in package.files if n.endswith(".py")})

    audit = AuditLog(tmp_path / "audit", db)
    store = PackageStore(db, tmp_path / "packages")
    service = PackageService(store, trust, ["schools", "population"], check, audit, 365, clock)
    yield service, people, pki, clock
    audit.close()
    db.close()


def approve(service: PackageService, pki: Path, who: Identity, package_hash: str, start: float, days: float) -> None:
    package = package_from_files(dict(service.get(package_hash, who).package.files))
    key = load_signing_key(pki / "identities" / who.name / "signing.key")
    not_before, not_after = int(start), int(start + days * DAY)
    service.approve(
        package_hash, who, not_before, not_after, sign_approval(key, package, who.name, not_before, not_after)
    )


def test_the_whole_lifecycle(world) -> None:
    service, people, pki, clock = world
    view, created = service.submit(files(), people["alice"])
    assert created and view.status is PackageStatus.PENDING
    assert [v.record.hash for v in service.pending()] == [view.record.hash]
    with pytest.raises(NotApproved, match="awaiting review"):
        service.authorize_run("review-me", people["alice"], {})
    approve(service, pki, people["olga"], view.record.hash, clock.now, 10)
    assert service.get(view.record.hash, people["alice"]).status is PackageStatus.APPROVED
    assert service.pending() == []
    _, params, datasets = service.authorize_run("review-me@1.0.0", people["alice"], {"k": 5})
    assert params == {"k": 5} and datasets == ("schools",)
    with pytest.raises(NotApproved, match="parameters outside"):
        service.authorize_run("review-me", people["alice"], {"k": 10})
    with pytest.raises(NotApproved, match="datasets outside"):
        service.authorize_run("review-me", people["alice"], {}, ["population"])
    with pytest.raises(ReviewConflict, match="already approved"):
        approve(service, pki, people["olga"], view.record.hash, clock.now, 10)
    with pytest.raises(ReviewConflict):
        service.reject(view.record.hash, people["olga"], "too late")
    clock.now += 11 * DAY
    assert service.get(view.record.hash, people["alice"]).status is PackageStatus.EXPIRED
    with pytest.raises(NotApproved):
        service.verify_run(view.record.hash, {}, ("schools",))
    approve(service, pki, people["olga"], view.record.hash, clock.now, 10)  # renewed
    service.revoke(view.record.hash, people["olga"], "a flaw in line 2")
    revoked = service.get(view.record.hash, people["alice"])
    assert revoked.status is PackageStatus.REVOKED and "a flaw in line 2" in revoked.status_reason
    with pytest.raises(ReviewConflict):
        service.revoke(view.record.hash, people["olga"], "twice")


def test_reject_needs_a_reason_and_a_pending_package(world) -> None:
    service, people, _, _ = world
    view, _ = service.submit(files(), people["alice"])
    for reason in ("", "   ", "x" * 3000):
        with pytest.raises(InvalidRequest):
            service.reject(view.record.hash, people["olga"], reason)
    rejected = service.reject(view.record.hash, people["olga"], "reads more than it needs")
    assert rejected.status is PackageStatus.REJECTED and "reads more" in rejected.status_reason
    with pytest.raises(ReviewConflict):
        service.revoke(view.record.hash, people["olga"], "nothing to revoke")


def test_validity_periods_are_bounded(world) -> None:
    service, people, pki, clock = world
    view, _ = service.submit(files(), people["alice"])
    for start, days in ((clock.now, 366), (clock.now - 3 * DAY, 10), (clock.now - 2 * DAY, 1)):
        with pytest.raises(InvalidRequest):
            approve(service, pki, people["olga"], view.record.hash, start, days)
    approve(service, pki, people["olga"], view.record.hash, clock.now + DAY, 5)  # starts tomorrow
    assert service.get(view.record.hash, people["alice"]).status is PackageStatus.EXPIRED
    clock.now += 2 * DAY
    assert service.get(view.record.hash, people["alice"]).status is PackageStatus.APPROVED


def test_the_signature_must_cover_what_is_stored(world) -> None:
    service, people, pki, clock = world
    view, _ = service.submit(files(), people["alice"])
    key = load_signing_key(pki / "identities" / "olga" / "signing.key")
    other = package_from_files(files(body="ctx.table('schools').agg(m=count())"))
    start = int(clock.now)
    with pytest.raises(InvalidRequest, match="does not verify"):
        service.approve(
            view.record.hash, people["olga"], start, start + DAY, sign_approval(key, other, "olga", start, start + DAY)
        )
    wrong_period = sign_approval(key, view.package, "olga", start, start + 2 * DAY)
    with pytest.raises(InvalidRequest, match="does not verify"):
        service.approve(view.record.hash, people["olga"], start, start + DAY, wrong_period)
    assert approval_payload(view.package, "olga", 1, 2).startswith(b"saferoom-approval-v1\n")


def test_who_may_decide_and_who_may_see(world) -> None:
    service, people, pki, clock = world
    view, _ = service.submit(files(), people["rex"])
    with pytest.raises(PermissionDenied, match="submitted themselves"):
        approve(service, pki, people["rex"], view.record.hash, clock.now, 1)
    with pytest.raises(PermissionDenied):
        service.approve(view.record.hash, people["alice"], int(clock.now), int(clock.now) + DAY, b"\0" * 64)
    assert service.list_packages(people["alice"]) == []
    with pytest.raises(PackageNotFound):
        service.get(view.record.hash, people["alice"])
    assert [v.record.hash for v in service.list_packages(people["olga"])] == [view.record.hash]


def test_names_resolve_to_one_package_and_the_diff_shows_changes(world) -> None:
    service, people, pki, clock = world
    v1, _ = service.submit(files("1.0.0"), people["alice"])
    approve(service, pki, people["olga"], v1.record.hash, clock.now, 10)
    v2, _ = service.submit(files("1.1.0", body="ctx.table('schools').agg(pupils=count())"), people["alice"])
    assert service.get("review-me", people["alice"]).record.hash == v2.record.hash  # latest version
    package, _, _ = service.authorize_run("review-me", people["alice"], {})  # latest *approved* version
    assert package.hash == v1.record.hash
    review = service.review(v2.record.hash)
    assert review.previous is not None and review.previous.record.hash == v1.record.hash
    assert "-    return {'n': ctx.table('schools').agg(n=count())}" in review.diff
    assert "+    return {'n': ctx.table('schools').agg(pupils=count())}" in review.diff
    assert '+version = "1.1.0"' in review.diff
    twin, _ = service.submit({**files("1.1.0"), "README.md": b"same version, other content\n"}, people["alice"])
    with pytest.raises(InvalidRequest, match="use the hash"):
        service.get("review-me@1.1.0", people["alice"])
    assert service.get(twin.record.hash, people["alice"]).record.hash == twin.record.hash
