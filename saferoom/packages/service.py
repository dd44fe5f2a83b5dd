"""Submission, review and the run-time check: only an approved, unmodified package ever runs.

    submitted ──► pending ──► approved (signed, valid from/until) ──► revoked
                         └──► rejected                    └──► expired (re-approval renews it)

A package's status is derived from its latest decision and re-verified every time it is read: the stored
bytes against the hash, the signature against the operator's certificate, the certificate against the
authority and its revocation list, and the validity period against the clock. Knows nothing of gRPC.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from saferoom.audit import AuditLog, EventType
from saferoom.audit.log import Entry
from saferoom.errors import (
    CodeRefused,
    InvalidPackage,
    InvalidParameter,
    InvalidRequest,
    NotApproved,
    PackageNotFound,
    PackageTampered,
    PermissionDenied,
    ReviewConflict,
)
from saferoom.identity import Identity, Role, TrustStore
from saferoom.packages.approval import Approval, verify_signature
from saferoom.packages.package import (
    MANIFEST_FILE,
    MAX_FILES,
    MAX_TOTAL_BYTES,
    Package,
    check_file_name,
    package_from_files,
    package_from_zip,
    package_to_zip,
)
from saferoom.packages.params import validate_params
from saferoom.store.packages import DecisionRecord, PackageRecord, PackageStore

__all__ = ["PackageService", "PackageStatus", "PackageView", "ReviewView"]

# Where one problem ends in a CodeRefused message listing several ("a.py, line 3: ...; b.py: ...").
_CODE_PROBLEM = re.compile(r"; (?=[A-Za-z0-9][A-Za-z0-9_./-]*\.py(?:, line \d+)?: )")

MAX_REASON = 2000
DAY = 86_400
_VERIFIED_PACKAGES = 256  # parsed, verified packages kept (their archives are still read and digested)


class PackageStatus(StrEnum):
    """Where a package stands in review."""

    PENDING = "pending"  # submitted, no decision yet
    APPROVED = "approved"  # a valid, verified, unrevoked approval covers it now
    REJECTED = "rejected"  # an operator said no (with a reason)
    REVOKED = "revoked"  # approved once, then taken back (with a reason)
    EXPIRED = "expired"  # approved, but outside the validity period (over, or not begun yet)
    INVALID = "invalid"  # the approval on record does not verify, or the stored bytes were altered


@dataclass(frozen=True)
class PackageView:
    """A package with its review status, as one caller may see it."""

    package: Package
    record: PackageRecord
    status: PackageStatus
    status_reason: str
    approval: Approval | None
    tampered: bool = False  # the stored files are missing, corrupt or no longer match the hash


@dataclass(frozen=True)
class ReviewView:
    """What an operator reviews: the package, and how it differs from the last approved one of that name."""

    view: PackageView
    previous: PackageView | None
    diff: str


def _reason(text: str) -> str:
    text = text.strip()
    if not text or len(text) > MAX_REASON:
        raise InvalidRequest(f"a reason of 1 to {MAX_REASON} characters is required")
    return text


MIN_PREFIX = 6  # the shortest hash prefix accepted (lists show 12 characters)


class PackageService:
    """Packages for the server: submit, list and fetch as allowed, review, and authorize runs."""

    def __init__(
        self,
        store: PackageStore,
        trust: TrustStore,
        datasets: Collection[str],
        check_code: Callable[[Package], None],
        audit: AuditLog,
        max_approval_days: int = 365,
        clock: Callable[[], float] = time.time,
        private_datasets: Collection[str] = (),
    ) -> None:
        self._store = store
        self._trust = trust
        self._datasets = frozenset(datasets)
        self._private = frozenset(private_datasets)  # differentially private: a run must say what it spends
        self._check_code = check_code
        self._audit = audit
        self._max_approval_seconds = max_approval_days * DAY
        self._clock = clock
        # package hash -> (SHA-256 of its stored archive, the package parsed from it and checked against the hash)
        self._verified: dict[str, tuple[bytes, Package]] = {}

    # ------------------------------------------------------------------ loading

    def _load(self, record: PackageRecord) -> Package:
        """The stored package, verified byte for byte against its hash.

        The stored bytes are read and digested every time; parsing them and hashing the files again is skipped
        when they are the very bytes already verified for this package (``_verified``)."""
        try:
            blob = self._store.read_blob(record.hash)
        except OSError:
            raise PackageTampered(f"the stored files of {record.name}@{record.version} are missing") from None
        digest = hashlib.sha256(blob).digest()
        known = self._verified.get(record.hash)
        if known is not None and known[0] == digest:
            return known[1]
        try:
            package = package_from_zip(blob)
        except Exception:  # any parse failure of bytes we wrote ourselves means they were altered
            raise PackageTampered(f"the stored files of {record.name}@{record.version} are corrupt") from None
        if package.hash != record.hash:
            raise PackageTampered(
                f"the stored files of {record.name}@{record.version} no longer match its hash {record.hash[:12]}"
            )
        if len(self._verified) >= _VERIFIED_PACKAGES:
            self._verified.clear()
        self._verified[record.hash] = (digest, package)
        return package

    def _view(self, record: PackageRecord) -> PackageView:
        try:
            package = self._load(record)
        except PackageTampered as exc:
            placeholder = Package(record.name, record.version, "", "", (), {}, {})
            return PackageView(placeholder, record, PackageStatus.INVALID, exc.message, None, tampered=True)
        decisions = self._store.decisions(record.hash)
        if not decisions:
            return PackageView(package, record, PackageStatus.PENDING, "awaiting review", None)
        last = decisions[-1]
        if last.kind == "rejected":
            return PackageView(
                package, record, PackageStatus.REJECTED, f"rejected by {last.actor}: {last.reason}", None
            )
        approved = next(d for d in reversed(decisions) if d.kind == "approved")
        approval = Approval(
            package_hash=approved.package_hash,
            approver=approved.actor,
            not_before=int(approved.not_before or 0),
            not_after=int(approved.not_after or 0),
            signature=approved.signature or b"",
            certificate_pem=approved.certificate_pem or b"",
            decided_at=approved.decided_at,
            revoked_by=last.actor if last.kind == "revoked" else None,
            revoke_reason=last.reason if last.kind == "revoked" else None,
        )
        if approval.revoked_by is not None:
            reason = f"approval revoked by {approval.revoked_by}: {approval.revoke_reason}"
            return PackageView(package, record, PackageStatus.REVOKED, reason, approval)
        try:
            verify_signature(approval, package, self._trust)
        except NotApproved as exc:
            return PackageView(package, record, PackageStatus.INVALID, exc.message, approval)
        if not approval.in_effect(self._clock()):
            reason = f"the approval by {approval.approver} is not in effect (valid {approval.describe_validity()})"
            return PackageView(package, record, PackageStatus.EXPIRED, reason, approval)
        reason = f"approved by {approval.approver}, valid {approval.describe_validity()}"
        return PackageView(package, record, PackageStatus.APPROVED, reason, approval)

    def _visible(self, caller: Identity, name: str | None = None) -> list[PackageRecord]:
        """What ``caller`` may see: their own submissions, or everything for operators."""
        return self._store.find(submitter=None if caller.has(Role.OPERATOR) else caller.name, name=name)

    def _resolve(self, ref: str, caller: Identity, approved_only: bool) -> PackageView:
        """A package by hash, a unique prefix of its hash (at least ``MIN_PREFIX`` characters), ``name@version``
        or ``name`` (latest version), among what ``caller`` may see (and only that: a prefix tells nothing of
        packages the caller may not see)."""
        hexadecimal = all(c in "0123456789abcdef" for c in ref)
        by_prefix: list[PackageRecord] = []
        if hexadecimal and MIN_PREFIX <= len(ref) < 64:
            by_prefix = [r for r in self._visible(caller) if r.hash.startswith(ref)]
            if len(by_prefix) > 1:
                shown = ", ".join(f"{r.hash[:12]} ({r.name}@{r.version})" for r in by_prefix[:10])
                raise InvalidRequest(f"{ref} starts {len(by_prefix)} package hashes: {shown}; give more characters")
        if by_prefix:
            records = by_prefix
        elif len(ref) == 64 and hexadecimal:
            try:
                found = self._store.get(ref)
            except PackageNotFound:
                found = None
            visible = found is not None and (caller.has(Role.OPERATOR) or caller.name in found.submitters)
            records = [found] if found is not None and visible else []
        else:
            name, _, version = ref.partition("@")
            records = [r for r in self._visible(caller, name) if not version or r.version == version]
        views = [self._view(r) for r in records]
        if approved_only:
            views = [v for v in views if v.status is PackageStatus.APPROVED]
        if not views:
            if records and approved_only:
                current = self._view(records[-1])
                if current.tampered:
                    raise PackageTampered(current.status_reason)
                raise NotApproved(f"{ref[:100]} is not approved: {current.status_reason}")
            raise PackageNotFound(f"no package {ref[:100]!r}")
        if "@" not in ref and len(ref) != 64 and not by_prefix:
            newest = max(_version_key(v.package.version) for v in views)
            views = [v for v in views if _version_key(v.package.version) == newest]
        if len(views) > 1:
            hashes = ", ".join(v.record.hash[:12] for v in views)
            raise InvalidRequest(f"{ref[:100]} names {len(views)} different packages ({hashes}); use the hash")
        return views[0]

    # ------------------------------------------------------------------ researchers

    def submit(self, files: Mapping[str, bytes], submitter: Identity) -> tuple[PackageView, bool]:
        """Validate a package in full and store it; returns it and whether this content is new.

        Every problem is reported at once (``InvalidPackage.problems``): the manifest's and the files', the
        datasets', and what the sandbox's static checks refuse in the code, even when the manifest is broken."""
        problems: list[str] = []
        try:
            package: Package | None = package_from_files(files)
        except InvalidPackage as exc:
            problems.extend(exc.problems)
            package = None
        if package is not None:
            problems.extend(self._dataset_problems(package))
        code = package or self._code_only(files)
        if code is not None:
            try:
                self._check_code(code)  # compiles every file under the sandbox policy (in a sandbox worker)
            except CodeRefused as exc:
                if not problems and package is not None:
                    raise  # only the code is wrong: CodeRefused as before (its message lists every line)
                problems.extend(_CODE_PROBLEM.split(exc.message))
        if problems or package is None:
            raise InvalidPackage.listing(problems)
        blob = package_to_zip(package)
        self._store.write_blob(package.hash, blob)  # content-addressed: a file no row names is harmless
        created, _ = self._audit.commit(
            lambda conn: self._store.add_rows_in(
                conn, package.hash, package.name, package.version, len(blob), submitter.name
            ),
            lambda new: [_entry(EventType.PACKAGE_SUBMITTED, submitter, package, {"created": new, "bytes": len(blob)})],
        )
        return self._view(self._store.get(package.hash)), created

    def _dataset_problems(self, package: Package) -> list[str]:
        problems = []
        unknown = sorted(set(package.datasets) - self._datasets)
        if unknown:
            problems.append(f"the package needs datasets that do not exist: {', '.join(unknown)}")
        undeclared = sorted(d for d in package.datasets if d in self._private and d not in package.epsilon)
        if undeclared:
            example = ", ".join(f"{d} = 0.5" for d in undeclared)
            problems.append(
                f"the package reads differentially private datasets without declaring the epsilon one run spends "
                f"on each: {', '.join(undeclared)}; add [privacy] epsilon = {{ {example} }} to {MANIFEST_FILE}"
            )
        return problems

    @staticmethod
    def _code_only(files: Mapping[str, bytes]) -> Package | None:
        """The Python files of a package whose manifest is unusable, to check their code all the same (only
        files with a valid name and UTF-8 text; the limits were checked before any of this)."""
        if not isinstance(files, Mapping) or len(files) > MAX_FILES:
            return None
        if sum(len(c) for c in files.values() if isinstance(c, bytes)) > MAX_TOTAL_BYTES:
            return None
        code = {}
        for name, content in files.items():
            if not isinstance(name, str) or not name.endswith(".py") or not isinstance(content, bytes):
                continue
            try:
                check_file_name(name)
                content.decode("utf-8")
            except (InvalidPackage, UnicodeDecodeError):
                continue
            code[name] = content
        return Package("", "", "", "", (), {}, code) if code else None

    def _decide(
        self, decision: DecisionRecord, event: EventType, who: Identity, package: Package, summary: dict[str, Any]
    ) -> None:
        """Append a review decision and its record, as one unit."""
        self._audit.commit(
            lambda conn: self._store.add_decision_in(conn, decision),
            lambda _: [_entry(event, who, package, summary)],
        )

    def list_packages(self, caller: Identity) -> list[PackageView]:
        """Packages ``caller`` may see: their own submissions, or all of them for operators."""
        return [self._view(r) for r in self._visible(caller)]

    def get(self, ref: str, caller: Identity) -> PackageView:
        return self._resolve(ref, caller, approved_only=False)

    def resolve_hash(self, ref: str, caller: Identity) -> str:
        """The full hash of the package ``ref`` names for ``caller`` (see ``_resolve``)."""
        return self._resolve(ref, caller, approved_only=False).record.hash

    # ------------------------------------------------------------------ operators

    def pending(self) -> list[PackageView]:
        return [v for v in (self._view(r) for r in self._store.find()) if v.status is PackageStatus.PENDING]

    def review(self, package_hash: str) -> ReviewView:
        """The package with the diff against the last approved version of the same name."""
        view = self._view(self._store.get(package_hash))
        previous: PackageView | None = None
        latest = -1.0
        for record in self._store.find(name=view.record.name):
            if record.hash == package_hash:
                continue
            approved = [d.decided_at for d in self._store.decisions(record.hash) if d.kind == "approved"]
            if approved and max(approved) > latest:
                latest, previous = max(approved), self._view(record)
        return ReviewView(view, previous, _diff(previous.package if previous else None, view.package))

    def approve(
        self, package_hash: str, operator: Identity, not_before: int, not_after: int, signature: bytes
    ) -> PackageView:
        """Record an operator's signed approval, after checking it verifies and is theirs to give."""
        if not operator.has(Role.OPERATOR) or operator.signing_key is None:
            raise PermissionDenied(f"{operator.name} holds no operator signing key")
        view = self._view(self._store.get(package_hash))
        if view.tampered:
            raise PackageTampered(view.status_reason)
        if operator.name in view.record.submitters:
            raise PermissionDenied("an operator may not approve a package they submitted themselves")
        if view.status is PackageStatus.APPROVED:
            raise ReviewConflict(f"{view.package.ref} is already approved ({view.status_reason})")
        now = int(self._clock())
        if not (now - DAY <= not_before < not_after and not_after > now):
            raise InvalidRequest("the validity period must end in the future, after it starts (at most a day ago)")
        if not_after - max(now, not_before) > self._max_approval_seconds:
            raise InvalidRequest(f"an approval is valid for at most {self._max_approval_seconds // DAY} days")
        approval = Approval(
            package_hash,
            operator.name,
            not_before,
            not_after,
            signature,
            operator.certificate_pem,
            decided_at=self._clock(),
        )
        try:
            verify_signature(approval, view.package, self._trust)
        except NotApproved as exc:
            raise InvalidRequest(f"{exc.message}: sign the approval payload of the files you reviewed") from None
        decision = DecisionRecord(
            0,
            package_hash,
            "approved",
            operator.name,
            "",
            approval.decided_at,
            not_before,
            not_after,
            signature,
            operator.certificate_pem,
        )
        summary = {"not_before": not_before, "not_after": not_after, "signature": signature.hex()}
        self._decide(decision, EventType.PACKAGE_APPROVED, operator, view.package, summary)
        return self._view(self._store.get(package_hash))

    def reject(self, package_hash: str, operator: Identity, reason: str) -> PackageView:
        view = self._view(self._store.get(package_hash))
        if view.status is not PackageStatus.PENDING:
            raise ReviewConflict(f"only a pending package can be rejected; {view.package.ref} is {view.status}")
        reason = _reason(reason)
        decision = DecisionRecord(0, package_hash, "rejected", operator.name, reason, self._clock())
        self._decide(decision, EventType.PACKAGE_REJECTED, operator, view.package, {"reason": reason})
        return self._view(self._store.get(package_hash))

    def revoke(self, package_hash: str, operator: Identity, reason: str) -> PackageView:
        view = self._view(self._store.get(package_hash))
        if view.approval is None or view.approval.revoked_by is not None:
            raise ReviewConflict(f"{view.package.ref} has no approval to revoke (it is {view.status})")
        reason = _reason(reason)
        decision = DecisionRecord(0, package_hash, "revoked", operator.name, reason, self._clock())
        self._decide(decision, EventType.PACKAGE_REVOKED, operator, view.package, {"reason": reason})
        return self._view(self._store.get(package_hash))

    # ------------------------------------------------------------------ running

    def authorize_run(
        self, ref: str, caller: Identity, params: Mapping[str, Any], datasets: Collection[str] = ()
    ) -> tuple[Package, dict[str, Any], tuple[str, ...]]:
        """Resolve ``ref`` to one approved package ``caller`` submitted; check the run stays inside the approval."""
        if not caller.has(Role.RESEARCHER):
            raise PermissionDenied(f"{caller.name} is not a researcher")
        view = self._resolve(ref, caller, approved_only=True)
        return self._within_approval(view.package, params, datasets)

    def verify_run(self, package_hash: str, params: Mapping[str, Any], datasets: Collection[str]) -> Package:
        """At the moment a job starts: the package is unmodified and its approval still covers this run."""
        view = self._view(self._store.get(package_hash))
        if view.status is not PackageStatus.APPROVED:
            if view.tampered:
                raise PackageTampered(view.status_reason)
            raise NotApproved(f"{view.package.ref} may not run: {view.status_reason}")
        package, _, _ = self._within_approval(view.package, params, datasets)
        return package

    @staticmethod
    def _within_approval(
        package: Package, params: Mapping[str, Any], datasets: Collection[str]
    ) -> tuple[Package, dict[str, Any], tuple[str, ...]]:
        chosen = tuple(datasets) or package.datasets
        outside = sorted(set(chosen) - set(package.datasets))
        if outside:
            raise NotApproved(f"datasets outside what was approved for {package.ref}: {', '.join(outside)}")
        try:
            checked = validate_params(package, params)
        except InvalidParameter as exc:
            raise NotApproved(f"parameters outside what was approved for {package.ref}: {exc.message}") from None
        return package, checked, chosen


def _entry(event: EventType, who: Identity, package: Package, summary: dict[str, Any]) -> Entry:
    objects = {
        "package": package.hash,
        "name": package.name,
        "version": package.version,
        "datasets": list(package.datasets),
    }
    return (event, who.name, who.role_names, objects, summary)


def _version_key(version: str) -> tuple[int, int, int, int, str]:
    core, _, pre = version.partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    return (major, minor, patch, 0 if pre else 1, pre)


def _diff(old: Package | None, new: Package) -> str:
    """A unified diff of every file, from ``old`` (or nothing) to ``new``."""
    old_files = old.files if old is not None else {}
    label = f"{old.ref} ({old.hash[:12]})" if old is not None else "(no approved version)"
    chunks: list[str] = []
    for name in sorted(set(old_files) | set(new.files)):
        before = old_files.get(name, b"").decode("utf-8").splitlines(keepends=True)
        after = new.files.get(name, b"").decode("utf-8").splitlines(keepends=True)
        chunks.extend(difflib.unified_diff(before, after, f"{label}/{name}", f"{new.ref} ({new.hash[:12]})/{name}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in chunks)
