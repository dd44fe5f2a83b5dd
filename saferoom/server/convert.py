"""Conversions between protobuf messages and domain values: the servicers' only translation layer."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, overload

from google.protobuf.timestamp_pb2 import Timestamp

from saferoom._proto.saferoom.v1 import budgets_pb2 as _budgets_pb2
from saferoom._proto.saferoom.v1 import catalog_pb2 as _catalog_pb2
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from saferoom.catalog.manifest import DatasetInfo
from saferoom.errors import InvalidPackage, InvalidRequest
from saferoom.identity import Identity, Role
from saferoom.packages import Package, PackageView
from saferoom.packages.package import MAX_FILES
from saferoom.store import Budget, JobRecord, StoredResult
from saferoom.store.budgets import delta_value, epsilon_value
from saferoom.wire import enum_to_proto, value_from_proto, value_to_proto

__all__ = [
    "budget_to_proto",
    "dataset_to_proto",
    "datasets_from_proto",
    "files_from_proto",
    "files_to_proto",
    "job_to_proto",
    "package_to_proto",
    "package_view_to_proto",
    "params_from_proto",
    "result_to_proto",
    "value_from_proto",
    "value_to_proto",
]

MAX_PARAMS = 64
MAX_PARAM_NAME = 128
MAX_DATASETS = 64

_PACKAGE_STATUS = {
    "pending": _packages_pb2.PACKAGE_STATUS_PENDING,
    "approved": _packages_pb2.PACKAGE_STATUS_APPROVED,
    "rejected": _packages_pb2.PACKAGE_STATUS_REJECTED,
    "revoked": _packages_pb2.PACKAGE_STATUS_REVOKED,
    "expired": _packages_pb2.PACKAGE_STATUS_EXPIRED,
    "invalid": _packages_pb2.PACKAGE_STATUS_INVALID,
}

_STATES = {
    "queued": _jobs_pb2.JOB_STATE_QUEUED,
    "running": _jobs_pb2.JOB_STATE_RUNNING,
    "releasing": _jobs_pb2.JOB_STATE_RELEASING,
    "succeeded": _jobs_pb2.JOB_STATE_SUCCEEDED,
    "failed": _jobs_pb2.JOB_STATE_FAILED,
    "cancelled": _jobs_pb2.JOB_STATE_CANCELLED,
    "awaiting_check": _jobs_pb2.JOB_STATE_AWAITING_CHECK,
    "rejected": _jobs_pb2.JOB_STATE_REJECTED,
    "changes_requested": _jobs_pb2.JOB_STATE_CHANGES_REQUESTED,
}
_STATE_NAMES: dict[int, str] = {int(number): name for name, number in _STATES.items()}


def states_from_proto(values: Iterable[int]) -> list[str]:
    """Job states a client asked for; INVALID_ARGUMENT for a number that is no state."""
    names = []
    for value in values:
        if value not in _STATE_NAMES:
            raise InvalidRequest(f"unknown job state {int(value)}")
        names.append(_STATE_NAMES[value])
    return names


def dataset_to_proto(info: DatasetInfo) -> _catalog_pb2.Dataset:
    columns = [
        _catalog_pb2.Column(
            name=c.name,
            type=enum_to_proto(_catalog_pb2.ColumnType, c.type),
            description=c.description,
            unit=c.unit or "",
            min=c.min,
            max=c.max,
            categories=list(c.categories or ()),
            magnitude=c.magnitude,
        )
        for c in info.columns
    ]
    return _catalog_pb2.Dataset(
        name=info.name,
        description=info.description,
        sensitivity=enum_to_proto(_catalog_pb2.Sensitivity, info.sensitivity),
        privacy_unit=info.privacy_unit or "",
        one_row_per_unit=info.one_row_per_unit,
        rows=info.rows,
        columns=columns,
        policy=_catalog_pb2.Policy(
            min_contributors=info.policy.min_contributors,
            dominance_n=info.policy.dominance_n,
            dominance_k=info.policy.dominance_k,
            p_percent=info.policy.p_percent,
            differential_privacy=info.policy.differential_privacy,
            max_contributions=info.policy.max_contributions,
            dp_delta=info.policy.dp_delta,
            output_checking=enum_to_proto(_catalog_pb2.OutputChecking, info.policy.output_checking),
            output_checkers=info.policy.output_checkers,
        ),
    )


def package_to_proto(package: Package) -> _packages_pb2.Package:
    parameters = [
        _packages_pb2.Parameter(
            name=spec.name,
            type=enum_to_proto(_packages_pb2.ParameterType, spec.type),
            default_json=json.dumps(spec.default),
            min=spec.min,
            max=spec.max,
            choices=[str(c) for c in spec.choices or ()],
            description=spec.description or "",
        )
        for spec in package.parameters.values()
    ]
    return _packages_pb2.Package(
        hash=package.hash,
        name=package.name,
        version=package.version,
        description=package.description,
        entrypoint=package.entrypoint,
        datasets=list(package.datasets),
        parameters=parameters,
        files=sorted(package.files),
    )


def package_view_to_proto(view: PackageView, viewer: Identity) -> _packages_pb2.Package:
    """A package with its review status; a researcher who is not an operator sees only their own name."""
    out = package_to_proto(view.package)
    out.hash = view.record.hash
    out.status = _PACKAGE_STATUS[view.status.value]
    out.status_reason = view.status_reason
    submitters = view.record.submitters
    out.submitters.extend(submitters if viewer.has(Role.OPERATOR) else [n for n in submitters if n == viewer.name])
    out.created_at.CopyFrom(_timestamp(view.record.created_at))
    out.size = view.record.size
    if view.approval is not None:
        a = view.approval
        out.approval.CopyFrom(
            _packages_pb2.Approval(
                approver=a.approver,
                not_before=_timestamp(a.not_before),
                not_after=_timestamp(a.not_after),
                signature=a.signature,
                decided_at=_timestamp(a.decided_at),
            )
        )
    return out


def files_to_proto(package: Package) -> list[_packages_pb2.PackageFile]:
    return [_packages_pb2.PackageFile(name=n, content=package.files[n]) for n in sorted(package.files)]


def files_from_proto(files: Any) -> dict[str, bytes]:
    """Submitted files (hostile: names and sizes are validated by the package format, duplicates here)."""
    if len(files) > MAX_FILES:
        raise InvalidPackage(f"a package has at most {MAX_FILES} files")
    out: dict[str, bytes] = {}
    for f in files:
        if f.name in out:
            raise InvalidRequest(f"file {f.name[:80]!r} appears twice")
        out[f.name] = bytes(f.content)
    return out


def datasets_from_proto(names: Any) -> tuple[str, ...]:
    if len(names) > MAX_DATASETS or any(not n or len(n) > 64 for n in names):
        raise InvalidRequest(f"at most {MAX_DATASETS} dataset names of 1 to 64 characters")
    if len(set(names)) != len(names):
        raise InvalidRequest("dataset names must be unique")
    return tuple(names)


def params_from_proto(params: Mapping[str, _jobs_pb2.Value]) -> dict[str, Any]:
    """Job parameters from a request (hostile: bounded; types are checked against the package later)."""
    if len(params) > MAX_PARAMS:
        raise InvalidRequest(f"at most {MAX_PARAMS} parameters")
    out: dict[str, Any] = {}
    for name, value in params.items():
        if not name or len(name) > MAX_PARAM_NAME:
            raise InvalidRequest("parameter names must have 1 to 128 characters")
        out[name] = value_from_proto(value)
    return out


@overload
def _timestamp(seconds: float) -> Timestamp: ...
@overload
def _timestamp(seconds: None) -> None: ...
@overload
def _timestamp(seconds: float | None) -> Timestamp | None: ...
def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def job_to_proto(job: JobRecord) -> _jobs_pb2.Job:
    params = json.loads(job.params_json)
    return _jobs_pb2.Job(
        id=job.id,
        state=_STATES.get(job.state, _jobs_pb2.JOB_STATE_UNSPECIFIED),
        package_hash=job.package_hash,
        package_name=job.package_name,
        package_version=job.package_version,
        params={k: value_to_proto(v) for k, v in params.items()},
        datasets=json.loads(job.datasets_json),
        error_code=job.error_code or "",
        error_message=job.error_message or "",
        created_at=_timestamp(job.created_at),
        started_at=_timestamp(job.started_at),
        finished_at=_timestamp(job.finished_at),
        owner=job.owner,
        dataset_versions=dict(job.dataset_versions),
    )


_NOISE_NUMBERS = ("epsilon", "delta", "scale", "sensitivity", "ci95", "resolution")


def _report_to_proto(report: Mapping[str, Any]) -> _jobs_pb2.ReleaseReport:
    rules = [
        _jobs_pb2.ReleaseRule(
            kind=enum_to_proto(_jobs_pb2.RuleKind, str(r.get("rule", r.get("name", "")))),
            explanation=str(r.get("explanation", "")),
            cells_suppressed=int(r.get("cells_suppressed", 0)),
            threshold=int(r.get("threshold", 0) or 0),
            datasets=[str(d) for d in r.get("datasets", ())],
            noise=[
                _jobs_pb2.NoiseScale(
                    column=str(n.get("column", "")),
                    mechanism=str(n.get("mechanism", "")),
                    **{f: float(n.get(f, 0.0) or 0.0) for f in _NOISE_NUMBERS},
                    note=str(n.get("note", "")),
                )
                for n in r.get("noise", ())
            ],
        )
        for r in report.get("rules", ())
    ]
    return _jobs_pb2.ReleaseReport(
        kind=enum_to_proto(_jobs_pb2.OutputKind, str(report.get("kind", ""))),
        rows=int(report.get("rows", 0)),
        suppressed_cells=int(report.get("suppressed_cells", 0)),
        rules=rules,
    )


def result_to_proto(result: StoredResult) -> _jobs_pb2.Result:
    outputs = []
    for o in sorted(result.outputs, key=lambda o: o.position):
        report = _report_to_proto(json.loads(o.report_json))
        if o.arrow_ipc is not None:
            outputs.append(_jobs_pb2.Output(name=o.name, arrow_ipc=o.arrow_ipc, report=report))
        else:
            value = json.loads(o.value_json) if o.value_json is not None else None
            outputs.append(_jobs_pb2.Output(name=o.name, value=value_to_proto(value), report=report))
    printed = str(result.report.get("printed", "")) if isinstance(result.report, dict) else ""
    return _jobs_pb2.Result(job_id=result.job_id, outputs=outputs, printed=printed)


def budget_to_proto(budget: Budget) -> _budgets_pb2.Budget:
    return _budgets_pb2.Budget(
        researcher=budget.researcher,
        dataset=budget.dataset,
        epsilon_total=epsilon_value(budget.epsilon_total),
        delta_total=delta_value(budget.delta_total),
        epsilon_spent=epsilon_value(budget.epsilon_spent),
        delta_spent=delta_value(budget.delta_spent),
        epsilon_remaining=epsilon_value(budget.epsilon_remaining),
        delta_remaining=delta_value(budget.delta_remaining),
        jobs_charged=budget.jobs_charged,
        set_by=budget.set_by,
        set_at=_timestamp(budget.set_at),
    )
