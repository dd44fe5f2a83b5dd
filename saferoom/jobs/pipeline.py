"""How one job runs, from package to released result; shared by the server and `saferoom dev run`.

    package + params ──► sandbox worker: RestrictedPython runs the algorithm, which only builds plans
                     ──► release rewrite (disclosure.protect): refuses row-level personal outputs and adds
                         contributor counting and suppression to every aggregate; cuts out the aggregates
                         of differentially private datasets
                     ──► admission (engine.cost): every engine run bounded from public facts before any work
                     ──► engine worker(s), in the rounds of disclosure.rounds: first the exact statistics of
                         the DP aggregates, which the server noises (disclosure.dp) within the run's epsilon
                         (disclosure.accounting); then the rewritten plans over the memory-mapped datasets
                         and the noisy tables (plans that read datasets on the Spark engine go to the cluster
                         instead, from the server process: jobs.spark)
                     ──► release (disclosure.release): strips hidden columns, re-checks, writes the report

The algorithm's process never holds data, and the process that holds data never runs algorithm code, so a
flaw in the interpreter-level sandbox cannot by itself read rows. Everything coming back from the sandbox
worker is parsed as hostile data.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from saferoom import disclosure
from saferoom.catalog.leases import Lease
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig, WorkerLimits
from saferoom.disclosure.models import ModelSpec, fit_logit, fit_ols, ols_statistics
from saferoom.disclosure.rounds import release_all
from saferoom.engine import cost, plan, timing
from saferoom.errors import InvalidPlan, JobCancelled, ReleaseRefused, WorkerCrashed
from saferoom.jobs.engine_task import to_ipc
from saferoom.jobs.failures import EnginePhase
from saferoom.jobs.spark import SparkExecutor, engine_of, spark_executor
from saferoom.packages import Package
from saferoom.sandbox import Limits, Reply, WorkerPool
from saferoom.sandbox.selftest import PROBE_PACKAGE, READABLE_TASK, Probe, run_self_test

__all__ = ["CatalogVersion", "Isolation", "JobOutcome", "Pipeline", "ReleaseDeadline", "ReleasedOutput"]

_log = logging.getLogger(__name__)

SANDBOX_TASK = "saferoom.sandbox.runner:run_algorithm"
CHECK_TASK = "saferoom.sandbox.runner:check_code"
ENGINE_TASK = "saferoom.jobs.engine_task:execute_plans"
_OUTPUT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
MAX_OUTPUTS = 64
CODE_NICE = 10
MODEL_KINDS = ("ols", "logit")
_OLS = ModelSpec("", (), "ols")
MAX_PRINTED = 64 * 1024


@dataclass(frozen=True)
class ReleasedOutput:
    """One named output that passed the release step."""

    name: str
    kind: str  # "aggregate" | "public" | "value"
    table: pa.Table | None
    value: plan.Scalar
    report: dict[str, Any]
    # The output checker's view (JSON, ``disclosure.release``): the full automatic report with its counts and
    # flags; never shown to the researcher.
    check: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()  # the datasets the output's plan reads (public facts: whether it is held)


@dataclass(frozen=True)
class JobOutcome:
    """Everything a successful job releases."""

    outputs: list[ReleasedOutput]
    printed: str
    versions: dict[str, str] = field(default_factory=dict)  # dataset -> the version it read ("" if unversioned)
    engine_seconds: float = 0.0  # of the job's data phase, the time its engine runs took (the rest: release work)


@dataclass(frozen=True)
class Isolation:
    """Which kernel layers the workers use (all of them unless the host cannot provide one)."""

    seccomp: bool = True
    landlock: bool = True
    network_namespace: bool = True


def to_limits(
    limits: WorkerLimits,
    memory_kind: str,
    isolation: Isolation = Isolation(),
    read_paths: tuple[str, ...] = (),
    nice: int = 0,
) -> Limits:
    """Configuration limits as the sandbox pool takes them."""
    return Limits(
        nice=nice,
        memory_bytes=limits.memory_mib * 2**20,
        cpu_seconds=limits.cpu_seconds,
        wall_seconds=limits.wall_seconds,
        output_bytes=limits.output_mib * 2**20,
        memory_kind=memory_kind,
        seccomp=isolation.seccomp,
        landlock=isolation.landlock,
        read_paths=read_paths,
    )


class Pipeline:
    """Runs jobs through two pre-forked worker pools: one for algorithm code, one for the engine."""

    def __init__(
        self,
        data_dir: Path,
        manifest: Manifest,
        sandbox_limits: WorkerLimits,
        engine_limits: WorkerLimits,
        isolation: Isolation = Isolation(),
        spark: SparkExecutor | None = None,
        engine: str = "arrow",
        on_retired: Callable[[], None] | None = None,
        spark_run_seconds: float = 120.0,
    ) -> None:
        self._engine_kind = engine  # "arrow" or "duckdb": which embedded engine the engine worker runs
        self._spark_run_seconds = spark_run_seconds  # a cluster run's limit, and what it is padded to
        # Called (on the thread that closed it) once a retired catalog version's pool closed and its lease went:
        # the server collects what nothing refers to any more.
        self._on_retired = on_retired
        self._spark = spark
        self._data_dir = data_dir
        self._lock = threading.Lock()
        # The algorithm's worker may not even read the datasets; the engine's may, read-only.
        # It only builds plans (milliseconds of CPU): niced, so that code spinning until its CPU limit leaves the
        # processors to the engine, the server and everybody else's short code phases.
        self._sandbox_limits = to_limits(sandbox_limits, "address_space", isolation, nice=CODE_NICE)
        # Memory-mapped datasets would count against an address-space limit: limit private data instead.
        # DuckDB reads its CPU quota from the cgroup files when it opens a connection (read-only, nothing personal).
        read = (str(data_dir.resolve()), *(["/sys/fs/cgroup"] if engine == "duckdb" else []))
        self._engine_limits = to_limits(engine_limits, "data", isolation, read)
        self._sandbox = WorkerPool(
            name="sandbox",
            initializer="saferoom.sandbox.runner:sandbox_initializer",
            init_args={},
            tasks=[SANDBOX_TASK, CHECK_TASK, READABLE_TASK],
            limits=self._sandbox_limits,
            warm="saferoom.sandbox.runner:warm_worker",
            network_namespace=isolation.network_namespace,
        )
        self._network_namespace = isolation.network_namespace
        try:
            self._current = self._catalog_version(manifest)
        except BaseException:
            self._sandbox.close()
            raise
        self.layers = self._sandbox.layers
        level = logging.INFO if all(self.layers.values()) else logging.WARNING
        _log.log(level, "sandbox kernel layers on this host: %s", self._layer_text())

    @classmethod
    def from_config(
        cls, config: ServerConfig, manifest: Manifest, data_dir: Path, on_retired: Callable[[], None] | None = None
    ) -> Pipeline:
        """The pipeline a server (or ``saferoom dev run``) configured by ``config`` runs jobs with."""
        return cls(
            data_dir,
            manifest,
            config.sandbox_limits,
            config.engine_limits,
            Isolation(config.seccomp, config.landlock, config.network_namespace),
            spark_executor(config.spark_connect, manifest, data_dir),
            config.engine,
            on_retired,
            config.spark_run_seconds,
        )

    def _catalog_version(self, manifest: Manifest) -> CatalogVersion:
        """``manifest``'s versions, leased (before the new pool's zygote maps them: no collector deletes a version
        a job may still read), and an engine pool over them."""
        lease = Lease()
        try:
            lease.hold_manifest(self._data_dir, manifest)
            return CatalogVersion(manifest, self._engine_pool(), lease)
        except BaseException:
            lease.close()
            raise

    def _engine_pool(self) -> WorkerPool:
        """A new engine pool: its zygote maps the files the catalog directory's manifest names now."""
        return WorkerPool(
            name="engine",
            initializer="saferoom.jobs.engine_task:open_catalog",
            init_args={"data_dir": str(self._data_dir), "engine": self._engine_kind},
            tasks=[ENGINE_TASK, READABLE_TASK],
            limits=self._engine_limits,
            warm="saferoom.jobs.engine_task:warm_worker",
            network_namespace=self._network_namespace,
        )

    @property
    def manifest(self) -> Manifest:
        """The catalog new jobs run on."""
        return self._current.manifest

    @property
    def _engine(self) -> WorkerPool:
        return self._current.engine

    @_engine.setter
    def _engine(self, pool: WorkerPool) -> None:  # tests put a recording fake in the pool's place
        self._current.engine = pool

    @contextlib.contextmanager
    def _acquire(self) -> Iterator[CatalogVersion]:
        with self._lock:
            view = self._current
            view.users += 1
        try:
            yield view
        finally:
            with self._lock:
                view.users -= 1
                idle = view.retired and view.users == 0
            if idle:
                self._retire(view)

    def _retire(self, view: CatalogVersion) -> None:
        view.close()
        if self._on_retired is not None:
            self._on_retired()

    def switch(self, manifest: Manifest) -> None:
        """Serve ``manifest`` (new versions of the same datasets) from now on: new jobs map the new files, jobs
        already running finish on the version they started on (its engine pool closes after the last of them).

        The caller has checked that only versions changed (names, columns and policies stay: the packages,
        budgets and approvals of the running server were checked against them)."""
        fresh = self._catalog_version(manifest)
        with self._lock:
            old, self._current = self._current, fresh
            old.retired = True
            idle = old.users == 0
        if idle:
            self._retire(old)
        _log.info("now serving catalog versions %s", fresh.versions(tuple(manifest.datasets)))

    @property
    def zygote_pids(self) -> dict[str, int | None]:
        """The process id of each pool's zygote (for operators' tools and tests)."""
        return {"sandbox": self._sandbox.zygote_pid, "engine": self._engine.zygote_pid}

    def self_test(self, private: Sequence[Path] = (), workers_may_read: bool = False) -> float:
        """Run one task of each kind in a confined worker (``saferoom.sandbox.selftest``): check and run a probe
        package in the sandbox, execute the plan it built in the engine, and try to open each of the server's
        ``private`` files from a worker of each pool: one that opens is a failure (a warning when
        ``workers_may_read``). Returns the seconds it took; raises ``SelfTestFailed`` with the reason."""
        paths = [str(p.resolve()) for p in private if p.exists()]

        def unreadable(pool: str) -> Callable[[Reply], str | None]:
            def check(reply: Reply) -> str | None:
                found = reply.data.get("readable")
                if not isinstance(found, list):
                    return f"unexpected answer {reply.data}"
                if not found:
                    return None
                problem = (
                    f"a {pool} worker can read {', '.join(found)}: neither Landlock nor a drop to uid 65534 confines "
                    f"workers on this host (layers: {self._layer_text()}); run the server as root, or where Landlock "
                    "works, or set workers_may_read_state = true to serve anyway"
                )
                if workers_may_read:
                    _log.warning("%s (serving anyway: workers_may_read_state is true)", problem)
                    return None
                return problem

            return check

        seconds = 0.0
        if paths:
            seconds += run_self_test(self._sandbox, [Probe(READABLE_TASK, {"paths": paths}, unreadable("sandbox"))])
            seconds += run_self_test(self._engine, [Probe(READABLE_TASK, {"paths": paths}, unreadable("engine"))])
        local = sorted(name for name in self.manifest.datasets if self.manifest.dataset(name).engine != "spark")
        if not local:
            return seconds
        dataset = local[0]
        built: dict[str, Any] = {}

        def checked(reply: Reply) -> str | None:
            return None if reply.data.get("files") == len(PROBE_PACKAGE) else f"unexpected answer {reply.data}"

        def ran(reply: Reply) -> str | None:
            order, plans, values, _, printed = self._parse_sandbox_reply(self._current, reply.data, (dataset,))
            if set(plans) != {"rows"} or "columns" not in values or not printed.startswith("columns"):
                return f"unexpected outputs {order}"
            built["rows"] = plan.to_data(plans["rows"])
            return None

        def executed(reply: Reply) -> str | None:
            results = _parse_engine_reply(reply.data, reply.blobs, ["rows"])
            table = results["rows"][0]
            return None if table.num_rows == 1 else f"unexpected result of {table.num_rows} rows"

        request = {
            "files": PROBE_PACKAGE,
            "entrypoint": "main.py:run",
            "params": {"dataset": dataset},
            "manifest": self._current.manifest_data,
            "datasets": [dataset],
        }
        seconds += run_self_test(
            self._sandbox, [Probe(CHECK_TASK, {"files": PROBE_PACKAGE}, checked), Probe(SANDBOX_TASK, request, ran)]
        )
        engine = Probe(ENGINE_TASK, {"plans": [["rows", built["rows"]]], "inputs": []}, executed)
        return seconds + run_self_test(self._engine, [engine])

    def _layer_text(self) -> str:
        return ", ".join(f"{name} {'on' if on else 'OFF'}" for name, on in sorted(self.layers.items()))

    def check_code(self, package: Package) -> None:
        """Compile every Python file of ``package`` under the sandbox policy; raises ``CodeRefused``."""
        self._sandbox.run(CHECK_TASK, {"files": _python_files(package)})

    def run(
        self,
        package: Package,
        params: dict[str, Any],
        cancel: threading.Event | None = None,
        datasets: tuple[str, ...] | None = None,
        epsilon: Mapping[str, float] | None = None,
        before_engine: Callable[[], None] | None = None,
        deadline: ReleaseDeadline | None = None,
        on_versions: Callable[[dict[str, str]], None] | None = None,
    ) -> JobOutcome:
        """Run ``package`` with already validated ``params`` over ``datasets`` (default: all it declares),
        spending at most ``epsilon`` (default: what the package declares) on each differentially private one.

        ``before_engine``, if given, is called once the code phase is over and before any engine work (the job
        service waits there for an engine slot). ``deadline``, if given, is extended by the admitted worst case
        of every release (the server waits for it before it publishes the job's end: README "Timing").

        Raises a JobError subclass on failure: from the first engine call on, only the fixed ``EngineError`` of
        its kind (or ``JobCancelled``), with the original as ``__cause__`` (``saferoom.jobs.failures``).
        """
        with self._acquire() as view:  # the whole job runs on the catalog version it started on
            if on_versions is not None:  # recorded before any work: what the job reads, whatever happens next
                on_versions(view.versions(package.datasets if datasets is None else datasets))
            return self._run(view, package, params, cancel, datasets, epsilon, before_engine, deadline)

    def _run(
        self,
        view: CatalogVersion,
        package: Package,
        params: dict[str, Any],
        cancel: threading.Event | None,
        datasets: tuple[str, ...] | None,
        epsilon: Mapping[str, float] | None,
        before_engine: Callable[[], None] | None,
        deadline: ReleaseDeadline | None,
    ) -> JobOutcome:
        datasets = package.datasets if datasets is None else datasets
        epsilon = package.epsilon if epsilon is None else epsilon
        unpaid = [d for d in datasets if view.manifest.dataset(d).policy.differential_privacy and d not in epsilon]
        if unpaid:  # data-independent: before any work
            raise ReleaseRefused(
                f"{', '.join(unpaid)} releases only differentially private results: the package must declare "
                f"[privacy] epsilon for {'it' if len(unpaid) == 1 else 'them'}"
            )
        reply = self._sandbox.run(
            SANDBOX_TASK,
            {
                "files": _python_files(package),
                "entrypoint": package.entrypoint,
                "params": params,
                "manifest": view.manifest_for(datasets),
                "datasets": list(datasets),
            },
            cancel=cancel,
        )
        order, plans, values, models, printed = self._parse_sandbox_reply(view, reply.data, datasets)
        for node in plans.values():  # data-independent: refused before any work
            if engine_of(node, view.manifest) == "spark" and self._spark is None:
                raise InvalidPlan("this server has no Spark cluster configured for datasets on the Spark engine")
        ordinary = {name: node for name, node in plans.items() if models.get(name, _OLS).kind == "ols"}
        protected = disclosure.protect(plan.share_subtrees(ordinary), view.manifest, models=set(models))
        if before_engine is not None:
            before_engine()
        # Everything from the first engine call on may fail because of the data: its errors leave with fixed text.
        with EnginePhase() as phase:
            released = self._released(view, protected, cancel, epsilon, phase, deadline)
            outputs: list[ReleasedOutput] = []
            for name in order:  # the order the algorithm returned them in
                if name in plans:
                    spec = models.get(name)
                    if spec is not None and spec.kind == "logit":
                        one = functools.partial(self._release_one, view, cancel=cancel, phase=phase, deadline=deadline)
                        result = fit_logit(plans[name], spec, view.manifest, one)
                    elif spec is not None:
                        result = fit_ols(released[name], spec, view.manifest)
                    else:
                        result = released[name]
                    report = result.report.to_data()
                    read = tuple(sorted({n.dataset for n in plan.walk(plans[name]) if isinstance(n, plan.Scan)}))
                    outputs.append(
                        ReleasedOutput(name, report["kind"], result.table, None, report, result.check, datasets=read)
                    )
                else:
                    report = disclosure.value_report(name).to_data()
                    outputs.append(ReleasedOutput(name, "value", None, values[name], report))
        return JobOutcome(outputs, printed, view.versions(datasets), phase.engine_seconds)

    def _released(
        self,
        view: CatalogVersion,
        protected: dict[str, disclosure.Protected],
        cancel: threading.Event | None,
        epsilon: Mapping[str, float] | None = None,
        phase: EnginePhase | None = None,
        deadline: ReleaseDeadline | None = None,
    ) -> dict[str, disclosure.Released]:
        # Data-independent: every engine run these outputs lead to is bounded from the catalog and the plans, and
        # refused before any work if its worst case may not fit the engine worker's limits.
        runs = cost.admit_job(protected, view.manifest, self._engine_limits, self._engine_kind)
        if deadline is not None:  # the job may end only once this release's worst case has passed too
            remote = sum(run.remote for run in runs)  # the cluster's runs: padded to their limit, whole
            stored = timing.store_seconds(cost.stored_bytes(runs, protected))  # the result stored before its end
            deadline.extend(cost.padded_seconds(runs) + remote * self._spark_run_seconds + stored)

        def execute(work: list[list[Any]], inputs: dict[str, pa.Table]) -> dict[str, tuple[pa.Table, dict[str, int]]]:
            if phase is not None:
                phase.start()
            began = time.monotonic()
            try:
                return _execute(work, inputs)
            finally:
                if phase is not None:
                    phase.engine_seconds += time.monotonic() - began

        def _execute(work: list[list[Any]], inputs: dict[str, pa.Table]) -> dict[str, tuple[pa.Table, dict[str, int]]]:
            remote: list[tuple[str, plan.Node]] = []
            if self._spark is not None:
                decoded = [(str(name), plan.from_data(data)) for name, data in work]
                remote = [(name, node) for name, node in decoded if engine_of(node, view.manifest) == "spark"]
                work = [w for w in work if w[0] not in {name for name, _ in remote}]
            results: dict[str, tuple[pa.Table, dict[str, int]]] = {}
            if work:
                labels = sorted(inputs)
                request = {"plans": work, "inputs": labels, "engine": self._engine_kind}
                reply = view.engine.run(ENGINE_TASK, request, [to_ipc(inputs[x]) for x in labels], cancel=cancel)
                results = _parse_engine_reply(reply.data, reply.blobs, [w[0] for w in work])
            if remote:
                assert self._spark is not None
                wall = min(self._engine_limits.wall_seconds, self._spark_run_seconds)
                results.update(self._spark.execute(remote, inputs, cancel, wall))
            return results

        pad = deadline.extend if deadline is not None else None  # the draws, once their number is public
        return release_all(protected, view.manifest, execute, epsilon or {}, pad)

    def _release_one(
        self,
        view: CatalogVersion,
        node: plan.Node,
        cancel: threading.Event | None,
        phase: EnginePhase | None = None,
        deadline: ReleaseDeadline | None = None,
    ) -> disclosure.Released:
        """One more plan through protection, the engine and release (an iteration of a model fit)."""
        protected = disclosure.protect({"model": node}, view.manifest, models={"model"})
        return self._released(view, protected, cancel, phase=phase, deadline=deadline)["model"]

    def _parse_sandbox_reply(
        self, view: CatalogVersion, data: dict[str, Any], datasets: tuple[str, ...]
    ) -> tuple[list[str], dict[str, plan.Node], dict[str, plan.Scalar], dict[str, ModelSpec], str]:
        """Strictly parse what the (untrusted) sandbox worker sent back.

        A model arrives as its input plan and column names; the server builds the statistics plan itself.
        """
        outputs = data.get("outputs")
        printed = data.get("printed", "")
        if not isinstance(outputs, dict) or not isinstance(printed, str) or len(outputs) > MAX_OUTPUTS:
            raise WorkerCrashed("the sandbox worker sent a malformed reply")
        if not outputs:
            raise ReleaseRefused("the algorithm returned no outputs: return a dict of named tables or values")
        plans: dict[str, plan.Node] = {}
        values: dict[str, plan.Scalar] = {}
        models: dict[str, ModelSpec] = {}
        allowed = set(datasets)
        for name, out in outputs.items():
            if not isinstance(name, str) or not _OUTPUT_NAME.match(name):
                raise InvalidPlan("output names must be identifiers of at most 128 characters")
            if isinstance(out, dict) and set(out) in ({"plan"}, {"model"}):
                model = out.get("model")
                if model is not None:
                    spec, source = _model_spec(model)
                    node = plan.from_data(source)
                else:
                    node = plan.from_data(out["plan"])
                used = {n.dataset for n in plan.walk(node) if isinstance(n, plan.Scan)}
                if not used <= allowed:
                    raise InvalidPlan(f"output {name!r} reads datasets this run may not use")
                if model is not None:
                    if spec.kind == "ols":
                        node = ols_statistics(node, spec, view.manifest)
                    models[name] = spec  # a logit keeps its input: each iteration builds its own statistics
                plans[name] = node
            elif isinstance(out, dict) and set(out) == {"value"} and _is_scalar(out["value"]):
                values[name] = out["value"]
            else:
                raise WorkerCrashed("the sandbox worker sent a malformed output")
        return list(outputs), plans, values, models, printed[:MAX_PRINTED]

    def close(self) -> None:
        """Stop both worker pools and forget the Spark session (idempotent)."""
        self._sandbox.close()
        with self._lock:
            self._current.retired = True
        self._current.close()
        if self._spark is not None:
            self._spark.close()


