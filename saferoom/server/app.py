"""Bootstrap: build the domain from a config, expose it over gRPC, and shut it all down cleanly."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from saferoom import __version__
from saferoom._proto.saferoom.v1 import audit_pb2 as _audit_pb2
from saferoom._proto.saferoom.v1 import audit_pb2_grpc as _audit_pb2_grpc
from saferoom._proto.saferoom.v1 import budgets_pb2 as _budgets_pb2
from saferoom._proto.saferoom.v1 import budgets_pb2_grpc as _budgets_pb2_grpc
from saferoom._proto.saferoom.v1 import catalog_pb2 as _catalog_pb2
from saferoom._proto.saferoom.v1 import catalog_pb2_grpc as _catalog_pb2_grpc
from saferoom._proto.saferoom.v1 import checks_pb2 as _checks_pb2
from saferoom._proto.saferoom.v1 import checks_pb2_grpc as _checks_pb2_grpc
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import jobs_pb2_grpc as _jobs_pb2_grpc
from saferoom._proto.saferoom.v1 import mock_pb2 as _mock_pb2
from saferoom._proto.saferoom.v1 import mock_pb2_grpc as _mock_pb2_grpc
from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from saferoom._proto.saferoom.v1 import packages_pb2_grpc as _packages_pb2_grpc
from saferoom._proto.saferoom.v1 import review_pb2 as _review_pb2
from saferoom._proto.saferoom.v1 import review_pb2_grpc as _review_pb2_grpc
from saferoom.audit import AuditLog, Checkpoint, EventType
from saferoom.audit.crosscheck import check_server_state
from saferoom.audit.identities import IdentityEvents
from saferoom.audit.log import KEY_FILE
from saferoom.catalog.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from saferoom.catalog.watch import CatalogWatcher
from saferoom.config import ServerConfig
from saferoom.disclosure.budgets import BudgetService
from saferoom.errors import InvalidRequest, SaferoomError, StateDamaged, Unavailable
from saferoom.identity import TrustStore
from saferoom.identity.pki import CA_KEY, SERVER_KEY
from saferoom.jobs import CheckService, JobService, Pipeline
from saferoom.metrics import Metrics
from saferoom.mock import MockService
from saferoom.packages import PackageService
from saferoom.server.audit_service import AuditServicer
from saferoom.server.auth import AuthInterceptor, Caller, RefusalHook, StreamSlots
from saferoom.server.checks_service import ChecksServicer
from saferoom.server.errors import ErrorInterceptor
from saferoom.server.mock_service import MockServicer
from saferoom.server.observe import MetricsEndpoint, RequestInterceptor
from saferoom.server.services import (
    BudgetsServicer,
    CatalogServicer,
    JobsServicer,
    PackagesServicer,
    ReviewServicer,
)
from saferoom.server.versions import VersionCollector, record_published
from saferoom.store import (
    BudgetLedger,
    CheckStore,
    Database,
    IdentityStore,
    JobStore,
    PackageStore,
    PublicationLedger,
)
from saferoom.store import stats as _stats

__all__ = ["SaferoomServer", "create_server"]

_log = logging.getLogger(__name__)

SERVICE_NAMES = (
    _catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    _packages_pb2.DESCRIPTOR.services_by_name["PackagesService"].full_name,
    _jobs_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name,
    _review_pb2.DESCRIPTOR.services_by_name["ReviewService"].full_name,
    _audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    _budgets_pb2.DESCRIPTOR.services_by_name["BudgetsService"].full_name,
    _checks_pb2.DESCRIPTOR.services_by_name["ChecksService"].full_name,
    _mock_pb2.DESCRIPTOR.services_by_name["MockService"].full_name,
)


@dataclass
class SaferoomServer:
    """A running server and the domain objects behind it."""

    grpc_server: grpc.Server
    port: int
    jobs: JobService
    packages: PackageService
    audit: AuditLog
    pipeline: Pipeline
    database: Database
    health: health.HealthServicer
    metrics: Metrics
    metrics_endpoint: MetricsEndpoint | None = None
    watcher: CatalogWatcher | None = None
    collector: VersionCollector | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def metrics_port(self) -> int | None:
        """The port of the /metrics, /healthz and /readyz endpoint (None: not configured)."""
        return None if self.metrics_endpoint is None else self.metrics_endpoint.port

    def not_ready(self) -> str:
        """Why the server should get no traffic now ("" when it takes work): for /readyz."""
        if self._stopped.is_set():
            return "stopping"
        if not self.audit.writable:
            return "the audit log cannot be written (see the server log)"
        return ""

    def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new calls, cancel running jobs, stop workers and close the database (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        if self.watcher is not None:
            self.watcher.close()
        done = self.grpc_server.stop(grace)
        self.jobs.close()
        self.pipeline.close()
        if self.collector is not None:  # after the pipeline: a pool closing asks for a collection
            self.collector.close()
        done.wait(grace)
        try:
            self.audit.append(EventType.SERVER_STOPPED, "saferoom", "server")
        except SaferoomError as exc:  # a full disk: stop anyway; what is committed waits in the outbox
            _log.error("server_stopped could not be recorded: %s", exc.message)
        self.audit.close()  # seals the log with a final checkpoint
        self.database.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        _log.info("server stopped")

    def wait(self) -> None:
        """Block until the server stops."""
        self.grpc_server.wait_for_termination()

    def __enter__(self) -> SaferoomServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_server(config: ServerConfig, on_refused: RefusalHook | None = None) -> tuple[SaferoomServer, int]:
    """Build and start a server for ``config``; returns it and the port it listens on (TLS only)."""
    manifest = Manifest.load(config.data_dir)
    trust = TrustStore(config.pki_dir)
    server_key, server_cert, ca_cert = trust.server_material()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    # Only the server's own user may enter the state directory: no worker (running as nobody) can read the
    # database, the package store or the audit key even if every other layer failed.
    config.state_dir.chmod(0o700)
    database = Database.open(config.state_dir / "saferoom.db")  # refuses a damaged file (PRAGMA quick_check)
    pipeline: Pipeline | None = None
    audit: AuditLog | None = None
    collector: VersionCollector | None = None
    endpoint: MetricsEndpoint | None = None
    metrics = Metrics(config.metrics_max_identities, config.metrics_phase_detail)
    try:
        # Opening the log verifies it and drains the outbox into it; then the database must hold exactly what
        # the log recorded, or the server refuses to serve (with what is wrong; `saferoom state check` says the same).
        audit = AuditLog(
            config.state_dir / "audit",
            database,
            config.audit_checkpoint_every,
            config.audit_segment_bytes,
            observe=metrics.audit_written,
            anchors=_anchors(config.audit_anchor),
        )
        problems = check_server_state(database, audit)
        if problems:
            raise StateDamaged(
                f"the state in {config.state_dir} disagrees with its audit log, so the server does not start: "
                + "; ".join(problems)
            )
        audit.append(EventType.LOG_VERIFIED, "saferoom", "server", {}, {"ok": True, "records": audit.last_seq})
        identity_events = IdentityEvents(audit, config.pki_dir)
        identity_events.sync()
        trust.on_revocation_list_change(identity_events.sync)
        caller = Caller(
            trust,
            IdentityStore(database),
            on_new_identity=lambda who: None if identity_events.knows(who.serial) else identity_events.sync(),
        )
        collector = VersionCollector(
            config.data_dir, JobStore(database), audit, config.dataset_versions_kept, config.catalog_poll_seconds
        )
        # on_retired: the versions only a retired pool served may go once it closed
        pipeline = Pipeline.from_config(config, manifest, config.data_dir, on_retired=collector.request)
        # Before serving: one task of each kind in a confined worker, or no server (SelfTestFailed says why).
        private = (
            config.state_dir / "saferoom.db",
            config.state_dir / "audit" / KEY_FILE,
            config.pki_dir / SERVER_KEY,
            config.pki_dir / CA_KEY,
        )
        seconds = pipeline.self_test(private, config.workers_may_read_state)
        _log.info("start-up self-test passed in %.2f s", seconds)
        # The differentially private datasets, each with the delta one run spends on it.
        dp_delta = {n: d.policy.dp_delta for n, d in manifest.datasets.items() if d.policy.differential_privacy}
        packages = PackageService(
            PackageStore(database, config.state_dir / "packages"),
            trust,
            manifest.datasets,
            pipeline.check_code,
            audit,
            max_approval_days=config.max_approval_days,
            private_datasets=dp_delta,
        )
        budgets = BudgetService(BudgetLedger(database), dp_delta, manifest.datasets, audit)
        checks = CheckService(CheckStore(database), JobStore(database), packages, manifest.datasets, audit, trust)
        jobs = JobService(
            JobStore(database),
            packages,
            pipeline,
            audit,
            budgets,
            max_concurrent=config.max_concurrent_jobs,
            max_code_phases=config.max_code_phases,
            max_queued=config.max_queued_jobs,
            release_quantum=config.release_quantum_ms / 1000,
            checking=checks,
            metrics=metrics,
        )
        _register_gauges(metrics, database, jobs, audit, pipeline)
        # Mock data: the real tables are read (memory-mapped) only to measure them for a publication.
        mock = MockService(Catalog.open(config.data_dir), PublicationLedger(database), audit)
        message_bytes = config.max_message_mib * 2**20
        streams = StreamSlots(config.max_streams_per_identity, config.max_streams)
        server = grpc.server(
            # Every open stream holds a thread: more threads than stream slots, so that unary calls are served
            # even while every stream slot is taken.
            futures.ThreadPoolExecutor(max_workers=config.max_streams + 16, thread_name_prefix="rpc"),
            # Outermost first: errors (including refusals) become statuses; then every call is authorized.
            # The request interceptor sees every call's final status, refusals included.
            interceptors=[
                RequestInterceptor(metrics),
                ErrorInterceptor(),
                AuthInterceptor(caller, _refusal_hooks(audit, on_refused), streams),
            ],
            options=[
                ("grpc.max_send_message_length", message_bytes),
                ("grpc.max_receive_message_length", message_bytes),
                ("grpc.so_reuseport", 0),
                # A peer that connects and never finishes the TLS handshake (gRPC's default: 120 s) or that
                # holds a connection without calls is dropped, so that idle sockets cannot pile up.
                ("grpc.server_handshake_timeout_ms", int(config.handshake_timeout_seconds * 1000)),
                ("grpc.max_connection_idle_ms", int(config.idle_timeout_seconds * 1000)),
            ],
            maximum_concurrent_rpcs=config.max_streams + 40,
        )
        catalog_servicer = CatalogServicer(manifest, mock, caller)
        _catalog_pb2_grpc.add_CatalogServiceServicer_to_server(catalog_servicer, server)
        _packages_pb2_grpc.add_PackagesServiceServicer_to_server(PackagesServicer(packages, caller), server)
        _review_pb2_grpc.add_ReviewServiceServicer_to_server(ReviewServicer(packages, caller), server)
        _jobs_pb2_grpc.add_JobsServiceServicer_to_server(JobsServicer(jobs, caller), server)
        _audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(audit, caller), server)
        _budgets_pb2_grpc.add_BudgetsServiceServicer_to_server(BudgetsServicer(budgets, caller), server)
        _checks_pb2_grpc.add_ChecksServiceServicer_to_server(ChecksServicer(checks, caller), server)
        _mock_pb2_grpc.add_MockServiceServicer_to_server(MockServicer(mock, caller), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection((*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server)
        try:
            credentials = grpc.ssl_server_credentials(
                [(server_key, server_cert)], root_certificates=ca_cert, require_client_auth=True
            )
            port = server.add_secure_port(config.listen, credentials)
        except RuntimeError:
            port = 0
        if port == 0:
            raise Unavailable(f"cannot listen on {config.listen} (address in use or not local)")
        server.start()
        failed, requeued = jobs.recover()
        if failed or requeued:
            _log.warning(
                "recovered after restart: %d interrupted jobs failed, %d queued jobs resumed",
                failed,
                requeued,
            )
        audit.append(
            EventType.SERVER_STARTED,
            "saferoom",
            "server",
            {"datasets": sorted(manifest.datasets)},
            {
                "version": __version__,
                "port": port,
                "jobs_failed_as_interrupted": failed,
                "jobs_resumed": requeued,
                "sandbox_layers": pipeline.layers,
            },
        )
        record_published(audit, manifest, sorted(manifest.datasets))
        collector.collect()  # after the interrupted jobs were settled: they read nothing any more

        def new_versions(new: Manifest, changed: list[str]) -> None:
            assert audit is not None and pipeline is not None and collector is not None
            pipeline.switch(new)  # running jobs finish on the version they started on
            catalog_servicer.serve(new)
            mock.serve(Catalog.open(config.data_dir))  # the old mapping, and its lease, go with their last user
            record_published(audit, new, changed)
            collector.request()  # the versions only the old pool (or the old mock catalog) held may go now

        watcher = CatalogWatcher(config.data_dir, manifest, new_versions, config.catalog_poll_seconds)
        for name in ("", *SERVICE_NAMES):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        _log.info("saferoom serving %d datasets on port %d (mutual TLS)", len(manifest.datasets), port)
        running = SaferoomServer(
            server,
            port,
            jobs,
            packages,
            audit,
            pipeline,
            database,
            health_servicer,
            metrics,
            watcher=watcher,
            collector=collector,
        )
        if config.metrics_listen:
            try:
                endpoint = MetricsEndpoint(config.metrics_listen, metrics, running.not_ready)
            except OSError as exc:
                running.stop(0)
                raise Unavailable(f"cannot serve metrics on {config.metrics_listen} ({exc.strerror})") from None
            running.metrics_endpoint = endpoint
            _log.info("metrics, /healthz and /readyz on http://%s", config.metrics_listen)
        return running, port
    except BaseException:
        if pipeline is not None:
            pipeline.close()
        if collector is not None:
            collector.close()
        if audit is not None:
            audit.close()
        database.close()
        raise


def _anchors(path: str) -> tuple[Checkpoint, ...]:
    """The auditor's checkpoint the log must hold (``audit_anchor``), if one is configured."""
    if not path:
        return ()
    try:
        return (Checkpoint.from_json(Path(path).read_text(encoding="utf-8")),)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"audit_anchor: cannot read the checkpoint {Path(path).name}: {exc}") from None


