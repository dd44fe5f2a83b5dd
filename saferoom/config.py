"""Server configuration: read once, from a TOML file and/or SAFEROOM_* environment variables.

Precedence: command-line flags > environment > TOML file > defaults. Every option, its default and who uses it
is listed in ``ServerConfig``; the README's configuration table mirrors it (a test keeps them in step).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from saferoom.errors import InvalidRequest

__all__ = ["ServerConfig", "WorkerLimits"]

MiB = 2**20


@dataclass(frozen=True)
class WorkerLimits:
    """OS limits of one worker process (one per job and phase)."""

    memory_mib: int  # address space (sandbox) or private data (engine) of one worker
    cpu_seconds: int  # CPU time of one worker
    wall_seconds: float  # wall-clock time of one worker; the parent kills it after this
    output_mib: int  # the largest reply a worker may send back


@dataclass(frozen=True)
class ServerConfig:
    """Everything `saferoom serve` can be told. Field comments say who uses each option."""

    data_dir: Path = Path("data")  # catalog: the directory with catalog.json and the Arrow files
    state_dir: Path = Path("state")  # store: SQLite database (packages, approvals, jobs, results), package files
    pki_dir: Path = Path("pki")  # server: TLS and identities, from `saferoom certs init` (CA, server key, CRL)
    listen: str = "127.0.0.1:50051"  # server: host:port to bind; port 0 picks a free port
    max_approval_days: int = 365  # packages: the longest validity period an operator may sign
    audit_checkpoint_every: int = 1000  # audit: a signed checkpoint after this many records (and at shutdown)
    seccomp: bool = True  # sandbox: a deny-by-default system call filter in every worker (needs libseccomp)
    landlock: bool = True  # sandbox: workers see the filesystem read-only, and only what they need (Linux 5.13+)
    network_namespace: bool = True  # sandbox: workers live in an empty network namespace (needs CAP_SYS_ADMIN)
    max_concurrent_jobs: int = 2  # jobs: jobs running at once (each uses up to two worker processes)
    max_queued_jobs: int = 100  # jobs: RunJob answers RESOURCE_EXHAUSTED beyond this many waiting jobs
    max_message_mib: int = 64  # server: largest gRPC message in either direction
    # jobs: a job's end (its result, or a refusal that depends on data) is published only at a whole number of
    # these after it started, so its duration says less about the data (0: off)
    release_quantum_ms: int = 250
    grace_seconds: float = 5.0  # server: how long shutdown waits for in-flight calls
    # engine: the Spark Connect endpoint (sc://host:port, with ;use_ssl=true;token=... where the cluster uses
    # them) for datasets the catalog declares with engine = "spark"; empty: no Spark cluster
    spark_connect: str = ""
    # sandbox: the worker that runs algorithm code (it never holds data, only builds plans)
    sandbox_limits: WorkerLimits = field(
        default_factory=lambda: WorkerLimits(memory_mib=1024, cpu_seconds=30, wall_seconds=60.0, output_mib=8)
    )
    # engine: the worker that executes the plans over the memory-mapped datasets
    engine_limits: WorkerLimits = field(
        default_factory=lambda: WorkerLimits(memory_mib=8192, cpu_seconds=300, wall_seconds=600.0, output_mib=64)
    )

    @classmethod
    def load(cls, path: Path | None = None, env: dict[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Defaults, then the TOML file, then SAFEROOM_* variables, then non-None ``overrides``."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                values.update(tomllib.loads(path.read_text(encoding="utf-8")))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise InvalidRequest(f"cannot read config file {path.name}: {exc}") from exc
        env = dict(os.environ if env is None else env)
        for f in fields(cls):
            key = f"SAFEROOM_{f.name.upper()}"
            if key in env:
                values[f.name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls()._with(values)

    def _with(self, values: dict[str, Any]) -> ServerConfig:
        known = {f.name: f for f in fields(self)}
        unknown = set(values) - set(known)
        if unknown:
            raise InvalidRequest(f"unknown configuration options: {', '.join(sorted(unknown))}")
        parsed: dict[str, Any] = {}
        for name, raw in values.items():
            current = getattr(self, name)
            try:
                if isinstance(current, WorkerLimits) and isinstance(raw, WorkerLimits):
                    parsed[name] = raw
                elif isinstance(current, WorkerLimits):
                    if not isinstance(raw, dict):
                        raise TypeError("expected a table")
                    parsed[name] = replace(current, **raw)
                elif name.endswith("_dir"):
                    parsed[name] = None if raw in (None, "") else Path(raw)
                elif isinstance(current, bool):
                    parsed[name] = str(raw).lower() in ("1", "true", "yes")
                elif isinstance(current, int):
                    parsed[name] = int(raw)
                elif isinstance(current, float):
                    parsed[name] = float(raw)
                else:
                    parsed[name] = str(raw)
            except (TypeError, ValueError) as exc:
                raise InvalidRequest(f"configuration option {name}: {exc}") from exc
        config = replace(self, **parsed)
        counts = ("max_concurrent_jobs", "max_queued_jobs", "max_approval_days", "audit_checkpoint_every")
        if any(getattr(config, name) < 1 for name in counts):
            raise InvalidRequest(f"{', '.join(counts)} must be at least 1")
        if config.spark_connect and not config.spark_connect.startswith("sc://"):
            raise InvalidRequest("spark_connect must be a Spark Connect URL (sc://host:port)")
        if not 0 <= config.release_quantum_ms <= 60_000:
            raise InvalidRequest("release_quantum_ms must be between 0 and 60000")
        return config
