"""The certificate authority and the trust store, with real certificates and a real CRL on disk."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from saferoom.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from saferoom.identity import (
    ALLOWED,
    PUBLIC_METHODS,
    Role,
    TrustStore,
    authorize,
    init_authority,
    issue_identity,
    list_identities,
    revoke_identity,
)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_authority(directory, hosts=["saferoom.example.gov", "10.0.0.5"])
    return directory


def cert_of(pki: Path, name: str) -> bytes:
    return (pki / "identities" / name / "cert.pem").read_bytes()


def test_issue_states_name_roles_and_an_operator_signing_key(pki: Path) -> None:
    issue_identity(pki, "alice", "researcher")
    issue_identity(pki, "olga", ["operator", "auditor"])
    trust = TrustStore(pki)
    alice = trust.identify(cert_of(pki, "alice"))
    assert alice.name == "alice" and alice.roles == {Role.RESEARCHER} and alice.signing_key is None
    olga = trust.identify(cert_of(pki, "olga"))
    assert olga.roles == {Role.OPERATOR, Role.AUDITOR}
    assert olga.signing_key is not None and len(olga.signing_key) == 32
    profile = (pki / "identities" / "olga" / "profile.toml").read_text()
    assert 'signing_key = "signing.key"' in profile and 'name = "olga"' in profile


def test_private_keys_are_0600_and_never_overwritten(pki: Path) -> None:
    issued = issue_identity(pki, "olga", "operator")
    for key in (pki / "ca.key", pki / "server.key", issued.directory / "key.pem", issued.directory / "signing.key"):
        assert os.stat(key).st_mode & 0o777 == 0o600
    with pytest.raises(InvalidRequest, match="already holds"):
        init_authority(pki)
    with pytest.raises(InvalidRequest, match="exists"):
        issue_identity(pki, "olga", "researcher")


def test_the_server_certificate_names_every_host(pki: Path) -> None:
    cert = x509.load_pem_x509_certificate((pki / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "saferoom.example.gov"} <= set(names.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.5"}


@pytest.mark.parametrize(
    ("name", "roles"),
    [("Alice", "researcher"), ("a", "researcher"), ("../x", "researcher"), ("bob", "king"), ("bob", "")],
)
def test_bad_names_and_roles_are_refused(pki: Path, name: str, roles: str) -> None:
    with pytest.raises(InvalidRequest):
        issue_identity(pki, name, roles)


def test_revocation_takes_effect_without_reopening(pki: Path) -> None:
    issue_identity(pki, "alice", "researcher")
    issue_identity(pki, "bob", "researcher")
    trust = TrustStore(pki)
    assert trust.identify(cert_of(pki, "alice")).name == "alice"
    revoke_identity(pki, "alice")
    with pytest.raises(AuthenticationFailed, match="revoked"):
        trust.identify(cert_of(pki, "alice"))
    assert trust.identify(cert_of(pki, "bob")).name == "bob"
    assert [(n, r) for n, _, _, _, r in list_identities(pki)] == [("alice", True), ("bob", False)]
    with pytest.raises(NotFound):
        revoke_identity(pki, "alice")


def test_a_rolled_back_crl_refuses_everyone(pki: Path, tmp_path: Path) -> None:
    issue_identity(pki, "alice", "researcher")
    issue_identity(pki, "bob", "researcher")
    old_crl = tmp_path / "old-crl.pem"
    shutil.copy(pki / "crl.pem", old_crl)
    trust = TrustStore(pki)
    revoke_identity(pki, "alice")
    trust.identify(cert_of(pki, "bob"))  # the new CRL is seen
    shutil.copy(old_crl, pki / "crl.pem")  # an attacker restores the CRL from before the revocation
    with pytest.raises(AuthenticationFailed, match="older"):
        trust.identify(cert_of(pki, "alice"))
    with pytest.raises(AuthenticationFailed):
        trust.identify(cert_of(pki, "bob"))  # fail closed: nobody until it is fixed


def test_a_missing_or_forged_crl_refuses_everyone(pki: Path, tmp_path: Path) -> None:
    issue_identity(pki, "bob", "researcher")
    trust = TrustStore(pki)
    (pki / "crl.pem").unlink()
    with pytest.raises(AuthenticationFailed, match="missing"):
        trust.identify(cert_of(pki, "bob"))
    other = tmp_path / "other"
    init_authority(other)  # a CRL signed by another authority, with a huge number
    shutil.copy(other / "crl.pem", pki / "crl.pem")
    with pytest.raises(AuthenticationFailed, match="not signed"):
        trust.identify(cert_of(pki, "bob"))


def _forge(pki: Path, signer_dir: Path, roles: list[str], usage: x509.ObjectIdentifier, days: float = 30) -> bytes:
    """A certificate for 'mallory' signed by the authority in ``signer_dir``."""
    ca_key = serialization.load_pem_private_key((signer_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((signer_dir / "ca.crt").read_bytes())
    now = dt.datetime.now(dt.UTC)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "saferoom")]
    subject += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, r) for r in roles]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, "mallory"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=60))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificates_the_authority_did_not_issue_as_identities_are_refused(pki: Path, tmp_path: Path) -> None:
    trust = TrustStore(pki)
    other = tmp_path / "other"
    init_authority(other)
    with pytest.raises(AuthenticationFailed, match="authority"):
        trust.identify(_forge(pki, other, ["operator"], ExtendedKeyUsageOID.CLIENT_AUTH))
    with pytest.raises(AuthenticationFailed, match="not a client certificate"):
        trust.identify(_forge(pki, pki, ["researcher"], ExtendedKeyUsageOID.SERVER_AUTH))
    with pytest.raises(AuthenticationFailed):
        trust.identify((pki / "server.crt").read_bytes())
    with pytest.raises(AuthenticationFailed, match="roles"):
        trust.identify(_forge(pki, pki, ["superuser"], ExtendedKeyUsageOID.CLIENT_AUTH))
    with pytest.raises(AuthenticationFailed, match="not valid"):
        trust.identify(_forge(pki, pki, ["researcher"], ExtendedKeyUsageOID.CLIENT_AUTH, days=-1))
    with pytest.raises(AuthenticationFailed):
        trust.identify(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")


def test_the_permission_table_denies_by_default(pki: Path) -> None:
    issue_identity(pki, "audrey", "auditor")
    issue_identity(pki, "rex", "researcher,operator")
    trust = TrustStore(pki)
    audrey, rex = trust.identify(cert_of(pki, "audrey")), trust.identify(cert_of(pki, "rex"))
    for method in PUBLIC_METHODS:
        authorize(audrey, method)
    with pytest.raises(PermissionDenied):
        authorize(audrey, "/saferoom.v1.JobsService/GetResult")
    authorize(rex, "/saferoom.v1.JobsService/RunJob")  # as researcher
    authorize(rex, "/saferoom.v1.ReviewService/ApprovePackage")  # as operator
    with pytest.raises(PermissionDenied):
        authorize(rex, "/saferoom.v1.JobsService/DropAllTables")
    assert "saferoom.v1.JobsService/GetResult" not in ALLOWED[Role.OPERATOR]  # operators never read results


def test_output_checkers_get_a_signing_key_and_only_the_checks_service(pki: Path) -> None:
    from saferoom.identity import certificate_signer

    issue_identity(pki, "carol", "output_checker")
    carol = TrustStore(pki).identify(cert_of(pki, "carol"))
    assert carol.roles == {Role.OUTPUT_CHECKER}
    assert carol.signing_key is not None and len(carol.signing_key) == 32
    assert 'signing_key = "signing.key"' in (pki / "identities" / "carol" / "profile.toml").read_text()
    name, roles, key = certificate_signer(cert_of(pki, "carol"), (pki / "ca.crt").read_bytes())
    assert (name, set(roles), key) == ("carol", {"output_checker"}, carol.signing_key)
    for method in ("ListHeld", "GetHeld", "Decide"):
        authorize(carol, f"/saferoom.v1.ChecksService/{method}")
    for method in ("/saferoom.v1.JobsService/GetResult", "/saferoom.v1.JobsService/RunJob",
                   "/saferoom.v1.AuditService/ReadLog", "/saferoom.v1.ReviewService/ApprovePackage"):  # fmt: skip
        with pytest.raises(PermissionDenied):
            authorize(carol, method)
    checks = {m for m in ALLOWED[Role.OUTPUT_CHECKER] if "ChecksService/" in m}
    assert len(checks) == 3
    assert all(not checks & ALLOWED[r] for r in Role if r is not Role.OUTPUT_CHECKER)


def _oids(der: bytes) -> list[tuple[int, ...]]:
    """Every OBJECT IDENTIFIER in a DER structure, looking inside constructed values and inside OCTET STRINGs
    that hold DER themselves (an extension's value). Arcs are decoded as unbounded integers."""
    found: list[tuple[int, ...]] = []

    def walk(data: bytes) -> bool:
        i = 0
        while i < len(data):
            if i + 2 > len(data):
                return False
            tag, length, i = data[i], data[i + 1], i + 2
            if length & 0x80:
                n = length & 0x7F
                if n == 0 or n > 4 or i + n > len(data):
                    return False
                length, i = int.from_bytes(data[i : i + n], "big"), i + n
            body, i = data[i : i + length], i + length
            if len(body) != length:
                return False
            if tag == 0x06:
                arcs, value = [], 0
                for byte in body:
                    value = (value << 7) | (byte & 0x7F)
                    if not byte & 0x80:
                        arcs.append(value)
                        value = 0
                first = min(arcs[0] // 40, 2)
                found.append((first, arcs[0] - 40 * first, *arcs[1:]))
            elif tag & 0x20:
                if not walk(body):
                    return False
            elif tag == 0x04:
                before = len(found)
                if not walk(body):
                    del found[before:]
        return True

    assert walk(der)
    return found


def test_every_certificate_keeps_oid_arcs_that_go_can_parse(pki: Path) -> None:
    """Go's crypto/x509 refuses a certificate with an OID arc of 2^31 or more, and RFC 5280 asks parsers for
    2^28 only: every certificate the authority makes (CA, server, each role's client) stays below 2^28. The
    operator's and output checker's carried a 128-bit arc before (grpcurl: "base 128 integer too large")."""
    from saferoom.identity import SIGNING_KEY_OID

    issue_identity(pki, "alice", "researcher")
    issue_identity(pki, "olga", "operator")
    issue_identity(pki, "carol", "output_checker")
    issue_identity(pki, "audrey", "auditor")
    issue_identity(pki, "rex", "researcher,operator,output_checker,auditor")
    pems = [pki / "ca.crt", pki / "server.crt", *sorted((pki / "identities").glob("*/cert.pem"))]
    seen: set[tuple[int, ...]] = set()
    for path in pems:
        der = x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)
        oids = _oids(der)
        assert oids, path
        too_large = [o for o in oids if max(o) >= 2**28]
        assert not too_large, f"{path}: {too_large}"
        seen.update(oids)
    assert tuple(int(a) for a in SIGNING_KEY_OID.dotted_string.split(".")) in seen


def _legacy_certificate(pki: Path, name: str, oids: list[x509.ObjectIdentifier]) -> tuple[bytes, bytes]:
    """A client certificate for ``name`` signed by the authority, stating a signing key under each of ``oids``."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    raw = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "saferoom"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "operator"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    for i, oid in enumerate(oids):  # a different key under each OID
        key = raw if i == 0 else raw[:31] + bytes([raw[31] ^ i])
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x04\x20" + key), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), raw


def test_certificates_with_the_legacy_signing_key_oid_are_still_read(pki: Path) -> None:
    """Operators' certificates of earlier versions keep working with saferoom's own client and server, and
    signed decisions in old audit logs still name a key (Go clients need the certificate re-issued)."""
    from saferoom.identity import LEGACY_SIGNING_KEY_OID, certificate_signer

    pem, raw = _legacy_certificate(pki, "olga", [LEGACY_SIGNING_KEY_OID])
    olga = TrustStore(pki).identify(pem)
    assert olga.roles == {Role.OPERATOR} and olga.signing_key == raw
    assert certificate_signer(pem, (pki / "ca.crt").read_bytes()) == ("olga", frozenset({"operator"}), raw)


def test_a_certificate_stating_two_signing_keys_signs_nothing(pki: Path) -> None:
    """Two keys (the current and the legacy OID) would make "who signed this" ambiguous: neither counts."""
    from saferoom.identity import LEGACY_SIGNING_KEY_OID, SIGNING_KEY_OID, certificate_signer

    pem, _ = _legacy_certificate(pki, "olga", [SIGNING_KEY_OID, LEGACY_SIGNING_KEY_OID])
    assert TrustStore(pki).identify(pem).signing_key is None
    with pytest.raises(ValueError, match="more than one signing key"):
        certificate_signer(pem, (pki / "ca.crt").read_bytes())
