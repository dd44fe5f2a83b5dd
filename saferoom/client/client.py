"""A typed Python client for the saferoom server: plain Python values in, plain Python values out."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pyarrow as pa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saferoom._proto.saferoom.v1 import audit_pb2 as _audit_pb2
from saferoom._proto.saferoom.v1 import audit_pb2_grpc as _audit_pb2_grpc
from saferoom._proto.saferoom.v1 import budgets_pb2 as _budgets_pb2
from saferoom._proto.saferoom.v1 import budgets_pb2_grpc as _budgets_pb2_grpc
from saferoom._proto.saferoom.v1 import catalog_pb2 as _catalog_pb2
from saferoom._proto.saferoom.v1 import catalog_pb2_grpc as _catalog_pb2_grpc
from saferoom._proto.saferoom.v1 import checks_pb2 as _checks_pb2
from saferoom._proto.saferoom.v1 import checks_pb2_grpc as _checks_pb2_grpc
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import jobs_pb2_grpc as _jobs_pb2_grpc
from saferoom._proto.saferoom.v1 import mock_pb2 as _mock_pb2
from saferoom._proto.saferoom.v1 import mock_pb2_grpc as _mock_pb2_grpc
from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from saferoom._proto.saferoom.v1 import packages_pb2_grpc as _packages_pb2_grpc
from saferoom._proto.saferoom.v1 import review_pb2 as _review_pb2
from saferoom._proto.saferoom.v1 import review_pb2_grpc as _review_pb2_grpc
from saferoom.audit import AuditRecord, Checkpoint, VerifyReport
from saferoom.catalog.manifest import Column, DatasetInfo, Policy
from saferoom.checks import Decision, result_digest, sign_decision
from saferoom.client.profile import Profile

if TYPE_CHECKING:
    from saferoom.client.budgets import RunCost
from saferoom.errors import (
    ERROR_CODE_METADATA_KEY,
    InvalidRequest,
    SaferoomError,
    Unavailable,
    error_from_code,
)
from saferoom.identity import load_signing_key
from saferoom.packages import Package, package_from_files, read_package_files, sign_approval
from saferoom.wire import enum_from_proto, value_from_proto, value_to_proto

if TYPE_CHECKING:
    from saferoom.mock.service import MockInfo

__all__ = [
    "Budget",
    "CheckDecisionInfo",
    "Client",
    "HeldOutput",
    "HeldResult",
    "Job",
    "PackageReview",
    "PackageSummary",
    "Result",
    "ResultOutput",
]

_STATUS_NAMES = {v: k.removeprefix("PACKAGE_STATUS_").lower() for k, v in _packages_pb2.PackageStatus.items()}
DAY = 86_400

_STATE_NAMES = {v: k.removeprefix("JOB_STATE_").lower() for k, v in _jobs_pb2.JobState.items()}
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """A job as the server reports it."""

    id: str
    # queued | running | releasing | succeeded | failed | cancelled | awaiting_check | rejected | changes_requested
    state: str
    package_hash: str
    package_name: str
    package_version: str
    params: dict[str, Any]
    datasets: list[str]
    error_code: str
    error_message: str
    owner: str
    created_at: float | None = None  # seconds since the epoch (UTC): queued
    started_at: float | None = None
    finished_at: float | None = None
    dataset_versions: dict[str, str] = field(default_factory=dict)  # dataset -> version it read

    @property
    def finished(self) -> bool:
        """Settled: final, or awaiting an output checker (nothing more happens without a person)."""
        return self.state in _SETTLED


_SETTLED = ("succeeded", "failed", "cancelled", "awaiting_check", "rejected", "changes_requested")
_DECISION_CODES = {
    Decision.APPROVE: _checks_pb2.CHECK_DECISION_APPROVE,
    Decision.REJECT: _checks_pb2.CHECK_DECISION_REJECT,
    Decision.REQUEST_CHANGES: _checks_pb2.CHECK_DECISION_REQUEST_CHANGES,
}
_DECISION_NAMES = {code: d.value for d, code in _DECISION_CODES.items()}


@dataclass(frozen=True)
class ResultOutput:
    """One released output: a table (Arrow) or a scalar, and what disclosure control did to it."""

    name: str
    kind: str
    table: pa.Table | None
    value: Any
    report: dict[str, Any]

    def frame(self) -> Any:
        """The table as a pandas DataFrame (categories as pandas categoricals); needs pandas installed."""
        if self.table is None:
            raise ValueError(f"output {self.name!r} is a value, not a table: use .value")
        import importlib.util

        if importlib.util.find_spec("pandas") is None:
            raise ImportError("DataFrames need pandas: pip install 'saferoom[pandas]'")
        return self.table.to_pandas()


@dataclass(frozen=True)
class Result:
    """A released result: its outputs in the order the algorithm returned them, and what the algorithm printed."""

    job_id: str
    outputs: list[ResultOutput]
    printed: str = ""

    def output(self, name: str) -> ResultOutput:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def tables(self) -> dict[str, pa.Table]:
        """Every table output, by name (pyarrow)."""
        return {o.name: o.table for o in self.outputs if o.table is not None}

    def frames(self) -> dict[str, Any]:
        """Every table output as a pandas DataFrame, by name."""
        return {o.name: o.frame() for o in self.outputs if o.table is not None}

    def values(self) -> dict[str, Any]:
        """Every scalar output, by name."""
        return {o.name: o.value for o in self.outputs if o.table is None}


@dataclass(frozen=True)
class PackageSummary:
    """A package as the server reports it, with its review status."""

    hash: str
    name: str
    version: str
    description: str
    datasets: list[str]
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "unspecified"  # pending | approved | rejected | revoked | expired | invalid
    status_reason: str = ""
    submitters: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    approver: str = ""
    approved_until: float | None = None


@dataclass(frozen=True)
class Budget:
    """A researcher's privacy budget on one dataset: the totals, what was spent, what remains."""

    researcher: str
    dataset: str
    epsilon_total: float
    delta_total: float
    epsilon_spent: float
    delta_spent: float
    epsilon_remaining: float
    delta_remaining: float
    jobs_charged: int
    set_by: str
    set_at: float  # UTC seconds

    def to_data(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PackageReview:
    """What an operator reviews: the package, its files, and the diff against the last approved version."""

    package: PackageSummary
    files: dict[str, bytes]
    previous: PackageSummary | None
    diff: str


@dataclass(frozen=True)
class HeldOutput:
    """One held output exactly as stored (what the result hash covers), with the checker's view of it."""

    name: str
    kind: str
    arrow_ipc: bytes
    value_json: str
    report_json: str
    check: dict[str, Any]
    flags: list[str]

    @property
    def table(self) -> pa.Table | None:
        return pa.ipc.open_stream(pa.py_buffer(self.arrow_ipc)).read_all() if self.arrow_ipc else None

    @property
    def value(self) -> Any:
        return json.loads(self.value_json) if self.value_json else None

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.report_json)
        return data

    def hash_part(self) -> tuple[str, str, bytes, str]:
        payload = self.arrow_ipc if self.arrow_ipc else self.value_json.encode()
        return (self.name, self.kind, payload, self.report_json)


