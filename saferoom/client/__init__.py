"""A typed Python client for saferoom's gRPC services, and the profile that says who the user is."""

from saferoom.client.budgets import RunCost
from saferoom.client.client import (
    Budget,
    CheckDecisionInfo,
    Client,
    HeldOutput,
    HeldResult,
    Job,
    PackageReview,
    PackageSummary,
    Result,
    ResultOutput,
)
from saferoom.client.profile import Profile, default_profile_path

__all__ = [
    "Budget",
    "CheckDecisionInfo",
    "Client",
    "HeldOutput",
    "HeldResult",
    "Job",
    "PackageReview",
    "PackageSummary",
    "Profile",
    "Result",
    "ResultOutput",
    "RunCost",
    "default_profile_path",
]
