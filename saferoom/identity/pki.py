"""The deployment's certificate authority: identities as client certificates, revocation as a signed CRL.

A PKI directory (``saferoom certs init DIR``) holds::

    ca.crt  ca.key            the authority (the key never leaves this directory; keep it offline in production)
    server.crt  server.key    the server's TLS identity (names given at init; localhost and 127.0.0.1 always)
    crl.pem                   the certificate revocation list, signed by the authority, numbered
    issued/SERIAL.crt         every certificate ever issued, for revocation by name
    identities/NAME/          what one person receives: cert.pem, key.pem, ca.crt, profile.toml,
                              and signing.key (operators and output checkers: the Ed25519 key that signs
                              approvals and output-check decisions)

A client certificate names its holder in the subject CN and its roles in OU attributes. An operator's (or
output checker's) certificate also carries the public half of their signing key (extension
``SIGNING_KEY_OID``), so a signature is bound to a person the authority vouched for, and a forged approval or
decision row in the database cannot name a key of its own. Private keys are created with mode 0600 and never
overwritten.

Every certificate made here must parse in every X.509 library a client may use, so every arc of every OID it
carries stays below 2^28, the most RFC 5280 (appendix B) requires parsers to handle: Go's crypto/x509 (grpcurl,
any Go client) rejects a certificate with a larger arc outright ("asn1: structure error: base 128 integer too
large"), which the 128-bit UUID arc saferoom used at first (``LEGACY_SIGNING_KEY_OID``) was. Certificates issued
with it are still read (the authority signed them, and signed decisions in old audit logs name them), but Go
clients cannot load them: re-issue them (``saferoom certs revoke`` and ``issue``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from saferoom.errors import AuthenticationFailed, InvalidRequest, NotFound
from saferoom.identity.roles import NAME_PATTERN, SIGNING_ROLES, Identity, Role, parse_roles

__all__ = [
    "LEGACY_SIGNING_KEY_OID",
    "SIGNING_KEY_OID",
    "IssuedIdentity",
    "TrustStore",
    "certificate_identity",
    "certificate_signer",
    "init_authority",
    "issue_identity",
    "list_identities",
    "load_signing_key",
    "revoke_identity",
]

# saferoom's own arc: under ITU-T X.667's self-assigned 2.25, with a random 28-bit number instead of a 128-bit
# UUID (see the module docstring). No UUID generated as RFC 9562 says (version 1-8) maps below 2^76, so this arc
# collides with no standard UUID arc; and it is only ever read from certificates this deployment's authority signed.
SAFEROOM_ARC = "2.25.44314814"
# The raw Ed25519 public key that signs this holder's approvals and output-check decisions.
SIGNING_KEY_OID = x509.ObjectIdentifier(f"{SAFEROOM_ARC}.1")
# The same, in certificates of earlier saferoom versions (a 128-bit UUID arc): read, never written.
LEGACY_SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.300163215812437019215942923205199720412")
CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CRL = "ca.crt", "ca.key", "server.crt", "server.key", "crl.pem"
_ORG = "saferoom"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the first byte on; never replace an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    _write_new(tmp, data, 0o644)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One writer at a time for issuing and revoking."""
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load_authority(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"no certificate authority in {directory} (run `saferoom certs init`): {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidRequest("the authority key is not an EC key")
    return cert, key


def _sign_crl(
    directory: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[x509.RevokedCertificate],
    number: int,
) -> None:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=3650))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    _write_atomic(directory / CRL, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def init_authority(directory: Path, hosts: Sequence[str] = (), days: int = 3650) -> None:
    """Create a certificate authority, the server's certificate and an empty revocation list in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / CA_KEY).exists():
        raise InvalidRequest(f"{directory} already holds a certificate authority")
    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, "saferoom authority"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_new(directory / CA_KEY, _pem_key(ca_key), 0o600)
    _write_new(directory / CA_CERT, _pem(ca), 0o644)

    names: list[x509.GeneralName] = []
    for host in ("localhost", "127.0.0.1", *hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
                    x509.NameAttribute(NameOID.COMMON_NAME, "saferoom server"),
                ]
            )
        )
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=min(days, 825)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_new(directory / SERVER_KEY, _pem_key(server_key), 0o600)
    _write_new(directory / SERVER_CERT, _pem(server), 0o644)
    (directory / "issued").mkdir(exist_ok=True)
    (directory / "identities").mkdir(exist_ok=True)
    _sign_crl(directory, ca, ca_key, [], 1)


@dataclass(frozen=True)
class IssuedIdentity:
    """Where the files given to one person were written."""

    name: str
    roles: frozenset[Role]
    serial: int
    directory: Path

    @property
    def profile(self) -> Path:
        return self.directory / "profile.toml"


def issue_identity(
    directory: Path,
    name: str,
    roles: str | Sequence[str],
    days: int = 365,
    server: str = "127.0.0.1:50051",
) -> IssuedIdentity:
    """Issue a client certificate (and, to operators and output checkers, a signing key) to ``name``."""
    if not NAME_PATTERN.match(name):
        raise InvalidRequest("a name is 2-64 characters: lowercase letters, digits, '.', '_', '-'")
    try:
        role_set = parse_roles(list(roles) if not isinstance(roles, str) else roles)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    if not 1 <= days <= 3650:
        raise InvalidRequest("days must be between 1 and 3650")
    ca, ca_key = _load_authority(directory)
    out = directory / "identities" / name
    with _locked(directory):
        if out.exists():
            raise InvalidRequest(f"{out} exists: revoke {name} and remove it before issuing again")
        out.mkdir(parents=True)
        now = _now()
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, r.value) for r in sorted(role_set)]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), ca.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        signing_key = None
        if role_set & SIGNING_ROLES:
            signing_key = ed25519.Ed25519PrivateKey.generate()
            raw = signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            builder = builder.add_extension(
                x509.UnrecognizedExtension(SIGNING_KEY_OID, b"\x04\x20" + raw), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_new(out / "key.pem", _pem_key(key), 0o600)
        _write_new(out / "cert.pem", _pem(cert), 0o644)
        _write_new(out / "ca.crt", _pem(ca), 0o644)
        lines = [f'name = "{name}"', f'server = "{server}"', 'ca = "ca.crt"', 'cert = "cert.pem"', 'key = "key.pem"']
        if signing_key is not None:
            _write_new(out / "signing.key", _pem_key(signing_key), 0o600)
            lines.append('signing_key = "signing.key"')
        _write_new(out / "profile.toml", ("\n".join(lines) + "\n").encode(), 0o644)
        _write_new(directory / "issued" / f"{cert.serial_number:x}.crt", _pem(cert), 0o644)
    return IssuedIdentity(name, role_set, cert.serial_number, out)


def _load_crl(directory: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl((directory / CRL).read_bytes())


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def revoke_identity(directory: Path, name: str) -> list[int]:
    """Revoke every certificate issued to ``name``; returns their serial numbers. Servers notice at once."""
    ca, ca_key = _load_authority(directory)
    with _locked(directory):
        crl = _load_crl(directory)
        entries = list(crl)
        already = {e.serial_number for e in entries}
        revoked = []
        for path in sorted((directory / "issued").glob("*.crt")):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            if _common_name(cert) == name and cert.serial_number not in already:
                revoked.append(cert.serial_number)
                entries.append(
                    x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(_now()).build()
                )
        if not revoked:
            raise NotFound(f"no unrevoked certificate was issued to {name[:64]!r}")
        _sign_crl(directory, ca, ca_key, entries, _crl_number(crl) + 1)
    return revoked


def list_identities(directory: Path) -> list[tuple[str, str, int, dt.datetime, bool]]:
    """Every issued certificate: (name, roles, serial, expiry, revoked)."""
    revoked = {e.serial_number for e in _load_crl(directory)}
    out = []
    for path in sorted((directory / "issued").glob("*.crt")):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        roles = ",".join(_attributes(cert, NameOID.ORGANIZATIONAL_UNIT_NAME))
        out.append(
            (_common_name(cert), roles, cert.serial_number, cert.not_valid_after_utc, cert.serial_number in revoked)
        )
    return sorted(out)


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """An operator's approval signing key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read the signing key {path.name}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidRequest(f"{path.name} is not an Ed25519 key")
    return key


def _attributes(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def _common_name(cert: x509.Certificate) -> str:
    names = _attributes(cert, NameOID.COMMON_NAME)
    return names[0] if len(names) == 1 else ""


def certificate_identity(certificate_pem: bytes) -> tuple[str, frozenset[str]]:
    """(name, role names) that a certificate states (``ValueError`` if it is not one): what its holder is told."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    return _common_name(cert), frozenset(_attributes(cert, NameOID.ORGANIZATIONAL_UNIT_NAME))


def certificate_signer(certificate_pem: bytes, ca_pem: bytes | None = None) -> tuple[str, frozenset[str], bytes]:
    """(name, role names, raw Ed25519 signing key) that a certificate states, for offline verification of what
    its holder signed; with ``ca_pem``, only if that authority issued it. ``ValueError`` otherwise."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    if ca_pem is not None:
        try:
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError("the certificate was not issued by this authority") from None
    raw = _signing_key(cert)
    if raw is None:
        raise ValueError("the certificate carries no signing key")
    return _common_name(cert), frozenset(_attributes(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)), raw


def _signing_key(cert: x509.Certificate) -> bytes | None:
    """The raw Ed25519 key a certificate states (under the current OID or the legacy one), or None when it states
    none. ``ValueError`` when it is malformed or stated twice: two keys would make "who signed" ambiguous."""
    found = [e.value for e in cert.extensions if e.oid in (SIGNING_KEY_OID, LEGACY_SIGNING_KEY_OID)]
    if not found:
        return None
    raw = found[0]
    if len(found) > 1:
        raise ValueError("the certificate states more than one signing key")
    if not (isinstance(raw, x509.UnrecognizedExtension) and raw.value[:2] == b"\x04\x20" and len(raw.value) == 34):
        raise ValueError("the certificate's signing key is malformed")
    return raw.value[2:]


class TrustStore:
    """Turns a presented certificate into an ``Identity``, or refuses it.

    Checks the authority's signature, the validity period, the client-auth usage, the roles, and the current
    revocation list. The CRL file is re-read whenever it changes on disk (a stat per call), so a revocation
    takes effect at once; a CRL that is unreadable, badly signed or older than one already seen refuses
    everyone until it is fixed (fail closed: a rolled-back CRL would un-revoke).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self.ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"no CA certificate in {directory}: {exc}") from None
        self._lock = threading.Lock()
        self._crl_stamp: tuple[int, int, int] | None = None
        self._crl_number = 0
        self._revoked: frozenset[int] = frozenset()
        self._crl_error: str | None = None
        self._cache: dict[bytes, Identity] = {}
        self._subscribers: list[Callable[[], object]] = []
        self._refresh()
        if self._crl_error:
            raise InvalidRequest(self._crl_error)

    def on_revocation_list_change(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (outside any lock) each time a new revocation list takes effect."""
        self._subscribers.append(callback)

    def server_material(self) -> tuple[bytes, bytes, bytes]:
        """(server key PEM, server certificate PEM, CA certificate PEM) for the TLS listener."""
        try:
            return (
                (self.directory / SERVER_KEY).read_bytes(),
                (self.directory / SERVER_CERT).read_bytes(),
                (self.directory / CA_CERT).read_bytes(),
            )
        except OSError as exc:
            raise InvalidRequest(f"the server's TLS files are missing in {self.directory}: {exc}") from None

    def _refresh(self) -> bool:
        """Re-read the CRL if the file changed; True if a new one took effect."""
        try:
            st = os.stat(self.directory / CRL)
        except OSError:
            self._crl_error = "the certificate revocation list is missing"
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._crl_stamp:
            return False
        try:
            crl = _load_crl(self.directory)
            number = _crl_number(crl)
            public_key = self.ca.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public_key):
                raise ValueError("it is not signed by the authority")
            if number < self._crl_number:
                raise ValueError(f"its number {number} is older than one already seen ({self._crl_number})")
        except (OSError, ValueError, x509.ExtensionNotFound) as exc:
            self._crl_error = f"the certificate revocation list is unusable: {exc}"
            self._crl_stamp = stamp
            return False
        self._crl_stamp, self._crl_number, self._crl_error = stamp, number, None
        self._revoked = frozenset(e.serial_number for e in crl)
        return True

    def identify(self, certificate_pem: bytes, at: dt.datetime | None = None) -> Identity:
        """The identity a certificate states, if the authority vouches for it now (or ``at``)."""
        with self._lock:
            changed = self._refresh()
            error, revoked = self._crl_error, self._revoked
            identity = self._cache.get(certificate_pem)
        if changed:
            for callback in self._subscribers:
                callback()
        if error:
            raise AuthenticationFailed(f"identities cannot be checked: {error}")
        if identity is None:
            identity = self._parse(certificate_pem)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[certificate_pem] = identity
        if identity.serial in revoked:
            raise AuthenticationFailed(f"the certificate of {identity.name} has been revoked")
        moment = at or _now()
        cert = x509.load_pem_x509_certificate(certificate_pem) if at is not None else None
        if moment > identity.not_after or (cert is not None and moment < cert.not_valid_before_utc):
            raise AuthenticationFailed(f"the certificate of {identity.name} is not valid at {moment:%Y-%m-%d %H:%M}")
        return identity

    def _parse(self, certificate_pem: bytes) -> Identity:
        try:
            cert = x509.load_pem_x509_certificate(certificate_pem)
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            raise AuthenticationFailed("the certificate is not one of this deployment's authority") from None
        name = _common_name(cert)
        if not NAME_PATTERN.match(name) or _attributes(cert, NameOID.ORGANIZATION_NAME) != [_ORG]:
            raise AuthenticationFailed("the certificate names no saferoom identity")
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise AuthenticationFailed(f"the certificate of {name} is not a client certificate")
        try:
            roles = parse_roles(_attributes(cert, NameOID.ORGANIZATIONAL_UNIT_NAME))
        except ValueError as exc:
            raise AuthenticationFailed(f"the certificate of {name} states no valid roles: {exc}") from None
        try:
            signing_key = _signing_key(cert)
        except ValueError:
            signing_key = None  # as before: such a holder can sign nothing, and is told so when they try
        return Identity(
            name=name,
            roles=roles,
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc,
            certificate_pem=certificate_pem,
            signing_key=signing_key,
        )
