"""The gRPC servicers: thin translations from protos to domain calls and back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import grpc

from saferoom._proto.saferoom.v1 import budgets_pb2 as _budgets_pb2
from saferoom._proto.saferoom.v1 import budgets_pb2_grpc as _budgets_pb2_grpc
from saferoom._proto.saferoom.v1 import catalog_pb2 as _catalog_pb2
from saferoom._proto.saferoom.v1 import catalog_pb2_grpc as _catalog_pb2_grpc
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import jobs_pb2_grpc as _jobs_pb2_grpc
from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from saferoom._proto.saferoom.v1 import packages_pb2_grpc as _packages_pb2_grpc
from saferoom._proto.saferoom.v1 import review_pb2 as _review_pb2
from saferoom._proto.saferoom.v1 import review_pb2_grpc as _review_pb2_grpc
from saferoom.catalog.catalog import schema_of
from saferoom.catalog.manifest import Manifest
from saferoom.catalog.mock import ipc_pieces
from saferoom.disclosure.budgets import BudgetService
from saferoom.errors import InvalidRequest
from saferoom.jobs import JobService
from saferoom.mock import MockService
from saferoom.packages import PackageService
from saferoom.server import convert
from saferoom.server.auth import Caller

__all__ = ["BudgetsServicer", "CatalogServicer", "JobsServicer", "PackagesServicer", "ReviewServicer"]

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_JOB_REF = re.compile(r"^[0-9a-f]{6,32}$")
_PACKAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
MOCK_CHUNK_BYTES = 1024 * 1024


def _ref(value: str) -> str:
    if not _PACKAGE_REF.match(value):
        raise InvalidRequest("a package is named by its hash, name@version or name")
    return value


def _hash(value: str) -> str:
    if not _HASH.match(value):
        raise InvalidRequest("hash must be 64 lowercase hex characters")
    return value


def _job_id(value: str) -> str:
    if not _JOB_ID.match(value):
        raise InvalidRequest("job_id must be 32 lowercase hex characters")
    return value


def _job_ref(value: str) -> str:
    """A job id, or a prefix of at least 6 of its characters (resolved among the caller's jobs)."""
    if not _JOB_REF.match(value):
        raise InvalidRequest("job_id must be a job id (32 lowercase hex characters) or at least its first 6")
    return value


def _package_ref(value: str) -> str:
    """A package hash, a prefix of at least 6 of its characters, ``name@version`` or ``name``."""
    if not _PACKAGE_REF.match(value):
        raise InvalidRequest("give a package hash (or at least its first 6 characters), name@version or name")
    return value


class CatalogServicer(_catalog_pb2_grpc.CatalogServiceServicer):
    """Schemas, policies and mock data; never real rows of a personal dataset."""

    def __init__(self, manifest: Manifest, mock: MockService, caller: Caller) -> None:
        self._manifest = manifest
        self._mock = mock
        self._caller = caller

    def serve(self, manifest: Manifest) -> None:
        """Describe ``manifest`` from now on (new versions: row counts change)."""
        self._manifest = manifest

    def ListDatasets(self, request: _catalog_pb2.ListDatasetsRequest, context: Any) -> Any:
        datasets = [convert.dataset_to_proto(d) for d in self._manifest.datasets.values()]
        return _catalog_pb2.ListDatasetsResponse(catalog_name=self._manifest.name, datasets=datasets)

    def DescribeDataset(self, request: _catalog_pb2.DescribeDatasetRequest, context: Any) -> Any:
        return _catalog_pb2.DescribeDatasetResponse(
            dataset=convert.dataset_to_proto(self._manifest.dataset(request.name))
        )

    def DownloadMock(self, request: _catalog_pb2.DownloadMockRequest, context: Any) -> Iterator[Any]:
        info = self._manifest.dataset(request.name)
        if request.seed < 0:
            raise InvalidRequest("seed must be 0 or more")
        _, tables = self._mock.download(info.name, request.rows, request.seed, self._caller(context))
        yield _catalog_pb2.DownloadMockResponse(dataset=convert.dataset_to_proto(info))
        for piece in ipc_pieces(schema_of(info), tables, MOCK_CHUNK_BYTES):  # made as they are sent
            if not context.is_active():
                return
            yield _catalog_pb2.DownloadMockResponse(arrow_ipc=piece)


class PackagesServicer(_packages_pb2_grpc.PackagesServiceServicer):
    """Submissions and the packages a caller may see."""

    def __init__(self, packages: PackageService, caller: Caller) -> None:
        self._packages = packages
        self._caller = caller

    def SubmitPackage(self, request: _packages_pb2.SubmitPackageRequest, context: Any) -> Any:
        caller = self._caller(context)
        view, created = self._packages.submit(convert.files_from_proto(request.files), caller)
        return _packages_pb2.SubmitPackageResponse(package=convert.package_view_to_proto(view, caller), created=created)

    def GetPackage(self, request: _packages_pb2.GetPackageRequest, context: Any) -> Any:
        caller = self._caller(context)
        view = self._packages.get(_ref(request.ref), caller)
        return _packages_pb2.GetPackageResponse(package=convert.package_view_to_proto(view, caller))

    def ListPackages(self, request: _packages_pb2.ListPackagesRequest, context: Any) -> Any:
        caller = self._caller(context)
        views = self._packages.list_packages(caller)
        return _packages_pb2.ListPackagesResponse(packages=[convert.package_view_to_proto(v, caller) for v in views])

    def DownloadPackage(self, request: _packages_pb2.DownloadPackageRequest, context: Any) -> Any:
        caller = self._caller(context)
        view = self._packages.get(_ref(request.ref), caller)
        return _packages_pb2.DownloadPackageResponse(
            package=convert.package_view_to_proto(view, caller), files=convert.files_to_proto(view.package)
        )


class ReviewServicer(_review_pb2_grpc.ReviewServiceServicer):
    """Operators' decisions on packages."""

    def __init__(self, packages: PackageService, caller: Caller) -> None:
        self._packages = packages
        self._caller = caller

    def ListPending(self, request: _review_pb2.ListPendingRequest, context: Any) -> Any:
        caller = self._caller(context)
        views = self._packages.pending()
        return _review_pb2.ListPendingResponse(packages=[convert.package_view_to_proto(v, caller) for v in views])

    def GetPackageReview(self, request: _review_pb2.GetPackageReviewRequest, context: Any) -> Any:
        caller = self._caller(context)
        review = self._packages.review(self._packages.resolve_hash(_package_ref(request.hash), caller))
        out = _review_pb2.GetPackageReviewResponse(
            package=convert.package_view_to_proto(review.view, caller),
            files=convert.files_to_proto(review.view.package),
            diff=review.diff,
        )
        if review.previous is not None:
            out.previous.CopyFrom(convert.package_view_to_proto(review.previous, caller))
        return out

    def ApprovePackage(self, request: _review_pb2.ApprovePackageRequest, context: Any) -> Any:
        caller = self._caller(context)
        if len(request.signature) != 64:
            raise InvalidRequest("signature must be a 64-byte Ed25519 signature")
        view = self._packages.approve(
            _hash(request.hash), caller, request.not_before, request.not_after, request.signature
        )
        return _review_pb2.ApprovePackageResponse(package=convert.package_view_to_proto(view, caller))

    def RejectPackage(self, request: _review_pb2.RejectPackageRequest, context: Any) -> Any:
        caller = self._caller(context)
        view = self._packages.reject(
            self._packages.resolve_hash(_package_ref(request.hash), caller), caller, request.reason
        )
        return _review_pb2.RejectPackageResponse(package=convert.package_view_to_proto(view, caller))

    def RevokeApproval(self, request: _review_pb2.RevokeApprovalRequest, context: Any) -> Any:
        caller = self._caller(context)
        view = self._packages.revoke(
            self._packages.resolve_hash(_package_ref(request.hash), caller), caller, request.reason
        )
        return _review_pb2.RevokeApprovalResponse(package=convert.package_view_to_proto(view, caller))


class JobsServicer(_jobs_pb2_grpc.JobsServiceServicer):
    """Run jobs and fetch their released results."""

    def __init__(self, jobs: JobService, caller: Caller) -> None:
        self._jobs = jobs
        self._caller = caller

    def RunJob(self, request: _jobs_pb2.RunJobRequest, context: Any) -> Any:
        caller = self._caller(context)
        params = convert.params_from_proto(request.params)
        datasets = convert.datasets_from_proto(request.datasets)
        job = self._jobs.submit(_ref(request.package), params, caller, datasets, request_id=request.request_id)
        return _jobs_pb2.RunJobResponse(job=convert.job_to_proto(job))

    def GetJob(self, request: _jobs_pb2.GetJobRequest, context: Any) -> Any:
        job = self._jobs.get(_job_ref(request.job_id), self._caller(context))
        return _jobs_pb2.GetJobResponse(job=convert.job_to_proto(job))

    def WatchJob(self, request: _jobs_pb2.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        for job in self._jobs.watch(_job_ref(request.job_id), self._caller(context)):
            if not context.is_active():
                return
            yield _jobs_pb2.WatchJobResponse(job=convert.job_to_proto(job))

    def CancelJob(self, request: _jobs_pb2.CancelJobRequest, context: Any) -> Any:
        job = self._jobs.cancel(_job_ref(request.job_id), self._caller(context))
        return _jobs_pb2.CancelJobResponse(job=convert.job_to_proto(job))

    def ListJobs(self, request: _jobs_pb2.ListJobsRequest, context: Any) -> Any:
        if not 0 <= request.page_size <= 100:
            raise InvalidRequest("page_size must be between 0 and 100")
        size = request.page_size or 20
        after = _job_id(request.page_token) if request.page_token else None
        if len(request.owner) > 64 or (request.package and not _PACKAGE_REF.match(request.package)):
            raise InvalidRequest("owner must be a name, package a hash, hash prefix or package name")
        try:
            since = request.since.ToDatetime().timestamp() if request.HasField("since") else None
        except (ValueError, OverflowError, OSError):
            raise InvalidRequest("since must be a valid time") from None
        jobs = self._jobs.list_jobs(
            self._caller(context),
            limit=size + 1,
            after=after,
            states=convert.states_from_proto(request.states),
            owner=request.owner,
            package=request.package.partition("@")[0],
            since=since,
        )
        page, more = jobs[:size], len(jobs) > size
        return _jobs_pb2.ListJobsResponse(
            jobs=[convert.job_to_proto(j) for j in page],
            next_page_token=page[-1].id if more and page else "",
        )

    def GetResult(self, request: _jobs_pb2.GetResultRequest, context: Any) -> Any:
        result = self._jobs.result(_job_ref(request.job_id), self._caller(context))
        return _jobs_pb2.GetResultResponse(result=convert.result_to_proto(result))


class BudgetsServicer(_budgets_pb2_grpc.BudgetsServiceServicer):
    """Privacy budgets: operators set them; each caller lists what they may see."""

    def __init__(self, budgets: BudgetService, caller: Caller) -> None:
        self._budgets = budgets
        self._caller = caller

    def SetBudget(self, request: _budgets_pb2.SetBudgetRequest, context: Any) -> Any:
        caller = self._caller(context)
        budget = self._budgets.set_budget(request.researcher, request.dataset, request.epsilon, request.delta, caller)
        return _budgets_pb2.SetBudgetResponse(budget=convert.budget_to_proto(budget))

    def ListBudgets(self, request: _budgets_pb2.ListBudgetsRequest, context: Any) -> Any:
        caller = self._caller(context)
        budgets = self._budgets.list_budgets(caller, request.researcher or None, request.dataset or None)
        return _budgets_pb2.ListBudgetsResponse(budgets=[convert.budget_to_proto(b) for b in budgets])
