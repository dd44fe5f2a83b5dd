"""Server configuration: read once, from a TOML file and/or SAFEROOM_* environment variables.

Precedence: command-line flags > environment > TOML file > defaults. Every option, its default and who uses it
is listed in ``ServerConfig``; the README's configuration table mirrors it (a test keeps them in step).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from saferoom.errors import InvalidRequest

__all__ = ["ServerConfig", "WorkerLimits"]

MiB = 2**20
ENGINES = ("arrow", "duckdb")  # the embedded engines the engine worker can run (``engine``)


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
    # audit: the active log file is sealed into audit/segments/ once it has grown past this many bytes
    audit_segment_bytes: int = 256 * MiB
    # audit: a checkpoint an auditor saved (`audit verify --save-checkpoint`): the server refuses to start on a log
    # that does not hold what it covers (a restored backup older than it, a cut log); empty: none
    audit_anchor: str = ""
    seccomp: bool = True  # sandbox: a deny-by-default system call filter in every worker (needs libseccomp)
    landlock: bool = True  # sandbox: workers see the filesystem read-only, and only what they need (Linux 5.13+)
    network_namespace: bool = True  # sandbox: workers live in an empty network namespace (needs CAP_SYS_ADMIN)
    # sandbox: serve even where a confined worker can open the server's database or keys (neither Landlock nor a
    # drop to uid 65534 on this host: RestrictedPython is then the only wall); the start-up self-test refuses it
    workers_may_read_state: bool = False
    max_concurrent_jobs: int = 2  # jobs: jobs in their engine phase at once (the worker holding the data)
    # jobs: jobs in their code phase at once (a niced sandbox worker that only builds plans, or waiting for an
    # engine slot), at most max_concurrent_jobs of one researcher: code spinning to its limit keeps no engine slot
    # from anyone, and a few identities flooding an idle server leave code slots for others
    max_code_phases: int = 8
    max_queued_jobs: int = 100  # jobs: RunJob answers RESOURCE_EXHAUSTED beyond this many waiting jobs
    max_message_mib: int = 64  # server: largest gRPC message in either direction
    max_streams: int = 32  # server: server streams (WatchJob, ReadLog follow, DownloadMock, health Watch) open at once
    # server: streams one identity may hold open; three identities together must leave some for everyone else
    max_streams_per_identity: int = 8
    handshake_timeout_seconds: float = 5.0  # server: a connection that has not finished its TLS handshake is closed
    idle_timeout_seconds: float = 30.0  # server: a connection with no call for this long is closed (clients reconnect)
    # jobs: a job's end (its result, or a refusal that depends on data) is published only at a whole number of
    # these after it started, so its duration says less about the data (0: off)
    release_quantum_ms: int = 250
    grace_seconds: float = 5.0  # server: how long shutdown waits for in-flight calls
    # catalog: how often the server looks for new dataset versions (`saferoom datasets import`); 0: never
    catalog_poll_seconds: float = 2.0
    # catalog: earlier versions of each dataset the server keeps when it collects old ones (for rollback; the same
    # default as `saferoom datasets gc --keep`), whatever else keeps them (jobs, leases)
    dataset_versions_kept: int = 1
    # server: host:port of the plain-HTTP endpoint with /metrics (Prometheus), /healthz and /readyz; empty: none.
    # Loopback unless you mean it: whoever reaches it sees what the service does (never data or results)
    metrics_listen: str = ""
    metrics_max_identities: int = 64  # metrics: researchers labelled in the queue depth; the rest are summed
    # metrics: also export the engine, release and quantum phases of jobs apart, unpadded: a timing side channel
    # for whoever can scrape (how long the engine took depends on the data); off, only their padded sum
    metrics_phase_detail: bool = False
    log_format: str = "text"  # server: the diagnostic log's lines, "text" or "json" (one object per line)
    # engine: the Spark Connect endpoint (sc://host:port, with ;use_ssl=true;token=... where the cluster uses
    # them) for datasets the catalog declares with engine = "spark"; empty: no Spark cluster
    spark_connect: str = ""
    # engine: how long a release's run on the Spark cluster may take, and, with timing protection on, how long it
    # is padded to: the cluster's time is not modelled, so each run that reads a Spark dataset counts this whole
    # (README "Timing"); a run still going then is cancelled, its failure published at the same moment
    spark_run_seconds: float = 120.0
    # engine: what executes plans in the engine worker: "arrow" (pyarrow compute and Acero) or "duckdb" (an
    # embedded DuckDB over the same memory-mapped Arrow tables: threads, a memory limit, no file or network access)
    engine: str = "arrow"
    # sandbox: the worker that runs algorithm code, the code phase of a job. It never holds data and only builds
    # plans (milliseconds of work), so its limits are tight and its own, apart from the engine's
    sandbox_limits: WorkerLimits = field(
        default_factory=lambda: WorkerLimits(memory_mib=1024, cpu_seconds=10, wall_seconds=20.0, output_mib=8)
    )
    # engine: the worker that executes the plans over the memory-mapped datasets. Its reply is what the server
    # holds of one engine run: the exact statistics DP noises are the largest (site selection's income quantiles
    # over a 38k-cell grid at 10M persons: up to 242 MiB, one row per person and bin in the worst case)
    engine_limits: WorkerLimits = field(
        default_factory=lambda: WorkerLimits(memory_mib=8192, cpu_seconds=300, wall_seconds=600.0, output_mib=512)
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
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise InvalidRequest(f"unknown configuration options: {', '.join(sorted(unknown))}")
        parsed = {name: _parse(name, getattr(self, name), raw) for name, raw in values.items()}
        config = replace(self, **parsed)
        if 3 * config.max_streams_per_identity >= config.max_streams:
            raise InvalidRequest(
                "max_streams_per_identity must be less than a third of max_streams: three identities together "
                f"must not hold every stream slot (got {config.max_streams_per_identity} of {config.max_streams})"
            )
        if config.log_format not in ("text", "json"):
            raise InvalidRequest(f"log_format must be text or json (got {config.log_format[:20]!r})")
        if config.metrics_listen and not re.fullmatch(
            r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}", config.metrics_listen
        ):
            raise InvalidRequest("metrics_listen must be host:port (port 0: any free port)")
        if config.engine not in ENGINES:
            raise InvalidRequest(f"engine must be one of {', '.join(ENGINES)} (got {config.engine[:40]!r})")
        if config.spark_connect and not config.spark_connect.startswith("sc://"):
            raise InvalidRequest("spark_connect must be a Spark Connect URL (sc://host:port)")
        return config


# Every numeric option's accepted range, inclusive: a value outside it is a typo or a misunderstanding, and
# either one should stop the server at start-up rather than run it with a limit nobody meant.
_RANGES: dict[str, tuple[float, float]] = {
    "max_approval_days": (1, 3650),
    "audit_checkpoint_every": (1, 1_000_000),
    "catalog_poll_seconds": (0, 3600),
    "dataset_versions_kept": (0, 1000),
    "audit_segment_bytes": (4096, 2**40),
    "max_concurrent_jobs": (1, 256),
    "max_code_phases": (1, 256),
    "max_queued_jobs": (1, 100_000),
    "max_message_mib": (1, 2047),  # gRPC's limits are signed 32-bit byte counts
    "max_streams": (4, 1000),  # each open stream holds one RPC thread
    "max_streams_per_identity": (1, 333),
    "handshake_timeout_seconds": (0.5, 120),
    "idle_timeout_seconds": (1, 86_400),
    "release_quantum_ms": (0, 60_000),
    "spark_run_seconds": (1, 86_400),
    "grace_seconds": (0, 3600),
    "metrics_max_identities": (1, 10_000),
    "memory_mib": (64, 1_048_576),
    "cpu_seconds": (1, 86_400),
    "wall_seconds": (1, 86_400),
    "output_mib": (1, 2047),
    # The code phase only builds plans: a limit of more than ten minutes would let one job's code hold a slot
    # for as long as a query over all the data may take.
    "sandbox_limits.cpu_seconds": (1, 600),
    "sandbox_limits.wall_seconds": (1, 600),
}

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _parse(name: str, current: Any, raw: Any) -> Any:
    """``raw`` (a string from the environment, a TOML value or a flag) as the type of ``current``, strictly."""
    if isinstance(current, WorkerLimits):
        return _parse_limits(name, current, raw)
    if isinstance(current, Path):
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str | Path):
            raise InvalidRequest(f"configuration option {name}: expected a path, got {raw!r}")
        return Path(raw)
    if isinstance(current, bool):
        return _parse_bool(name, raw)
    if isinstance(current, int):
        return _in_range(name, _parse_int(name, raw))
    if isinstance(current, float):
        return _in_range(name, _parse_float(name, raw))
    if not isinstance(raw, str):
        raise InvalidRequest(f"configuration option {name}: expected a string, got {raw!r}")
    return raw


def _parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = raw.strip().lower() if isinstance(raw, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidRequest(
        f"configuration option {name}: {raw!r} is not a boolean (accepted: {', '.join(_TRUE + _FALSE)})"
    )


def _parse_int(name: str, raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", raw):
        return int(raw)
    raise InvalidRequest(f"configuration option {name}: {raw!r} is not a whole number")


def _parse_float(name: str, raw: Any) -> float:
    number = isinstance(raw, int | float) and not isinstance(raw, bool)
    text = isinstance(raw, str) and re.fullmatch(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", raw)
    value = float(raw) if number or text else math.nan
    if not math.isfinite(value):
        raise InvalidRequest(f"configuration option {name}: {raw!r} is not a number")
    return value


def _in_range(name: str, value: int | float) -> Any:
    low, high = _RANGES.get(name) or _RANGES[name.rpartition(".")[2]]
    if not low <= value <= high:
        raise InvalidRequest(f"configuration option {name}: {value} is out of range ({low:g} to {high:g})")
    return value


def _parse_limits(name: str, current: WorkerLimits, raw: Any) -> WorkerLimits:
    if isinstance(raw, WorkerLimits):
        raw = {f.name: getattr(raw, f.name) for f in fields(raw)}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"configuration option {name}: expected a table, got {raw!r}")
    known = {f.name for f in fields(current)}
    unknown = set(raw) - known
    if unknown:
        raise InvalidRequest(f"configuration option {name}: unknown keys: {', '.join(sorted(unknown))}")
    parsed = {key: _parse(f"{name}.{key}", getattr(current, key), value) for key, value in raw.items()}
    return replace(current, **parsed)
