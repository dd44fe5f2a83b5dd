"""A running server and the catalog's dataset versions: their audit records, and collecting old ones.

The importer and ``saferoom datasets gc`` run offline, with no key to the audit log. The server writes their
records from the catalog directory's own state, once each (it asks the log first, so a restart writes nothing
twice):

* ``dataset_published`` for each imported version when it first serves it (at start-up or on picking it up);
* ``dataset_collected`` for each version ``versions.json`` marks collected, whoever collected it: at start-up,
  after its own collections, and whenever ``versions.json`` changes (looked at every ``catalog_poll_seconds``).

The server collects too (``saferoom.importer.retention``, keeping ``dataset_versions_kept`` earlier versions):
at start-up, once interrupted jobs are settled, and whenever a retired catalog version's engine pool has
closed after its last job. It does so on a thread of its own, never on a job's (a job's end is not delayed by
deleting files), and only when it may write the data directory: deploy/compose.yaml mounts it read-only, and
then ``saferoom datasets gc``, run by an operator, collects.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path

from saferoom.audit import AuditLog, EventType
from saferoom.audit.log import AuditFilter, Entry
from saferoom.catalog.manifest import Manifest
from saferoom.catalog.watch import file_stamp
from saferoom.importer.retention import Decision, collect
from saferoom.importer.versions import HISTORY_NAME, collected
from saferoom.jobs.state import UNFINISHED_STATES
from saferoom.store import JobStore

__all__ = ["VersionCollector", "record_published"]

_log = logging.getLogger(__name__)


def record_published(audit: AuditLog, manifest: Manifest, names: list[str]) -> None:
    """A ``dataset_published`` record for each imported version of ``names`` the log does not have yet.

    The importer runs offline (no key, no server): the server records a version when it first serves it, at
    start-up or when it picks the version up, once (idempotent: the log is asked first)."""
    versioned = {n: manifest.dataset(n) for n in names if manifest.dataset(n).version}
    if not versioned:
        return
    wanted = AuditFilter(events=frozenset({EventType.DATASET_PUBLISHED.value}))
    recorded = {(str(r.objects.get("dataset")), str(r.summary.get("version"))) for r in audit.read(wanted)}
    entries: list[Entry] = [
        (
            EventType.DATASET_PUBLISHED,
            "saferoom",
            "server",
            {"dataset": name, "datasets": [name]},
            {"version": info.version, "rows": info.rows, "declaration_hash": info.declaration_hash, "file": info.file},
        )
        for name, info in sorted(versioned.items())
        if (name, info.version) not in recorded
    ]
    if entries:
        audit.append_all(entries)


class VersionCollector:
    """Collects a running server's old dataset versions and records every collection in the audit log."""

    def __init__(self, data_dir: Path, jobs: JobStore, audit: AuditLog, keep: int, poll_seconds: float) -> None:
        self._data_dir = data_dir
        self._jobs = jobs
        self._audit = audit
        self._keep = keep
        self._poll = poll_seconds
        self._writable = os.access(data_dir, os.W_OK)
        if not self._writable:
            _log.info("the data directory is read-only here: old dataset versions wait for `saferoom datasets gc`")
        self._lock = threading.Lock()  # one collection or recording at a time
        self._recorded: set[tuple[str, str, str]] | None = None  # (dataset, version, collected_at) in the log
        self._seen: tuple[int, int, int] | None = None  # versions.json when last recorded from
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="version-collector", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Collect soon, on the collector's thread (a retired catalog version's pool closed)."""
        self._wake.set()

    def collect(self) -> list[Decision]:
        """Collect now (when the data directory is writable) and record every collection the log lacks."""
        with self._lock:
            decisions: list[Decision] = []
            if self._writable:
                in_use = functools.partial(self._jobs.versions_read, UNFINISHED_STATES)
                decisions = collect(self._data_dir, in_use, keep=self._keep, by="server")
                for d in decisions:
                    if d.collected:
                        _log.info("collected %s version %s (%s)", d.dataset, d.version[:16], d.reason.value)
            self._record()
            return decisions

    def record(self) -> None:
        """Record every collection ``versions.json`` marks that the log lacks (an operator's ``datasets gc``)."""
        with self._lock:
            self._record()

    def _stamp(self) -> tuple[int, int, int] | None:
        return file_stamp(self._data_dir / HISTORY_NAME)

    def _record(self) -> None:
        self._seen = self._stamp()
        if self._recorded is None:  # once: from then on this server is the log's only writer
            wanted = AuditFilter(events=frozenset({EventType.DATASET_COLLECTED.value}))
            self._recorded = {
                (str(r.objects.get("dataset")), str(r.summary.get("version")), str(r.summary.get("collected_at")))
                for r in self._audit.read(wanted)
            }
        entries: list[Entry] = []
        for v in collected(self._data_dir):
            key = (v.dataset, v.version, str(v.collected_at))
            if key in self._recorded:
                continue
            self._recorded.add(key)  # a version imported twice has two entries, one mark: one record
            summary = {
                "version": v.version,
                "file": v.file,
                "rows": v.rows,
                "collected_at": v.collected_at,
                "collected_by": v.collected_by,
                "reason": v.collected_reason,
            }
            entries.append(
                (
                    EventType.DATASET_COLLECTED,
                    "saferoom",
                    "server",
                    {"dataset": v.dataset, "datasets": [v.dataset]},
                    summary,
                )
            )
        if entries:
            try:
                self._audit.append_all(entries)
            except BaseException:
                self._recorded = None  # asked again next time: the log has what it has
                raise

    def _loop(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self._poll if self._poll > 0 else None)
            if self._stop.is_set():
                return
            try:
                if woken:
                    self._wake.clear()
                    self.collect()
                elif self._stamp() != self._seen:
                    self.record()
            except Exception:  # the collector must not die: the next request or poll tries again
                _log.exception("collecting old dataset versions failed")

    def close(self) -> None:
        """Stop the collector's thread, after a collection in progress (idempotent)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
