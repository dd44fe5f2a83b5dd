"""`saferoom dev run`: one job, locally, through exactly the pipeline the server uses."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.errors import DatasetNotFound, InvalidParameter
from saferoom.jobs.pipeline import JobOutcome, Pipeline
from saferoom.packages import load_package, parse_param_value, validate_params

__all__ = ["run_local"]


def run_local(
    package_dir: Path, data_dir: Path, raw_params: Mapping[str, str], config: ServerConfig | None = None
) -> JobOutcome:
    """Run the package in ``package_dir`` over the catalog in ``data_dir`` with ``NAME=VALUE`` parameters."""
    config = config or ServerConfig.load(env={})
    package = load_package(package_dir)
    manifest = Manifest.load(data_dir)
    missing = sorted(set(package.datasets) - set(manifest.datasets))
    if missing:
        raise DatasetNotFound(f"the catalog has no dataset {', '.join(missing)}")
    typed = {}
    for name, text in raw_params.items():
        spec = package.parameters.get(name)
        if spec is None:
            raise InvalidParameter(f"the package has no parameter {name!r}")
        typed[name] = parse_param_value(spec.type, text, name)
    params = validate_params(package, typed)
    pipeline = Pipeline.from_config(config, manifest, data_dir)
    try:
        return pipeline.run(package, params)
    finally:
        pipeline.close()
