"""The gRPC servicers: thin translations from protos to domain calls and back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import grpc

from saferoom._proto.saferoom.v1 import catalog_pb2 as _catalog_pb2
from saferoom._proto.saferoom.v1 import catalog_pb2_grpc as _catalog_pb2_grpc
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import jobs_pb2_grpc as _jobs_pb2_grpc
from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from saferoom._proto.saferoom.v1 import packages_pb2_grpc as _packages_pb2_grpc
from saferoom.catalog.manifest import Manifest
from saferoom.catalog.mock import mock_ipc_bytes
from saferoom.errors import InvalidRequest
from saferoom.jobs import JobService
from saferoom.packages import PackageRegistry
from saferoom.server import convert

__all__ = ["CatalogServicer", "JobsServicer", "PackagesServicer"]

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_PACKAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
MOCK_CHUNK_BYTES = 1024 * 1024
MAX_MOCK_ROWS = 100_000
# Until identities exist (mutual TLS), every caller is the one local researcher.
LOCAL_OWNER = "local"


def _job_id(value: str) -> str:
    if not _JOB_ID.match(value):
        raise InvalidRequest("job_id must be 32 lowercase hex characters")
    return value


class CatalogServicer(_catalog_pb2_grpc.CatalogServicer):
    """Schemas, policies and mock data; never real rows."""

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest

    def ListDatasets(self, request: _catalog_pb2.ListDatasetsRequest, context: Any) -> Any:
        datasets = [convert.dataset_to_proto(d) for d in self._manifest.datasets.values()]
        return _catalog_pb2.ListDatasetsResponse(catalog_name=self._manifest.name, datasets=datasets)

    def DescribeDataset(self, request: _catalog_pb2.DescribeDatasetRequest, context: Any) -> Any:
        return convert.dataset_to_proto(self._manifest.dataset(request.name))

    def DownloadMock(self, request: _catalog_pb2.DownloadMockRequest, context: Any) -> Iterator[Any]:
        info = self._manifest.dataset(request.name)
        if not 0 <= request.rows <= MAX_MOCK_ROWS:
            raise InvalidRequest(f"rows must be between 0 and {MAX_MOCK_ROWS}")
        data = mock_ipc_bytes(info, rows=request.rows or None, seed=request.seed)
        yield _catalog_pb2.MockChunk(dataset=convert.dataset_to_proto(info))
        for start in range(0, len(data), MOCK_CHUNK_BYTES):
            if not context.is_active():
                return
            yield _catalog_pb2.MockChunk(arrow_ipc=data[start : start + MOCK_CHUNK_BYTES])


class PackagesServicer(_packages_pb2_grpc.PackagesServicer):
    """The packages that may run."""

    def __init__(self, registry: PackageRegistry) -> None:
        self._registry = registry

    def ListPackages(self, request: _packages_pb2.ListPackagesRequest, context: Any) -> Any:
        return _packages_pb2.ListPackagesResponse(packages=[convert.package_to_proto(p) for p in self._registry.list()])

    def GetPackage(self, request: _packages_pb2.GetPackageRequest, context: Any) -> Any:
        if not _PACKAGE_REF.match(request.ref):
            raise InvalidRequest("ref must be a package hash, name@version or name")
        return convert.package_to_proto(self._registry.get(request.ref))


class JobsServicer(_jobs_pb2_grpc.JobsServicer):
    """Run jobs and fetch their released results."""

    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    def RunJob(self, request: _jobs_pb2.RunJobRequest, context: Any) -> Any:
        if not _PACKAGE_REF.match(request.package):
            raise InvalidRequest("package must be a package hash, name@version or name")
        params = convert.params_from_proto(request.params)
        return convert.job_to_proto(self._jobs.submit(request.package, params, owner=LOCAL_OWNER))

    def GetJob(self, request: _jobs_pb2.GetJobRequest, context: Any) -> Any:
        return convert.job_to_proto(self._jobs.get(_job_id(request.job_id)))

    def WatchJob(self, request: _jobs_pb2.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        for job in self._jobs.watch(_job_id(request.job_id)):
            if not context.is_active():
                return
            yield convert.job_to_proto(job)

    def CancelJob(self, request: _jobs_pb2.CancelJobRequest, context: Any) -> Any:
        return convert.job_to_proto(self._jobs.cancel(_job_id(request.job_id)))

    def ListJobs(self, request: _jobs_pb2.ListJobsRequest, context: Any) -> Any:
        if not 0 <= request.page_size <= 100:
            raise InvalidRequest("page_size must be between 0 and 100")
        size = request.page_size or 20
        after = _job_id(request.page_token) if request.page_token else None
        jobs = self._jobs.list_jobs(owner=None, limit=size + 1, after=after)
        page, more = jobs[:size], len(jobs) > size
        return _jobs_pb2.ListJobsResponse(
            jobs=[convert.job_to_proto(j) for j in page],
            next_page_token=page[-1].id if more and page else "",
        )

    def GetResult(self, request: _jobs_pb2.GetResultRequest, context: Any) -> Any:
        return convert.result_to_proto(self._jobs.result(_job_id(request.job_id)))
