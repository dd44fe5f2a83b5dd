"""Which engine runs a plan, and the Spark executor that lives in the server process.

A plan runs where its data is. Plans that read only Arrow datasets (or only released ``Input`` tables) run in
the sandboxed engine workers as always. A plan that reads any dataset declared ``engine = "spark"`` runs on the
Spark cluster, through the server's Spark Connect session (the engine workers have no network, by design).

Mixed plans: a plan that reads Spark datasets may also read Arrow datasets only if they are public and small
(at most ``MAX_SHIPPED_ROWS`` rows, as the catalog declares): those are sent to the cluster inside the plan, as a
local relation. A plan that combines a Spark dataset with a personal Arrow dataset is refused before anything
runs: personal rows never travel between the engines.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from saferoom.catalog.catalog import schema_of
from saferoom.catalog.manifest import Manifest
from saferoom.engine import plan
from saferoom.errors import InvalidPlan, InvalidRequest, JobCancelled, JobTimeout, Unavailable

if TYPE_CHECKING:
    from pyspark.sql.connect.session import SparkSession

__all__ = ["MAX_SHIPPED_ROWS", "SparkExecutor", "engine_of", "spark_executor"]

MAX_SHIPPED_ROWS = 1_000_000

Results = dict[str, tuple[pa.Table, dict[str, int]]]


def engine_of(node: plan.Node, manifest: Manifest) -> str:
    """``"spark"`` if the plan reads a Spark dataset, else ``"arrow"``; InvalidPlan for a plan that would mix a
    Spark dataset with a personal (or large) Arrow dataset."""
    datasets = {n.dataset for n in plan.walk(node) if isinstance(n, plan.Scan)}
    infos = [manifest.dataset(d) for d in sorted(datasets)]
    spark = [i.name for i in infos if i.engine == "spark"]
    if not spark:
        return "arrow"
    for info in infos:
        if info.engine == "arrow" and (not info.is_public or info.rows > MAX_SHIPPED_ROWS):
            what = "personal" if not info.is_public else f"larger than {MAX_SHIPPED_ROWS:,} rows"
            raise InvalidPlan(
                f"{info.name} ({what}, on the Arrow engine) cannot be combined with {', '.join(spark)} (on the "
                "Spark cluster) in one table: only small public datasets are sent to the cluster. Aggregate each "
                "side on its own and return them separately"
            )
    return "spark"


def spark_executor(url: str, manifest: Manifest, data_dir: Path) -> SparkExecutor | None:
    """The executor for the configured endpoint; None without one. A catalog with Spark datasets needs one."""
    spark = sorted(n for n, i in manifest.datasets.items() if i.engine == "spark")
    if not url:
        if spark:
            names = ", ".join(spark)
            raise InvalidRequest(f"the catalog has datasets on the Spark engine ({names}): set spark_connect")
        return None
    return SparkExecutor(url, manifest, data_dir)


class SparkExecutor:
    """Executes plans that read Spark datasets on the cluster behind ``url`` (a Spark Connect endpoint).

    The session is opened on first use (the server starts while the cluster is down) and reopened after the
    cluster was unreachable. Only relational plans and small public/released tables are sent; only the plans'
    results (aggregates, by the time the release step has rewritten them) and Threshold counts come back.
    """

    def __init__(self, url: str, manifest: Manifest, data_dir: Path | None = None) -> None:
        self._url = url
        self._manifest = manifest
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self._session: SparkSession | None = None
        self._shipped: dict[str, pa.Table] = {}
        self._locations = {n: i.location for n, i in manifest.datasets.items() if i.location is not None}

    def _open(self) -> SparkSession:
        from saferoom.engine.spark import connect

        with self._lock:
            if self._session is None:
                self._session = connect(self._url)
            return self._session

    def _local(self, name: str) -> pa.Table:
        """A small public Arrow dataset, mapped from the data directory, to be sent along with a plan (only those:
        the server process maps no personal dataset)."""
        info = self._manifest.dataset(name)
        if info.engine != "arrow" or not info.is_public or info.rows > MAX_SHIPPED_ROWS or self._data_dir is None:
            raise InvalidPlan(f"dataset {name!r} is not available to the Spark engine")
        with self._lock:
            if name not in self._shipped:
                table = pa.ipc.open_file(pa.memory_map(str(self._data_dir / info.file), "r")).read_all()
                if not table.schema.equals(schema_of(info)):
                    raise InvalidPlan(f"dataset {name!r}: its file does not match the catalog")
                self._shipped[name] = table
            return self._shipped[name]

    def execute(
        self,
        work: list[tuple[str, plan.Node]],
        inputs: dict[str, pa.Table],
        cancel: threading.Event | None = None,
        wall_seconds: float | None = None,
    ) -> Results:
        """Execute ``(name, plan)`` pairs; JobTimeout after ``wall_seconds``, JobCancelled when ``cancel`` is set."""
        from saferoom.engine.spark import SparkEngine

        if not work:
            return {}
        session = self._open()
        engine = SparkEngine(session, self._manifest, self._locations, inputs, self._local)
        nodes = plan.share_subtrees(dict(work))
        tag = f"saferoom-{uuid.uuid4().hex}"
        watch = _Watch(session, tag, cancel, wall_seconds)
        session.addTag(tag)
        try:
            executions = engine.execute_all(list(nodes.values()))
        except Unavailable:
            with self._lock:
                self._session = None  # reconnect next time
            raise
        except InvalidPlan:
            watch.raise_if_stopped()
            raise
        finally:
            session.removeTag(tag)
            watch.done()
        return {name: (e.table, dict(e.dropped)) for name, e in zip(nodes, executions, strict=True)}

    def close(self) -> None:
        """Forget the session (the cluster's resources for it expire with it; idempotent)."""
        with self._lock:
            session, self._session = self._session, None
            self._shipped = {}
        if session is not None:
            with contextlib.suppress(Exception):
                session.stop()


class _Watch:
    """Interrupts the operations tagged ``tag`` when the job is cancelled or runs out of wall-clock time."""

    def __init__(
        self, session: SparkSession, tag: str, cancel: threading.Event | None, wall_seconds: float | None
    ) -> None:
        self._finished = threading.Event()
        self.reason: str | None = None
        self._thread: threading.Thread | None = None
        if cancel is None and wall_seconds is None:
            return

        def run() -> None:
            waited = 0.0
            while not self._finished.wait(0.2):
                waited += 0.2
                if cancel is not None and cancel.is_set():
                    self.reason = "cancelled"
                elif wall_seconds is not None and waited >= wall_seconds:
                    self.reason = "timeout"
                if self.reason is not None:
                    _quietly(lambda: session.interruptTag(tag))
                    return

        self._thread = threading.Thread(target=run, name="spark-watch", daemon=True)
        self._thread.start()

    def raise_if_stopped(self) -> None:
        if self.reason == "cancelled":
            raise JobCancelled("the job was cancelled")
        if self.reason == "timeout":
            raise JobTimeout("the job ran out of wall-clock time on the Spark cluster")

    def done(self) -> None:
        self._finished.set()
        if self._thread is not None:
            self._thread.join()


def _quietly(call: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        call()
