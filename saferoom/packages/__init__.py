"""Algorithm packages: format, content hash, parameter schema, signed approvals, submission and review."""

from saferoom.packages.approval import (
    Approval,
    approval_payload,
    parameter_schema,
    sign_approval,
    verify_approval,
    verify_signature,
)
from saferoom.packages.package import (
    MANIFEST_FILE,
    Package,
    ParameterSpec,
    load_package,
    package_from_files,
    package_from_zip,
    package_to_zip,
    read_package_files,
)
from saferoom.packages.params import check_value, parse_param_value, validate_params
from saferoom.packages.service import PackageService, PackageStatus, PackageView, ReviewView
from saferoom.packages.shipped import default_algorithms_dir

__all__ = [
    "MANIFEST_FILE",
    "Approval",
    "Package",
    "PackageService",
    "PackageStatus",
    "PackageView",
    "ParameterSpec",
    "ReviewView",
    "approval_payload",
    "check_value",
    "default_algorithms_dir",
    "load_package",
    "package_from_files",
    "package_from_zip",
    "package_to_zip",
    "parameter_schema",
    "parse_param_value",
    "read_package_files",
    "sign_approval",
    "validate_params",
    "verify_approval",
    "verify_signature",
]
