"""Operational metrics for Prometheus: what the service does, never what the data holds.

One ``Metrics`` per server, with its own registry (several servers in one process do not mix). Counters and
histograms are fed by a few calls (a request ended, records were appended, a job's phase ended); everything that
the state database or the services already know (jobs by state and outcome, queue depth per researcher, budget
spent per dataset, slots in use, sandbox layers) is read when Prometheus scrapes, so it costs a job nothing.

**What is never exported**: data values, result values, error messages, parameters, and any figure whose value
depends on data a job may not release. Timing is the subtle one. How long the engine took on an admitted plan
depends on the data (rows kept by a filter, cells of a group-by): that is why a job's end is published only on
the release quantum's grid after its releases' worst case (README "Timing"). The phases *before* the engine do
not depend on the data (waiting in the queue; the code phase, where algorithm code only builds plans and sees
nothing), and neither does the sum of everything after the code phase up to the published end, which ends on the
quantum's grid. So ``saferoom_job_phase_seconds`` has, by default, the phases ``queue``, ``code`` and ``padded``
(engine + release + the quantum wait, one figure). The split of ``padded`` into ``engine``, ``release`` and
``quantum`` is an unpadded timing side channel for whoever can scrape: it is exported only with
``metrics_phase_detail = true``, for a deployment whose scraper the operator trusts like the server's own
diagnostic log (the endpoint listens on loopback by default). A red-team test checks that with the default,
nothing exported varies with the data.

Identities are not data, so queue depth is labelled by researcher; the label set is capped
(``max_identities``, the deepest queues): the rest are summed under ``researcher="_other"``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["DETAIL_PHASES", "PUBLIC_PHASES", "JobTimer", "Metrics"]

PUBLIC_PHASES = ("queue", "code", "padded")
DETAIL_PHASES = ("engine", "release", "quantum")
OTHER = "_other"
_PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

# (label values, value) rows of one gauge, read at scrape time.
Rows = Callable[[], Iterable[tuple[Sequence[str], float]]]


class _Gauges(Collector):
    """Gauges whose values are read from their sources when Prometheus scrapes."""

    def __init__(self) -> None:
        self._sources: list[tuple[str, str, tuple[str, ...], Rows]] = []
        self._lock = threading.Lock()

    def add(self, name: str, documentation: str, labels: Sequence[str], rows: Rows) -> None:
        with self._lock:
            self._sources.append((name, documentation, tuple(labels), rows))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            sources = list(self._sources)
        for name, documentation, labels, rows in sources:
            family = GaugeMetricFamily(name, documentation, labels=list(labels))
            try:
                for values, value in rows():
                    family.add_metric([str(v) for v in values], float(value))
            except Exception:  # the database closing under a scrape at shutdown: leave this gauge out
                continue
            yield family

    def describe(self) -> Iterable[Metric]:
        return []


class JobTimer:
    """The phases of one running job, ended one after another; observed when the job ends."""

    __slots__ = ("_code_end", "_done", "_due", "_last", "_metrics", "_seconds", "started")

    def __init__(self, metrics: Metrics, queued_seconds: float) -> None:
        self._metrics = metrics
        self._seconds: dict[str, float] = {"queue": max(0.0, queued_seconds)}
        self.started = self._last = self._code_end = time.monotonic()  # the job's start, as ``time.monotonic``
        self._due: float | None = None
        self._done = False

    def mark(self, phase: str) -> None:
        """The phase ``phase`` (one of ``PUBLIC_PHASES``' code or ``DETAIL_PHASES``) ended now."""
        now = time.monotonic()
        self._seconds[phase] = self._seconds.get(phase, 0.0) + now - self._last
        self._last = now
        if phase == "code":
            self._code_end = now

    def mark_split(self, first: str, first_seconds: float, second: str) -> None:
        """Two phases ended now, interleaved: ``first`` took ``first_seconds`` of the time since the last mark
        (at most all of it), ``second`` the rest (the engine runs and the release work between them)."""
        now = time.monotonic()
        elapsed = now - self._last
        taken = min(max(0.0, first_seconds), elapsed)
        self._seconds[first] = self._seconds.get(first, 0.0) + taken
        self._seconds[second] = self._seconds.get(second, 0.0) + elapsed - taken
        self._last = now

    def published_at(self, due: float) -> None:
        """The job's end was published at its boundary ``due`` (``time.monotonic``): its ``padded`` phase is
        then the time from the code phase's end to the boundary, not the measured time to the end's recording,
        whose jitter (SQLite, the audit log's fsync, the machine's load) is not on the quantum's grid."""
        self._due = due

    def done(self) -> None:
        """The job's end was published: observe its phases (once)."""
        if not self._done:
            self._done = True
            seconds = dict(self._seconds)
            if self._due is not None:
                seconds["padded"] = max(0.0, self._due - self._code_end)
            self._metrics.observe_job(seconds)


class Metrics:
    """The server's metrics registry and the few calls that feed it."""

    def __init__(self, max_identities: int = 64, phase_detail: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.max_identities = max_identities
        self.phase_detail = phase_detail
        self._gauges = _Gauges()
        self.registry.register(self._gauges)
        self._requests = Counter(
            "saferoom_requests", "gRPC calls answered, by method and status code", ["method", "code"],
            registry=self.registry,
        )  # fmt: skip
        self._request_seconds = Histogram(
            "saferoom_request_duration_seconds", "gRPC call duration (a stream: until it ended)", ["method"],
            registry=self.registry,
        )  # fmt: skip
        self._refusals = Counter(
            "saferoom_refusals", "gRPC calls answered with an error, by status code", ["code"], registry=self.registry
        )
        self._phases = Histogram(
            "saferoom_job_phase_seconds",
            "job phases: queue, code, padded (engine + release + quantum wait, ending on the quantum's grid); "
            "engine, release and quantum only with metrics_phase_detail",
            ["phase"],
            buckets=_PHASE_BUCKETS,
            registry=self.registry,
        )
        self._appends = Counter("saferoom_audit_appends", "audit records appended", registry=self.registry)
        self._fsync = Histogram(
            "saferoom_audit_fsync_seconds", "fsync of the audit log", buckets=_FSYNC_BUCKETS, registry=self.registry
        )
        self._request_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    # ------------------------------------------------------------------ feeding

    def gauge(self, name: str, documentation: str, labels: Sequence[str], rows: Rows) -> None:
        """A gauge read from ``rows`` at every scrape."""
        self._gauges.add(name, documentation, labels, rows)

    def request(self, method: str, code: str, seconds: float) -> None:
        """A gRPC call ended with status ``code`` (its name: OK, NOT_FOUND, ...)."""
        children = self._request_children.get((method, code))
        if children is None:  # methods and codes are both fixed sets: the cache stays small
            children = (self._requests.labels(method, code), self._request_seconds.labels(method))
            self._request_children[(method, code)] = children
        children[0].inc()
        children[1].observe(seconds)
        if code not in ("OK", "CANCELLED"):  # a client that hung up on its own stream was refused nothing
            self._refusals.labels(code).inc()

    def audit_written(self, records: int, fsync_seconds: float | None) -> None:
        """``records`` were appended to the audit log (and fsynced in ``fsync_seconds``, if they were)."""
        self._appends.inc(records)
        if fsync_seconds is not None:
            self._fsync.observe(fsync_seconds)

    def job_started(self, queued_seconds: float) -> JobTimer:
        """A job left the queue after ``queued_seconds``; mark its phases on the timer returned."""
        return JobTimer(self, queued_seconds)

    def observe_job(self, seconds: dict[str, float]) -> None:
        """One job's phases (from ``JobTimer``): the public ones always, the detailed ones only if enabled."""
        for phase in ("queue", "code"):
            if phase in seconds:
                self._phases.labels(phase).observe(seconds[phase])
        after = [seconds[p] for p in DETAIL_PHASES if p in seconds]
        if "padded" in seconds:  # published at its boundary (``JobTimer.published_at``)
            self._phases.labels("padded").observe(seconds["padded"])
        elif after:
            self._phases.labels("padded").observe(sum(after))
        if self.phase_detail:
            for phase in DETAIL_PHASES:
                if phase in seconds:
                    self._phases.labels(phase).observe(seconds[phase])

    # ------------------------------------------------------------------ helpers

    def capped(self, rows: Iterable[tuple[str, float]]) -> list[tuple[Sequence[str], float]]:
        """Rows labelled by identity, at most ``max_identities`` of them (the largest); the rest summed."""
        ordered = sorted(rows, key=lambda row: (-row[1], row[0]))
        kept: list[tuple[Sequence[str], float]] = [((name,), value) for name, value in ordered[: self.max_identities]]
        rest = sum(value for _, value in ordered[self.max_identities :])
        if len(ordered) > self.max_identities:
            kept.append(((OTHER,), rest))
        return kept

    def exposition(self) -> bytes:
        """The text Prometheus scrapes."""
        return generate_latest(self.registry)
