"""The one table of who may call what: role -> allowed methods. Anything not listed is refused.

Method names are the full gRPC method paths without the leading slash (``saferoom.v1.Jobs/RunJob``); they are
plain strings here so that the domain needs no gRPC. What a role may *see* through an allowed method (a
researcher only their own packages, jobs and results) is decided by the domain services, not by this table.
"""

from __future__ import annotations

from collections.abc import Mapping

from saferoom.errors import PermissionDenied
from saferoom.identity.roles import Identity, Role

__all__ = ["ALLOWED", "PUBLIC_METHODS", "authorize"]

_CATALOG = ("saferoom.v1.Catalog/ListDatasets", "saferoom.v1.Catalog/DescribeDataset",
            "saferoom.v1.Catalog/DownloadMock", "saferoom.v1.Mock/GetMockInfo")  # fmt: skip
_READ_PACKAGES = ("saferoom.v1.Packages/GetPackage", "saferoom.v1.Packages/ListPackages",
                  "saferoom.v1.Packages/DownloadPackage")  # fmt: skip
_OBSERVE_JOBS = ("saferoom.v1.Jobs/GetJob", "saferoom.v1.Jobs/WatchJob", "saferoom.v1.Jobs/ListJobs",
                 "saferoom.v1.Jobs/CancelJob")  # fmt: skip

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
            "saferoom.v1.Packages/SubmitPackage",
            "saferoom.v1.Jobs/RunJob",
            "saferoom.v1.Jobs/GetResult",
            "saferoom.v1.Budgets/ListBudgets",  # their own only (saferoom.disclosure.budgets)
        }
    ),
    Role.OPERATOR: frozenset(
        {
            *_CATALOG,
            *_READ_PACKAGES,
            *_OBSERVE_JOBS,  # oversight: see and stop any job, but never read its result
            "saferoom.v1.Review/ListPending",
            "saferoom.v1.Review/GetPackage",
            "saferoom.v1.Review/ApprovePackage",
            "saferoom.v1.Review/RejectPackage",
            "saferoom.v1.Review/RevokeApproval",
            "saferoom.v1.Budgets/SetBudget",
            "saferoom.v1.Budgets/ListBudgets",
            "saferoom.v1.Mock/SetMockBudget",  # the publication budget of DP mock data
            "saferoom.v1.Mock/PublishMock",
        }
    ),
    # Output checkers see held exact results in full and decide on them; they run nothing and read no other
    # result (a released one is the researcher's to fetch), and cannot see a package's other jobs.
    Role.OUTPUT_CHECKER: frozenset(
        {
            *_CATALOG,  # the policies and thresholds a checker judges against
            "saferoom.v1.Checks/ListHeld",
            "saferoom.v1.Checks/GetHeld",
            "saferoom.v1.Checks/Decide",
        }
    ),
    Role.AUDITOR: frozenset(
        {
            "saferoom.v1.Audit/ReadLog",
            "saferoom.v1.Audit/GetCheckpoint",
            "saferoom.v1.Audit/VerifyLog",
            "saferoom.v1.Budgets/ListBudgets",  # what was spent is part of what an auditor checks
        }
    ),
}


def authorize(identity: Identity, method: str) -> None:
    """Raise ``PermissionDenied`` unless one of the identity's roles allows ``method``."""
    method = method.lstrip("/")
    if method in PUBLIC_METHODS or any(method in ALLOWED[role] for role in identity.roles):
        return
    raise PermissionDenied(f"{identity.name} ({identity.role_names}) may not call {method[:120]}")
