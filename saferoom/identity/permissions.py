"""The one table of who may call what: role -> allowed methods. Anything not listed is refused.

Method names are the full gRPC method paths without the leading slash (``saferoom.v1.JobsService/RunJob``);
they are plain strings here so that the domain needs no gRPC. What a role may *see* through an allowed method (a
researcher only their own packages, jobs and results) is decided by the domain services, not by this table.
"""

from __future__ import annotations

from collections.abc import Mapping

from saferoom.errors import PermissionDenied
from saferoom.identity.roles import Identity, Role

__all__ = ["ALLOWED", "PUBLIC_METHODS", "authorize"]

_CATALOG = (
    "saferoom.v1.CatalogService/ListDatasets",
    "saferoom.v1.CatalogService/DescribeDataset",
    "saferoom.v1.CatalogService/DownloadMock",
    "saferoom.v1.MockService/GetMockInfo",
)
_READ_PACKAGES = (
    "saferoom.v1.PackagesService/GetPackage",
    "saferoom.v1.PackagesService/ListPackages",
    "saferoom.v1.PackagesService/DownloadPackage",
)
_OBSERVE_JOBS = (
    "saferoom.v1.JobsService/GetJob",
    "saferoom.v1.JobsService/WatchJob",
    "saferoom.v1.JobsService/ListJobs",
    "saferoom.v1.JobsService/CancelJob",
)

# Any authenticated identity: liveness and the API's own description (no data, no state).
PUBLIC_METHODS = frozenset(
    {
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)

ALLOWED: Mapping[Role, frozenset[str]] = {
    Role.RESEARCHER: frozenset(
        {
            *_CATALOG,
            *_READ_PACKAGES,
            *_OBSERVE_JOBS,
            "saferoom.v1.PackagesService/SubmitPackage",
            "saferoom.v1.JobsService/RunJob",
            "saferoom.v1.JobsService/GetResult",
            "saferoom.v1.BudgetsService/ListBudgets",  # their own only (saferoom.disclosure.budgets)
        }
    ),
    Role.OPERATOR: frozenset(
        {
            *_CATALOG,
            *_READ_PACKAGES,
            *_OBSERVE_JOBS,  # oversight: see and stop any job, but never read its result
            "saferoom.v1.ReviewService/ListPending",
            "saferoom.v1.ReviewService/GetPackageReview",
            "saferoom.v1.ReviewService/ApprovePackage",
            "saferoom.v1.ReviewService/RejectPackage",
            "saferoom.v1.ReviewService/RevokeApproval",
            "saferoom.v1.BudgetsService/SetBudget",
            "saferoom.v1.BudgetsService/ListBudgets",
            "saferoom.v1.MockService/SetMockBudget",  # the publication budget of DP mock data
            "saferoom.v1.MockService/PublishMock",
        }
    ),
    # Output checkers see held exact results in full and decide on them; they run nothing and read no other
    # result (a released one is the researcher's to fetch), and cannot see a package's other jobs.
    Role.OUTPUT_CHECKER: frozenset(
        {
            *_CATALOG,  # the policies and thresholds a checker judges against
            "saferoom.v1.ChecksService/ListHeld",
            "saferoom.v1.ChecksService/GetHeld",
            "saferoom.v1.ChecksService/Decide",
        }
    ),
    Role.AUDITOR: frozenset(
        {
            "saferoom.v1.AuditService/ReadLog",
            "saferoom.v1.AuditService/GetCheckpoint",
            "saferoom.v1.AuditService/VerifyLog",
            "saferoom.v1.BudgetsService/ListBudgets",  # what was spent is part of what an auditor checks
        }
    ),
}


def authorize(identity: Identity, method: str) -> None:
    """Raise ``PermissionDenied`` unless one of the identity's roles allows ``method``."""
    method = method.lstrip("/")
    if method in PUBLIC_METHODS or any(method in ALLOWED[role] for role in identity.roles):
        return
    raise PermissionDenied(f"{identity.name} ({identity.role_names}) may not call {method[:120]}")
