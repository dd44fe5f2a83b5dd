"""A typed Python client for the saferoom server: plain Python values in, plain Python values out."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import pyarrow as pa

from saferoom._proto.saferoom.v1 import catalog_pb2 as _catalog_pb2
from saferoom._proto.saferoom.v1 import catalog_pb2_grpc as _catalog_pb2_grpc
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import jobs_pb2_grpc as _jobs_pb2_grpc
from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from saferoom._proto.saferoom.v1 import packages_pb2_grpc as _packages_pb2_grpc
from saferoom.catalog.manifest import Column, DatasetInfo, Policy
from saferoom.errors import ERROR_CODE_METADATA_KEY, SaferoomError, Unavailable, error_from_code
from saferoom.wire import value_from_proto, value_to_proto

__all__ = ["Client", "Job", "PackageSummary", "Result", "ResultOutput"]

_STATE_NAMES = {v: k.removeprefix("JOB_STATE_").lower() for k, v in _jobs_pb2.JobState.items()}
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """A job as the server reports it."""

    id: str
    state: str  # queued | running | succeeded | failed | cancelled
    package_hash: str
    package_name: str
    package_version: str
    params: dict[str, Any]
    datasets: list[str]
    error_code: str
    error_message: str
    owner: str

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class ResultOutput:
    """One released output: a table (Arrow) or a scalar, and what disclosure control did to it."""

    name: str
    kind: str
    table: pa.Table | None
    value: Any
    report: dict[str, Any]


@dataclass(frozen=True)
class Result:
    job_id: str
    outputs: list[ResultOutput]
    printed: str = ""

    def output(self, name: str) -> ResultOutput:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)


@dataclass(frozen=True)
class PackageSummary:
    hash: str
    name: str
    version: str
    description: str
    datasets: list[str]
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    )


def _dataset(p: _catalog_pb2.Dataset) -> DatasetInfo:
    columns = tuple(
        Column(
            name=c.name,
            type=c.type,
            description=c.description,
            unit=c.unit or None,
            min=c.min if c.HasField("min") else None,
            max=c.max if c.HasField("max") else None,
            categories=tuple(c.categories) or None,
        )
        for c in p.columns
    )
    return DatasetInfo(
        name=p.name,
        description=p.description,
        file=f"{p.name}.arrow",
        rows=p.rows,
        sensitivity="public" if p.sensitivity == "public" else "personal",
        columns=columns,
        privacy_unit=p.privacy_unit or None,
        one_row_per_unit=p.one_row_per_unit,
        policy=Policy(min_contributors=p.policy.min_contributors),
    )


def _report(r: _jobs_pb2.ReleaseReport) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "rows": r.rows,
        "suppressed_cells": r.suppressed_cells,
        "rules": [
            {
                "rule": rule.name,
                "explanation": rule.explanation,
                "cells_suppressed": rule.cells_suppressed,
                "threshold": rule.threshold,
                "datasets": list(rule.datasets),
            }
            for rule in r.rules
        ],
    }


class Client:
    """Talks to one saferoom server; errors arrive as the ``saferoom.errors`` classes the server raised."""

    def __init__(self, address: str, *, timeout: float = 30.0, channel: grpc.Channel | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = channel or grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", 64 * 2**20),
                ("grpc.max_send_message_length", 64 * 2**20),
            ],
        )
        self._catalog = _catalog_pb2_grpc.CatalogStub(self._channel)
        self._packages = _packages_pb2_grpc.PackagesStub(self._channel)
        self._jobs = _jobs_pb2_grpc.JobsStub(self._channel)

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

    # -------------------------------------------------------------- catalog

    def list_datasets(self) -> list[DatasetInfo]:
        reply = self._call(self._catalog.ListDatasets, _catalog_pb2.ListDatasetsRequest())
        return [_dataset(d) for d in reply.datasets]

    def describe_dataset(self, name: str) -> DatasetInfo:
        return _dataset(self._call(self._catalog.DescribeDataset, _catalog_pb2.DescribeDatasetRequest(name=name)))

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

    def list_packages(self) -> list[PackageSummary]:
        reply = self._call(self._packages.ListPackages, _packages_pb2.ListPackagesRequest())
        return [_package(p) for p in reply.packages]

    def get_package(self, ref: str) -> PackageSummary:
        return _package(self._call(self._packages.GetPackage, _packages_pb2.GetPackageRequest(ref=ref)))

    # -------------------------------------------------------------- jobs

    def run_job(self, package: str, params: Mapping[str, Any] | None = None) -> Job:
        request = _jobs_pb2.RunJobRequest(
            package=package, params={k: value_to_proto(v) for k, v in (params or {}).items()}
        )
        return _job(self._call(self._jobs.RunJob, request))

    def get_job(self, job_id: str) -> Job:
        return _job(self._call(self._jobs.GetJob, _jobs_pb2.GetJobRequest(job_id=job_id)))

    def watch_job(self, job_id: str, timeout: float | None = None) -> Iterator[Job]:
        """Yield the job on every state change until it finishes."""
        try:
            for p in self._jobs.WatchJob(_jobs_pb2.WatchJobRequest(job_id=job_id), timeout=timeout):
                yield _job(p)
        except grpc.RpcError as exc:
            raise _translate(exc) from exc

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job finishes; returns its final state."""
        job: Job | None = None
        for job in self.watch_job(job_id, timeout=timeout):
            if job.finished:
                return job
        return job if job is not None else self.get_job(job_id)

    def cancel_job(self, job_id: str) -> Job:
        return _job(self._call(self._jobs.CancelJob, _jobs_pb2.CancelJobRequest(job_id=job_id)))

    def list_jobs(self, page_size: int = 20, page_token: str = "") -> tuple[list[Job], str]:
        request = _jobs_pb2.ListJobsRequest(page_size=page_size, page_token=page_token)
        reply = self._call(self._jobs.ListJobs, request)
        return [_job(j) for j in reply.jobs], reply.next_page_token

    def get_result(self, job_id: str) -> Result:
        reply = self._call(self._jobs.GetResult, _jobs_pb2.GetResultRequest(job_id=job_id))
        outputs = []
        for o in reply.outputs:
            content = o.WhichOneof("content")
            table = pa.ipc.open_stream(pa.py_buffer(o.arrow_ipc)).read_all() if content == "arrow_ipc" else None
            value = value_from_proto(o.value) if content == "value" else None
            outputs.append(ResultOutput(o.name, o.report.kind, table, value, _report(o.report)))
        return Result(reply.job_id, outputs, reply.printed)


def _package(p: _packages_pb2.Package) -> PackageSummary:
    parameters = {
        q.name: {
            "type": q.type,
            "default": json.loads(q.default_json) if q.default_json else None,
            "min": q.min if q.HasField("min") else None,
            "max": q.max if q.HasField("max") else None,
            "choices": list(q.choices),
            "description": q.description,
        }
        for q in p.parameters
    }
    return PackageSummary(p.hash, p.name, p.version, p.description, list(p.datasets), parameters)


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