class CatalogVersion:
    """One state of the catalog as jobs see it: its manifest, the engine pool whose zygote mapped its files, and
    the lease on its dataset versions (``catalog.leases``), held until the pool closes."""

    def __init__(self, manifest: Manifest, engine: WorkerPool, lease: Lease | None = None) -> None:
        self.manifest = manifest
        self.manifest_data = manifest.to_data()
        self.engine = engine
        self.lease = lease or Lease()
        self.users = 0  # jobs running on it (guarded by the pipeline's lock)
        self.retired = False  # a newer version serves new jobs: close the pool once the last user is done

    def close(self) -> None:
        """Stop its engine pool, then give its versions back (idempotent)."""
        self.engine.close()
        self.lease.close()

    def manifest_for(self, datasets: tuple[str, ...]) -> dict[str, Any]:
        """The manifest as the sandbox worker gets it: the catalog's entries of ``datasets`` only (all it may
        read), so that a job's code phase neither sees nor parses the rest (a trivial job's request was 10 kB)."""
        return {**self.manifest_data, "datasets": {d: self.manifest_data["datasets"][d] for d in datasets}}

    def versions(self, datasets: tuple[str, ...]) -> dict[str, str]:
        """The version of each of ``datasets`` ("" for a generated or hand-written one)."""
        return {name: self.manifest.dataset(name).version or "" for name in datasets}