@dataclass(frozen=True)
class CheckDecisionInfo:
    """One checker's recorded decision."""

    checker: str
    decision: str  # approve | reject | request_changes
    reason: str
    decided_at: float
    signature: bytes = field(repr=False)


@dataclass(frozen=True)
class HeldResult:
    """A result held for output checking, as a checker sees it."""

    job: Job
    result_hash: str
    checkers_required: int
    outputs: list[HeldOutput]
    printed: str
    files: dict[str, bytes]
    submitters: list[str]
    decisions: list[CheckDecisionInfo]
    held_at: float
    submitted_at: float = 0.0  # when the researcher ran it (UTC seconds)
    started_at: float = 0.0

    def computed_hash(self) -> str:
        """The result hash recomputed here from the outputs as received: what a decision signs."""
        return result_digest(o.hash_part() for o in self.outputs)


def _held(p: _checks_pb2.HeldResult) -> HeldResult:
    return HeldResult(
        job=_job(p.job),
        result_hash=p.result_hash,
        checkers_required=p.checkers_required,
        outputs=[
            HeldOutput(
                o.name,
                enum_from_proto(_jobs_pb2.OutputKind, o.kind),
                bytes(o.arrow_ipc),
                o.value_json,
                o.report_json,
                json.loads(o.check_json or "{}"),
                list(o.flags),
            )
            for o in p.outputs
        ],
        printed=p.printed,
        files={f.name: bytes(f.content) for f in p.files},
        submitters=list(p.submitters),
        decisions=[
            CheckDecisionInfo(
                d.checker,
                _DECISION_NAMES.get(d.decision, "unspecified"),
                d.reason,
                d.decided_at.ToNanoseconds() / 1e9,
                bytes(d.signature),
            )
            for d in p.decisions
        ],
        held_at=p.held_at.ToNanoseconds() / 1e9,
        submitted_at=p.job.created_at.ToNanoseconds() / 1e9,
        started_at=p.job.started_at.ToNanoseconds() / 1e9,
    )


