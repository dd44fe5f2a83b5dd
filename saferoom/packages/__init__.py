"""Algorithm packages: format, content hash, parameter schema, and the set of runnable packages."""

from saferoom.packages.package import (
    MANIFEST_FILE,
    Package,
    ParameterSpec,
    load_package,
    package_from_files,
    package_to_zip,
)
from saferoom.packages.params import check_value, parse_param_value, validate_params
from saferoom.packages.registry import PackageRegistry, default_algorithms_dir

__all__ = [
    "MANIFEST_FILE",
    "Package",
    "PackageRegistry",
    "ParameterSpec",
    "check_value",
    "default_algorithms_dir",
    "load_package",
    "package_from_files",
    "package_to_zip",
    "parse_param_value",
    "validate_params",
]