def _register_gauges(metrics: Metrics, db: Database, jobs: JobService, audit: AuditLog, pipeline: Pipeline) -> None:
    """The gauges read at scrape time: counts from the state, slots in use, the sandbox's kernel layers."""
    metrics.gauge(
        "saferoom_jobs", "jobs recorded, by state and error code", ["state", "code"], lambda: _stats.jobs_by_state(db)
    )
    metrics.gauge(
        "saferoom_queue_depth",
        "jobs waiting, by researcher (the deepest metrics_max_identities; the rest as _other)",
        ["researcher"],
        lambda: metrics.capped(_stats.queued_by_owner(db)),
    )
    metrics.gauge(
        "saferoom_budget_spent_epsilon", "privacy budget (epsilon) charged on each dataset, everyone together",
        ["dataset"], lambda: [((d,), e) for d, e, _ in _stats.budget_spent(db)],
    )  # fmt: skip
    metrics.gauge(
        "saferoom_budget_spent_delta", "privacy budget (delta) charged on each dataset, everyone together",
        ["dataset"], lambda: [((d,), dl) for d, _, dl in _stats.budget_spent(db)],
    )  # fmt: skip
    if metrics.phase_detail:
        # When an engine slot frees is when the engine finished: data-dependent timing, polled as often as one
        # likes; and the code slots and the in-memory queue move with it. Only with the unpadded phases.
        metrics.gauge(
            "saferoom_job_slots_busy", "job slots in use: code phases, engine phases, and jobs queued in memory",
            ["kind"], lambda: [((k,), v) for k, v in sorted(jobs.occupancy().items())],
        )  # fmt: skip
    metrics.gauge(
        "saferoom_worker_pool_up", "each worker pool's zygote is running (1) or not (0)", ["pool"],
        lambda: [((name,), float(pid is not None)) for name, pid in sorted(pipeline.zygote_pids.items())],
    )  # fmt: skip
    metrics.gauge(
        "saferoom_sandbox_layer", "kernel layers the workers get on this host (1: on)", ["layer"],
        lambda: [((name,), float(on)) for name, on in sorted(pipeline.layers.items())],
    )  # fmt: skip
    metrics.gauge(
        "saferoom_audit_last_seq", "sequence number of the last audit record", [], lambda: [((), audit.last_seq)]
    )
    metrics.gauge("saferoom_audit_segments", "sealed audit log segments", [], lambda: [((), audit.segments)])
    metrics.gauge(
        "saferoom_audit_writable", "the audit log takes records (0: broken, or records wait in the outbox)", [],
        lambda: [((), float(audit.writable))],
    )  # fmt: skip


def _refusal_hooks(audit: AuditLog, extra: RefusalHook | None) -> RefusalHook:
    """Every refused call goes to the audit log (and the server log, and ``extra`` if given)."""

    def hook(method: str, name: str, roles: str, error: SaferoomError) -> None:
        _log.warning("refused %s for %s: %s", method, name or "an unidentified peer", error.message)
        summary = {"method": method.lstrip("/"), "code": error.code, "reason": error.message}
        audit.append(EventType.CALL_REFUSED, name or "unknown", roles, {}, summary)
        if extra is not None:
            extra(method, name, roles, error)

    return hook
