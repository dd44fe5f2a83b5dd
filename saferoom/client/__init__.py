"""A typed Python client for saferoom's gRPC services."""

from saferoom.client.client import Client, Job, PackageSummary, Result, ResultOutput

__all__ = ["Client", "Job", "PackageSummary", "Result", "ResultOutput"]