def _job(p: _jobs_pb2.Job) -> Job:
    return Job(
        id=p.id,
        state=_STATE_NAMES.get(p.state, "unspecified"),
        package_hash=p.package_hash,
        package_name=p.package_name,
        package_version=p.package_version,
        params={k: value_from_proto(v) for k, v in p.params.items()},
        datasets=list(p.datasets),
        error_code=p.error_code,
        error_message=p.error_message,
        owner=p.owner,
        created_at=_seconds(p, "created_at"),
        started_at=_seconds(p, "started_at"),
        finished_at=_seconds(p, "finished_at"),
        dataset_versions=dict(p.dataset_versions),
    )


def _seconds(p: Any, name: str) -> float | None:
    return float(getattr(p, name).ToDatetime(UTC).timestamp()) if p.HasField(name) else None


def _dataset(p: _catalog_pb2.Dataset) -> DatasetInfo:
    columns = tuple(
        Column(
            name=c.name,
            type=enum_from_proto(_catalog_pb2.ColumnType, c.type),
            description=c.description,
            unit=c.unit or None,
            min=c.min if c.HasField("min") else None,
            max=c.max if c.HasField("max") else None,
            categories=tuple(c.categories) or None,
            magnitude=c.magnitude,
        )
        for c in p.columns
    )
    return DatasetInfo(
        name=p.name,
        description=p.description,
        file=f"{p.name}.arrow",
        rows=p.rows,
        sensitivity="public" if p.sensitivity == _catalog_pb2.SENSITIVITY_PUBLIC else "personal",
        columns=columns,
        privacy_unit=p.privacy_unit or None,
        one_row_per_unit=p.one_row_per_unit,
        policy=Policy(
            min_contributors=p.policy.min_contributors,
            dominance_n=p.policy.dominance_n,
            dominance_k=p.policy.dominance_k,
            p_percent=p.policy.p_percent,
            differential_privacy=p.policy.differential_privacy,
            max_contributions=p.policy.max_contributions,
            dp_delta=p.policy.dp_delta,
            output_checking=enum_from_proto(_catalog_pb2.OutputChecking, p.policy.output_checking) or "none",
            output_checkers=p.policy.output_checkers or 1,
        ),
    )


def _report(r: _jobs_pb2.ReleaseReport) -> dict[str, Any]:
    return {
        "kind": enum_from_proto(_jobs_pb2.OutputKind, r.kind),
        "rows": r.rows,
        "suppressed_cells": r.suppressed_cells,
        "rules": [
            {
                "rule": enum_from_proto(_jobs_pb2.RuleKind, rule.kind) or "unspecified",
                "explanation": rule.explanation,
                "cells_suppressed": rule.cells_suppressed,
                "threshold": rule.threshold,
                "datasets": list(rule.datasets),
                "noise": [
                    {
                        "column": n.column,
                        "mechanism": n.mechanism,
                        "epsilon": n.epsilon,
                        "delta": n.delta,
                        "scale": n.scale,
                        "sensitivity": n.sensitivity,
                        "ci95": n.ci95,
                        "resolution": n.resolution,
                        "note": n.note,
                    }
                    for n in rule.noise
                ],
            }
            for rule in r.rules
        ],
    }


