"""Test helpers shared by fixtures and tests: a test PKI, server configs, approving packages over gRPC."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from saferoom.client import Client, Profile
from saferoom.config import ServerConfig, WorkerLimits
from saferoom.identity import init_authority, issue_identity

# name -> roles: two researchers (to test isolation), two operators, an auditor, one person with two roles,
# two output checkers, and a researcher who is also an output checker.
IDENTITIES = {
    "alice": "researcher",
    "bob": "researcher",
    "olga": "operator",
    "oscar": "operator",
    "audrey": "auditor",
    "rex": "researcher,operator",
    "quinn": "output_checker",
    "quincy": "output_checker",
    "rita": "researcher,output_checker",
}


@dataclass(frozen=True)
class Deployment:
    """A certificate authority and the profiles of the test identities."""

    pki: Path

    def profile(self, name: str) -> Profile:
        return Profile.load(self.pki / "identities" / name / "profile.toml")

    def client(self, name: str, port: int, timeout: float = 60) -> Client:
        return Client.from_profile(self.profile(name), server=f"127.0.0.1:{port}", timeout=timeout)

    def channel(self, name: str, port: int, options: list[tuple[str, int]] | None = None) -> grpc.Channel:
        """A raw mutual-TLS channel as ``name``, for tests that speak protobuf directly."""
        return grpc.secure_channel(f"127.0.0.1:{port}", self.profile(name).credentials(), options=options)


def make_deployment(directory: Path) -> Deployment:
    init_authority(directory)
    for name, roles in IDENTITIES.items():
        issue_identity(directory, name, roles)
    return Deployment(directory)


# A small public dataset, for tests of imports and versions (``import_stops``).
STOPS_DECLARATION = """
name = "stops"
description = "Bus stops (public, test)"
sensitivity = "public"
{engine}

[[columns]]
name = "stop_id"
type = "int64"
min = 1
max = 100000

[[columns]]
name = "district"
type = "string"
categories = ["Huli", "Siming"]
"""


def import_stops(tmp_path: Path, catalog: Path, rows: int, spark: bool = False) -> str:
    """Import ``rows`` bus stops (half in each district) as a new version of ``stops``; returns its hash."""
    from saferoom.importer import import_dataset

    source = tmp_path / f"stops-{rows}.csv"
    source.write_text(
        "stop_id,district\n" + "".join(f"{i},{'Huli' if i % 2 else 'Siming'}\n" for i in range(1, rows + 1))
    )
    declaration = tmp_path / ("stops-spark.toml" if spark else "stops.toml")
    engine = 'engine = "spark"\npartition_by = "district"' if spark else ""
    declaration.write_text(STOPS_DECLARATION.format(engine=engine))
    return import_dataset(str(source), declaration, catalog).version.version


def server_config(catalog_dir: Path, state_dir: Path, pki_dir: Path, **overrides: object) -> ServerConfig:
    """A config for tests: loopback, any free port, tight limits so bombs fail fast."""
    values: dict[str, Any] = {
        "data_dir": catalog_dir,
        "state_dir": state_dir,
        "pki_dir": pki_dir,
        "listen": "127.0.0.1:0",
        "max_concurrent_jobs": 3,
        "sandbox_limits": WorkerLimits(memory_mib=512, cpu_seconds=10, wall_seconds=4.0, output_mib=4),
        "engine_limits": WorkerLimits(memory_mib=2048, cpu_seconds=30, wall_seconds=30.0, output_mib=16),
        "grace_seconds": 1.0,
        "release_quantum_ms": 0,  # tests that need the padding set it
    }
    values.update(overrides)
    return ServerConfig.load(env={}, **values)


def serve_process(
    catalog_dir: Path, state_dir: Path, pki_dir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """`saferoom serve` in a process (and session) of its own, on a free loopback port, configured by ``env``
    (SAFEROOM_* variables) on top of the defaults; returns it once it listens, and its port."""
    command = [sys.executable, "-m", "saferoom.cli.main", "serve", "--data", str(catalog_dir),
               "--state", str(state_dir), "--pki", str(pki_dir), "--listen", "127.0.0.1:0"]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, start_new_session=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match, line
    return proc, int(match.group(1))


def approve_all(deployment: Deployment, port: int, packages_dir: Path, researcher: str = "alice") -> None:
    """Every package under ``packages_dir``: submitted by ``researcher`` and approved by olga, over gRPC."""
    with deployment.client(researcher, port) as submitter, deployment.client("olga", port) as operator:
        served = {d.name for d in submitter.list_datasets()}
        for path in sorted(p for p in packages_dir.iterdir() if (p / "saferoom.toml").exists()):
            # Packages for another catalog (credit_profile reads the enterprise datasets) are left out.
            if not set(tomllib.loads((path / "saferoom.toml").read_text(encoding="utf-8"))["datasets"]) <= served:
                continue
            summary, _ = submitter.submit_package(path)
            if summary.status != "approved":
                operator.approve_package(summary.hash, days=30)


def release_outputs(manifest, table_of, tables, epsilon=None):  # type: ignore[no-untyped-def]
    """What the pipeline does with algorithm outputs, in process (the engine runs here rather than in a worker):
    protect, noise the DP aggregates, run the outputs, their subset checks and margin cell lists, release.
    ``tables``: name -> API table; ``epsilon``: dataset -> what the run may spend."""
    from saferoom.api import export_outputs
    from saferoom.disclosure import protect
    from saferoom.disclosure.rounds import release_all
    from saferoom.engine import ArrowEngine, plan

    def execute(work, inputs):  # type: ignore[no-untyped-def]
        nodes = plan.share_subtrees({name: plan.from_data(data) for name, data in work})
        runs = ArrowEngine(table_of, inputs).execute_all(list(nodes.values()))
        return {name: (r.table, r.dropped) for name, r in zip(nodes, runs, strict=True)}

    plans = plan.share_subtrees({k: plan.from_data(v["plan"]) for k, v in export_outputs(tables).items()})
    return release_all(protect(plans, manifest), manifest, execute, epsilon or {})


def checked(out):  # type: ignore[no-untyped-def]
    """The output checker's full report of a released output (``Released.check``): with every count, which the
    researcher's report leaves out."""
    from saferoom.disclosure.release import ReleaseReport

    return ReleaseReport.from_data(out.check["report"])


def withheld_by(out, rule: str = "subset") -> bool:  # type: ignore[no-untyped-def]
    """Whether the checker's view says ``rule`` withheld the output (the researcher sees no cell, not why)."""
    table = out.table
    shown = (
        table.num_rows
        if "cell_status" not in table.column_names
        else table["cell_status"].to_pylist().count("released")
    )
    return shown == 0 and any(w["rule"] == rule for w in out.check.get("withheld", []))
