"""Noticing new dataset versions while serving: the catalog pointer (catalog.json) is watched for a switch.

``saferoom datasets import`` replaces catalog.json atomically, so a reader sees the old manifest or the new one.
A running server may take a new manifest only when nothing but versions changed (the file, row count, content
hash and declaration hash of existing Arrow datasets): its packages, approvals and budgets were checked against
the names, columns and policies, which therefore stay. Anything else waits for a restart (logged).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from saferoom.catalog.manifest import MANIFEST_NAME, DatasetInfo, Manifest
from saferoom.errors import SaferoomError

__all__ = ["CatalogWatcher", "changed_versions", "file_stamp"]

_log = logging.getLogger(__name__)

NewVersions = Callable[[Manifest, list[str]], None]


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten (inode, modification time, size); None if it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _versionless(info: DatasetInfo) -> DatasetInfo:
    # A Spark dataset's location names its version's Parquet directory: a new version, not a new declaration.
    location = None if info.location is None else "/version"
    return replace(info, file="", rows=0, version=None, declaration_hash=None, location=location)


def _version(info: DatasetInfo) -> tuple[str | None, str, int, str | None]:
    return info.version, info.file, info.rows, info.location


def changed_versions(old: Manifest, new: Manifest) -> list[str]:
    """The datasets whose version differs in ``new``; raises ValueError if anything but versions changed."""
    if set(old.datasets) != set(new.datasets):
        raise ValueError("datasets were added or removed")
    changed = []
    for name, before in old.datasets.items():
        after = new.datasets[name]
        if _versionless(before) != _versionless(after):
            raise ValueError(f"the declaration of {name!r} changed (columns, bounds or policy)")
        if _version(before) != _version(after):
            if after.engine != "arrow":
                raise ValueError(f"{name!r} is on the Spark engine")
            changed.append(name)
    return changed


class CatalogWatcher:
    """Polls a catalog directory's pointer; calls ``on_new`` with each new manifest whose versions changed."""

    def __init__(self, directory: Path, current: Manifest, on_new: NewVersions, poll_seconds: float = 2.0) -> None:
        self._directory = directory
        self._current = current
        self._on_new = on_new
        self._poll = poll_seconds
        self._seen = self._stamp()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if poll_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="catalog-watch", daemon=True)
            self._thread.start()

    def _stamp(self) -> tuple[int, int, int] | None:
        return file_stamp(self._directory / MANIFEST_NAME)

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.check()
            except Exception:  # the watcher must not die: the next poll tries again
                _log.exception("checking the catalog for new versions failed")

    def check(self) -> list[str]:
        """Look once; returns the datasets switched to a new version (empty: nothing new, or refused)."""
        with self._lock:
            stamp = self._stamp()
            if stamp == self._seen or stamp is None:
                return []
            self._seen = stamp
            try:
                new = Manifest.load(self._directory)
                changed = changed_versions(self._current, new)
            except (SaferoomError, ValueError, OSError) as exc:
                _log.warning("the catalog changed in a way a running server cannot take (restart it): %s", exc)
                return []
            if changed:
                self._on_new(new, changed)
            self._current = new
            return changed

    def close(self) -> None:
        """Stop polling (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