class Client:
    """Talks to one saferoom server; errors arrive as the ``saferoom.errors`` classes the server raised."""

    def __init__(
        self,
        address: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
        channel: grpc.Channel | None = None,
        profile: Profile | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.profile = profile
        if channel is None:
            if credentials is None:
                raise InvalidRequest("the server speaks mutual TLS only: connect with a profile's credentials")
            channel = grpc.secure_channel(
                address,
                credentials,
                options=[
                    ("grpc.max_receive_message_length", 64 * 2**20),
                    ("grpc.max_send_message_length", 64 * 2**20),
                ],
            )
        self._channel = channel
        self._catalog = _catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self._packages = _packages_pb2_grpc.PackagesServiceStub(self._channel)
        self._review = _review_pb2_grpc.ReviewServiceStub(self._channel)
        self._jobs = _jobs_pb2_grpc.JobsServiceStub(self._channel)
        self._audit = _audit_pb2_grpc.AuditServiceStub(self._channel)
        self._budgets = _budgets_pb2_grpc.BudgetsServiceStub(self._channel)
        self._checks = _checks_pb2_grpc.ChecksServiceStub(self._channel)
        self._mock = _mock_pb2_grpc.MockServiceStub(self._channel)

    @classmethod
    def from_profile(
        cls, profile: Profile | Path | None = None, *, server: str | None = None, timeout: float = 30.0
    ) -> Client:
        """A client for the user a profile names (default: ``default_profile_path()``), connected to ``server``,
        else ``$SAFEROOM_SERVER``, else the profile's server (``Profile.with_server``)."""
        if not isinstance(profile, Profile):
            profile = Profile.load(profile)
        profile, _ = profile.with_server(server)
        return cls(profile.server, credentials=profile.credentials(), timeout=timeout, profile=profile)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return fn(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise _translate(exc) from exc

    def check(self, wait: float = 0.0) -> str:
        """The server's health as it answers this identity (``SERVING`` once it is up): through the mutual-TLS
        handshake and the server's permission check, so a revoked or foreign certificate fails here. With
        ``wait`` > 0, waits up to ``wait`` seconds for a server that is not up yet instead of failing at once."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=wait or self.timeout, wait_for_ready=wait > 0)
        except grpc.RpcError as exc:
            raise _translate(exc) from exc
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    # -------------------------------------------------------------- catalog

    def list_datasets(self) -> list[DatasetInfo]:
        reply = self._call(self._catalog.ListDatasets, _catalog_pb2.ListDatasetsRequest())
        return [_dataset(d) for d in reply.datasets]

    def describe_dataset(self, name: str) -> DatasetInfo:
        reply = self._call(self._catalog.DescribeDataset, _catalog_pb2.DescribeDatasetRequest(name=name))
        return _dataset(reply.dataset)

    def download_mock(self, name: str, rows: int = 0, seed: int = 0) -> tuple[DatasetInfo, pa.Table]:
        """A mock copy of a dataset: its description and a synthetic Arrow table."""
        request = _catalog_pb2.DownloadMockRequest(name=name, rows=rows, seed=seed)
        info: DatasetInfo | None = None
        chunks: list[bytes] = []
        try:
            for chunk in self._catalog.DownloadMock(request, timeout=self.timeout):
                if chunk.HasField("dataset"):
                    info = _dataset(chunk.dataset)
                chunks.append(chunk.arrow_ipc)
        except grpc.RpcError as exc:
            raise _translate(exc) from exc
        if info is None:
            raise SaferoomError("the server sent no dataset description")
        table = pa.ipc.open_stream(pa.py_buffer(b"".join(chunks))).read_all()
        return info, table

    # -------------------------------------------------------------- packages

    def submit_package(self, package: Package | Path | Mapping[str, bytes]) -> tuple[PackageSummary, bool]:
        """Submit a package (a directory, a .zip, a loaded ``Package`` or its files); returns it and whether
        the content is new to the server."""
        if isinstance(package, Path):  # read, not validated here: the server reports every problem at once
            package = read_package_files(package)
        files = package.files if isinstance(package, Package) else package
        request = _packages_pb2.SubmitPackageRequest(
            files=[_packages_pb2.PackageFile(name=n, content=c) for n, c in files.items()]
        )
        reply = self._call(self._packages.SubmitPackage, request)
        return _package(reply.package), reply.created

    def list_packages(self) -> list[PackageSummary]:
        reply = self._call(self._packages.ListPackages, _packages_pb2.ListPackagesRequest())
        return [_package(p) for p in reply.packages]

    def get_package(self, ref: str) -> PackageSummary:
        return _package(self._call(self._packages.GetPackage, _packages_pb2.GetPackageRequest(ref=ref)).package)

    def download_package(self, ref: str) -> tuple[PackageSummary, dict[str, bytes]]:
        """A package's files as stored, checked here against its hash."""
        reply = self._call(self._packages.DownloadPackage, _packages_pb2.DownloadPackageRequest(ref=ref))
        files = {f.name: bytes(f.content) for f in reply.files}
        if package_from_files(files).hash != reply.package.hash:
            raise SaferoomError("the server sent files that do not match the package hash")
        return _package(reply.package), files

    # -------------------------------------------------------------- review (operators)

    def list_pending(self) -> list[PackageSummary]:
        reply = self._call(self._review.ListPending, _review_pb2.ListPendingRequest())
        return [_package(p) for p in reply.packages]

    def review_package(self, package_hash: str) -> PackageReview:
        reply = self._call(self._review.GetPackageReview, _review_pb2.GetPackageReviewRequest(hash=package_hash))
        previous = _package(reply.previous) if reply.HasField("previous") else None
        files = {f.name: bytes(f.content) for f in reply.files}
        return PackageReview(_package(reply.package), files, previous, reply.diff)

    def approve_package(
        self, package_hash: str, days: float = 90, signing_key: Path | None = None, approver: str | None = None
    ) -> PackageSummary:
        """Sign an approval of the files *as reviewed here* (re-hashed locally) and record it."""
        key_path = signing_key or (self.profile.signing_key if self.profile else None)
        name = approver or (self.profile.name if self.profile else None)
        if key_path is None or name is None:
            raise InvalidRequest("approving needs the operator's signing key and name (an operator's profile)")
        if not (6 <= len(package_hash) <= 64 and all(c in "0123456789abcdef" for c in package_hash)):
            raise InvalidRequest("approve a package by its hash (or at least its first 6 characters): exactly what "
                                 "you reviewed, never by name")  # fmt: skip
        if not (math.isfinite(days) and 0 < days <= 3650):
            raise InvalidRequest("an approval lasts a number of days between 0 and 3650")
        review = self.review_package(package_hash)
        package = package_from_files(review.files)
        if not review.package.hash.startswith(package_hash) or package.hash != review.package.hash:
            raise SaferoomError("the server sent files that do not match the package hash; not signing")
        package_hash = package.hash
        not_before = int(time.time())
        not_after = not_before + int(days * DAY)
        signature = sign_approval(load_signing_key(key_path), package, name, not_before, not_after)
        request = _review_pb2.ApprovePackageRequest(
            hash=package_hash, not_before=not_before, not_after=not_after, signature=signature
        )
        return _package(self._call(self._review.ApprovePackage, request).package)

    def reject_package(self, package_hash: str, reason: str) -> PackageSummary:
        request = _review_pb2.RejectPackageRequest(hash=package_hash, reason=reason)
        return _package(self._call(self._review.RejectPackage, request).package)

    def revoke_approval(self, package_hash: str, reason: str) -> PackageSummary:
        request = _review_pb2.RevokeApprovalRequest(hash=package_hash, reason=reason)
        return _package(self._call(self._review.RevokeApproval, request).package)

    # -------------------------------------------------------------- output checkers

    def list_held(self) -> list[HeldResult]:
        """Held results awaiting a decision that this checker may check (summaries: no outputs, no files)."""
        reply = self._call(self._checks.ListHeld, _checks_pb2.ListHeldRequest())
        return [_held(h) for h in reply.held]

    def get_held(self, job_id: str) -> HeldResult:
        """A held result in full: outputs, package source, report, flags, who ran it and with what."""
        return _held(self._call(self._checks.GetHeld, _checks_pb2.GetHeldRequest(job_id=job_id)).held)

    def decide(
        self,
        job_id: str,
        decision: Decision | str,
        reason: str = "",
        signing_key: Path | None = None,
        checker: str | None = None,
        reviewed: HeldResult | None = None,
    ) -> HeldResult:
        """Sign a decision over the result *as reviewed here* (its hash recomputed locally) and record it.

        ``reviewed`` is the held result the checker looked at (fetched again if not given): the signature is
        bound to what it holds, so a result changed since is not what gets approved."""
        decision = Decision(decision)
        key_path = signing_key or (self.profile.signing_key if self.profile else None)
        name = checker or (self.profile.name if self.profile else None)
        if key_path is None or name is None:
            raise InvalidRequest("deciding needs the output checker's signing key and name (a checker's profile)")
        held = reviewed or self.get_held(job_id)
        result_hash = held.computed_hash()
        if result_hash != held.result_hash:
            raise SaferoomError("the server sent outputs that do not match the result hash; not signing")
        decided_at = int(time.time())
        signature = sign_decision(load_signing_key(key_path), job_id, result_hash, decision, reason.strip(), name,
                                  decided_at)  # fmt: skip
        request = _checks_pb2.DecideRequest(
            job_id=job_id,
            decision=_DECISION_CODES[decision],
            reason=reason.strip(),
            result_hash=result_hash,
            decided_at=decided_at,
            signature=signature,
        )
        return _held(self._call(self._checks.Decide, request).held)

    def approve_result(self, job_id: str, reason: str = "", reviewed: HeldResult | None = None) -> HeldResult:
        return self.decide(job_id, Decision.APPROVE, reason, reviewed=reviewed)

    def reject_result(self, job_id: str, reason: str, reviewed: HeldResult | None = None) -> HeldResult:
        return self.decide(job_id, Decision.REJECT, reason, reviewed=reviewed)

    def request_changes(self, job_id: str, reason: str, reviewed: HeldResult | None = None) -> HeldResult:
        return self.decide(job_id, Decision.REQUEST_CHANGES, reason, reviewed=reviewed)

    # -------------------------------------------------------------- privacy budgets

    def set_budget(self, researcher: str, dataset: str, epsilon: float, delta: float | None = None) -> Budget:
        """Operators: set what ``researcher`` may spend on a differentially private dataset in all. Without
        ``delta``, the delta that lets ``epsilon`` (not delta) limit: the dataset's per-run delta for every run
        the epsilon pays for of the cheapest approved package on it (``saferoom.client.budgets.default_delta``)."""
        if delta is None:
            from saferoom.client.budgets import default_delta

            delta = default_delta(self, researcher, dataset, epsilon)
        request = _budgets_pb2.SetBudgetRequest(researcher=researcher, dataset=dataset, epsilon=epsilon, delta=delta)
        return _budget(self._call(self._budgets.SetBudget, request).budget)

    def run_costs(self, budget: Budget) -> list[RunCost]:
        """What one run of each approved package on ``budget.dataset`` spends, and how many runs ``budget``
        still pays for (by epsilon, by delta, in all), cheapest first."""
        from saferoom.client.budgets import run_costs

        return run_costs(self, budget)

    def list_budgets(self, researcher: str = "", dataset: str = "") -> list[Budget]:
        """The budgets you may see (your own; everyone's for operators and auditors), optionally filtered."""
        request = _budgets_pb2.ListBudgetsRequest(researcher=researcher, dataset=dataset)
        return [_budget(b) for b in self._call(self._budgets.ListBudgets, request).budgets]

    # -------------------------------------------------------------- mock data

    def mock_info(self, dataset: str) -> MockInfo:
        """What you may know about a dataset's mock data (operators: also real-vs-mock fidelity and budget)."""
        reply = self._call(self._mock.GetMockInfo, _mock_pb2.GetMockInfoRequest(dataset=dataset))
        return _mock_info(reply.info)

    def set_mock_budget(self, dataset: str, epsilon: float) -> tuple[float, float]:
        """Operators: the total epsilon publishing mock data of ``dataset`` may spend; (total, spent)."""
        request = _mock_pb2.SetMockBudgetRequest(dataset=dataset, epsilon=epsilon)
        reply = self._call(self._mock.SetMockBudget, request)
        return reply.epsilon_total, reply.epsilon_spent

    def publish_mock(self, dataset: str, epsilon: float) -> MockInfo:
        """Operators: measure ``dataset`` under ``epsilon`` (charged to its publication budget) for mock data."""
        request = _mock_pb2.PublishMockRequest(dataset=dataset, epsilon=epsilon)
        return _mock_info(self._call(self._mock.PublishMock, request, timeout=max(self.timeout, 300)).info)

    # -------------------------------------------------------------- audit (auditors)

    def read_log(
        self,
        *,
        after_seq: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        actor: str = "",
        events: list[str] | None = None,
        package: str = "",
        job: str = "",
        follow: bool = False,
        limit: int = 0,
        tail: int = 0,
        timeout: float | None = None,
    ) -> Iterator[AuditRecord]:
        """Audit records, oldest first, filtered; ``follow`` keeps streaming new ones."""
        request = _audit_pb2.ReadLogRequest(
            after_seq=after_seq,
            actor=actor,
            events=events or [],
            package=package,
            job=job,
            follow=follow,
            limit=limit,
            tail=tail,
        )
        if since is not None:
            request.since.FromDatetime(since)
        if until is not None:
            request.until.FromDatetime(until)
        try:
            for p in self._audit.ReadLog(request, timeout=timeout if follow else (timeout or self.timeout * 10)):
                yield _record(p.record)
        except grpc.RpcError as exc:
            raise _translate(exc) from exc

    def get_checkpoint(self) -> Checkpoint:
        """A fresh signed checkpoint of the log: keep it to prove later that nothing before it changed."""
        c = self._call(self._audit.GetCheckpoint, _audit_pb2.GetCheckpointRequest()).checkpoint
        return Checkpoint(c.covers, c.head, c.signature, c.public_key)

    def verify_log(self, anchors: tuple[Checkpoint, ...] = ()) -> VerifyReport:
        request = _audit_pb2.VerifyLogRequest(
            anchors=[
                _audit_pb2.Checkpoint(covers=a.covers, head=a.head, signature=a.signature, public_key=a.public_key)
                for a in anchors
            ]
        )
        r = self._call(self._audit.VerifyLog, request, timeout=max(self.timeout, 600))
        return VerifyReport(
            r.ok, r.records, r.checkpoints, r.last_seq, r.head, r.first_bad_seq or None, r.reason, r.decisions
        )

    # -------------------------------------------------------------- jobs

    def run_job(
        self,
        package: str,
        params: Mapping[str, Any] | None = None,
        datasets: list[str] | None = None,
        request_id: str = "",
    ) -> Job:
        """Queue a run of an approved package; ``request_id`` makes retries return the same job."""
        request = _jobs_pb2.RunJobRequest(
            package=package,
            params={k: value_to_proto(v) for k, v in (params or {}).items()},
            datasets=datasets or [],
            request_id=request_id,
        )
        return _job(self._call(self._jobs.RunJob, request).job)

    def get_job(self, job_id: str) -> Job:
        return _job(self._call(self._jobs.GetJob, _jobs_pb2.GetJobRequest(job_id=job_id)).job)

    def watch_job(self, job_id: str, timeout: float | None = None) -> Iterator[Job]:
        """Yield the job on every state change until it finishes."""
        try:
            for p in self._jobs.WatchJob(_jobs_pb2.WatchJobRequest(job_id=job_id), timeout=timeout):
                yield _job(p.job)
        except grpc.RpcError as exc:
            raise _translate(exc) from exc

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job settles: a final state, or awaiting_check (then a person decides, perhaps days
        later: wait again or poll ``get_job``)."""
        job: Job | None = None
        for job in self.watch_job(job_id, timeout=timeout):
            if job.finished:
                return job
        return job if job is not None else self.get_job(job_id)

    def cancel_job(self, job_id: str) -> Job:
        return _job(self._call(self._jobs.CancelJob, _jobs_pb2.CancelJobRequest(job_id=job_id)).job)

    def list_jobs(
        self,
        page_size: int = 20,
        page_token: str = "",
        states: Sequence[str] = (),
        owner: str = "",
        package: str = "",
        since: datetime | None = None,
    ) -> tuple[list[Job], str]:
        """One page of jobs, newest first (the next page's token, or ""), filtered by state, owner (operators),
        package (hash, prefix or name) and creation time."""
        request = _jobs_pb2.ListJobsRequest(page_size=page_size, page_token=page_token, owner=owner, package=package)
        for state in states:
            try:
                request.states.append(_jobs_pb2.JobState.Value(f"JOB_STATE_{state.upper()}"))  # type: ignore[arg-type]
            except ValueError:
                raise InvalidRequest(f"unknown job state {state[:40]!r}") from None
        if since is not None:
            request.since.FromDatetime(since)
        reply = self._call(self._jobs.ListJobs, request)
        return [_job(j) for j in reply.jobs], reply.next_page_token

    def iter_jobs(self, **filters: Any) -> Iterator[Job]:
        """Every job matching ``filters`` (as ``list_jobs``), newest first, page by page."""
        token = ""
        while True:
            jobs, token = self.list_jobs(page_size=100, page_token=token, **filters)
            yield from jobs
            if not token:
                return

    def get_result(self, job_id: str) -> Result:
        reply = self._call(self._jobs.GetResult, _jobs_pb2.GetResultRequest(job_id=job_id)).result
        outputs = []
        for o in reply.outputs:
            content = o.WhichOneof("content")
            table = pa.ipc.open_stream(pa.py_buffer(o.arrow_ipc)).read_all() if content == "arrow_ipc" else None
            value = value_from_proto(o.value) if content == "value" else None
            kind = enum_from_proto(_jobs_pb2.OutputKind, o.report.kind)
            outputs.append(ResultOutput(o.name, kind, table, value, _report(o.report)))
        return Result(reply.job_id, outputs, reply.printed)


def _record(p: _audit_pb2.AuditRecord) -> AuditRecord:
    ts = p.ts.ToDatetime(tzinfo=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return AuditRecord(
        p.seq,
        ts,
        p.event,
        p.actor,
        p.role,
        json.loads(p.objects_json or "{}"),
        json.loads(p.summary_json or "{}"),
        p.prev,
        p.hash,
    )


def _budget(p: _budgets_pb2.Budget) -> Budget:
    return Budget(
        researcher=p.researcher,
        dataset=p.dataset,
        epsilon_total=p.epsilon_total,
        delta_total=p.delta_total,
        epsilon_spent=p.epsilon_spent,
        delta_spent=p.delta_spent,
        epsilon_remaining=p.epsilon_remaining,
        delta_remaining=p.delta_remaining,
        jobs_charged=p.jobs_charged,
        set_by=p.set_by,
        set_at=p.set_at.ToNanoseconds() / 1e9,
    )


def _package(p: _packages_pb2.Package) -> PackageSummary:
    parameters = {
        q.name: {
            "type": enum_from_proto(_packages_pb2.ParameterType, q.type),
            "default": json.loads(q.default_json) if q.default_json else None,
            "min": q.min if q.HasField("min") else None,
            "max": q.max if q.HasField("max") else None,
            "choices": list(q.choices),
            "description": q.description,
        }
        for q in p.parameters
    }
    return PackageSummary(
        hash=p.hash,
        name=p.name,
        version=p.version,
        description=p.description,
        datasets=list(p.datasets),
        parameters=parameters,
        status=_STATUS_NAMES.get(p.status, "unspecified"),
        status_reason=p.status_reason,
        submitters=list(p.submitters),
        files=list(p.files),
        approver=p.approval.approver if p.HasField("approval") else "",
        approved_until=p.approval.not_after.seconds if p.HasField("approval") else None,
    )


def _translate(exc: grpc.RpcError) -> SaferoomError:
    """Rebuild the server's domain error from the status and the ``saferoom-error-code`` trailer."""
    code = None
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == ERROR_CODE_METADATA_KEY:
            code = value
    details = exc.details() if hasattr(exc, "details") else None
    message = details or str(exc.code() if hasattr(exc, "code") else exc)
    if code is not None:
        error = error_from_code(code, message)
    elif hasattr(exc, "code") and exc.code() == grpc.StatusCode.UNAVAILABLE:
        error = Unavailable(f"the server is unreachable: {message}")
    else:
        error = SaferoomError(message)
    error.grpc_code = exc.code() if hasattr(exc, "code") else None  # type: ignore[attr-defined]
    return error


def _mock_info(p: _mock_pb2.MockInfo) -> MockInfo:
    from saferoom.mock.service import MockInfo, MockKind

    kinds = {
        _mock_pb2.MOCK_KIND_SYNTHETIC: MockKind.SYNTHETIC,
        _mock_pb2.MOCK_KIND_PUBLIC_ROWS: MockKind.PUBLIC_ROWS,
    }
    return MockInfo(
        dataset=p.dataset,
        kind=kinds.get(p.kind, MockKind.DECLARED_DOMAIN),
        label=p.label,
        version=p.version,
        epsilon=p.epsilon,
        delta=p.delta,
        structure=tuple(p.structure),
        rows=p.rows,
        estimated={f.marginal: f.tvd for f in p.estimated},
        note=p.note,
        measured={f.marginal: f.tvd for f in p.measured} or None,
        mean_tvd_structure=p.mean_tvd_structure if p.HasField("mean_tvd_structure") else None,
        budget_epsilon_total=p.budget_epsilon_total if p.HasField("budget_epsilon_total") else None,
        budget_epsilon_spent=p.budget_epsilon_spent if p.HasField("budget_epsilon_spent") else None,
        published_by=p.published_by,
        dataset_hash=p.dataset_hash,
    )