class ReleaseDeadline:
    """When a job may end at the earliest: the admitted worst cases of its releases (``engine.cost``, "Padding"),
    chained from the first one's start. A job that waits for it before it publishes anything (a result, or a
    refusal that depends on data) shows, by its duration, its plans, the catalog and what its DP releases showed
    (their numbers of cells), not how much work the data made (unless the work overran its worst case, which is
    logged for the operator)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def extend(self, seconds: float) -> None:
        """Work of worst case ``seconds`` starts now: a release, or a part of one padded once its amount is
        public (a DP quantile's draws, by the released cells)."""
        now = time.monotonic()
        if self.at is not None and now > self.at:
            # The time model was wrong for this plan on this machine (never expected; bench/bench_time_model.py
            # measures the margin). Fixed text: by how much it overran depends on the data.
            _log.warning("a release overran its admitted worst-case time: the job's end may show its work")
        self.at = max(self.at if self.at is not None else now, now) + seconds

    def boundary(self, started: float, quantum: float) -> float:
        """When a job that started at ``started`` may publish its end: once this deadline has passed (or now, if
        later), rounded up to a whole number of ``quantum`` seconds after its start (at least one), so that what
        jitter remains (storing and sending the result) shows less (README "Timing")."""
        now = time.monotonic()
        end = now if self.at is None else max(now, self.at)
        return started + max(1, math.ceil((end - started) / quantum)) * quantum

    def wait(self, cancel: threading.Event | None = None) -> None:
        """Wait until the deadline; a cancel ends the wait (and the job) as cancelled, never early with a result."""
        remaining = 0.0 if self.at is None else self.at - time.monotonic()
        if remaining <= 0:
            return
        if cancel is None:
            time.sleep(remaining)
        elif cancel.wait(remaining):
            raise JobCancelled("the job was cancelled")


def _model_spec(model: Any) -> tuple[ModelSpec, Any]:
    """A model output from the sandbox, checked shape by shape (the names are checked against the plan later)."""
    if not isinstance(model, dict) or set(model) != {"kind", "input", "y", "x"} or model["kind"] not in MODEL_KINDS:
        raise WorkerCrashed("the sandbox worker sent a malformed model")
    y, x = model["y"], model["x"]
    if not isinstance(y, str) or not isinstance(x, list) or not all(isinstance(c, str) for c in x):
        raise WorkerCrashed("the sandbox worker sent a malformed model")
    return ModelSpec(y, tuple(x), model["kind"]), model["input"]


def _python_files(package: Package) -> dict[str, str]:
    return {name: package.source(name) for name in package.files if name.endswith(".py")}


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 65_536


def _parse_engine_reply(
    data: dict[str, Any], blobs: list[bytes], names: list[str]
) -> dict[str, tuple[pa.Table, dict[str, int]]]:
    """Read the engine worker's Arrow IPC streams (engine workers run trusted code; still checked)."""
    outputs = data.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != len(names) or len(blobs) != len(names):
        raise WorkerCrashed("the engine worker sent a malformed reply")
    tables: dict[str, tuple[pa.Table, dict[str, int]]] = {}
    for name, meta, blob in zip(names, outputs, blobs, strict=True):
        dropped = meta.get("dropped") if isinstance(meta, dict) else None
        if meta.get("name") != name or not isinstance(dropped, dict):
            raise WorkerCrashed("the engine worker sent a malformed reply")
        try:
            table = pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
        except pa.ArrowInvalid as exc:
            raise WorkerCrashed("the engine worker sent an unreadable table") from exc
        tables[name] = (table, {str(k): int(v) for k, v in dropped.items()})
    return tables


def dumps_value(value: plan.Scalar) -> str:
    """A released scalar as JSON (how it is stored)."""
    return json.dumps(value, allow_nan=False)
