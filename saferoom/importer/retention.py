"""Which dataset versions a catalog directory keeps, and deleting the others (``saferoom datasets gc``, and the
server itself when a retired version's engine pool closes and at start-up).

A version (its Arrow file and statistics sidecar, or its ``parquet/NAME-<hash>`` directory) is deleted only when
all of these hold:

1. it is not the current version of its dataset (``catalog.json``);
2. it is not one of the ``keep`` newest other versions of its dataset (kept for rollback; ``DEFAULT_KEEP``);
3. no job that has not reached a final state lists it in its recorded dataset versions: running, releasing,
   held for an output checker, or queued again after a restart (the caller passes these references, read from
   the state database: ``JobStore.versions_read``);
4. no process holds a lease on it (``saferoom.catalog.leases``): no server serves or maps it, no import is
   publishing it. A process that died holds nothing, so a crashed server keeps nothing forever.

Mock data publications are no reference: a publication stores DP measurements (never rows) in the state database,
downloads sample from them without reading the file, and a publication measured on another version than the
current one does not match its dataset's hash and is not served (``saferoom.mock.service``).

Everything happens under the catalog lock, so no import publishes while a collection decides and deletes. A
collected version stays in ``versions.json``, marked ``collected_at`` (with who collected it and why), so that
``history`` and every job's recorded versions still name it; the server writes one ``dataset_collected`` audit
record for each mark (``saferoom.server.versions``), whoever collected. Running again is harmless: a version whose
file is already gone (deleted by a run that crashed before it marked it) is marked, and its leftovers removed.
A Parquet directory is renamed away before it is emptied, so that its name never shows a half-deleted version.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from saferoom.catalog import statistics
from saferoom.catalog.leases import Claim, claimed, version_path
from saferoom.catalog.manifest import MANIFEST_NAME, Manifest
from saferoom.importer import versions

__all__ = ["DEFAULT_KEEP", "Collected", "Decision", "Kept", "References", "collect"]

# One earlier version per dataset stays by default: an import that turns out wrong can be undone from a file
# still there (re-import it), at the cost of one version's disk space per dataset.
DEFAULT_KEEP = 1

References = Mapping[tuple[str, str], Sequence[str]]  # (dataset, version) -> the unfinished jobs that read it


class Kept(enum.StrEnum):
    """Why a version stays."""

    CURRENT = "current"  # the catalog points at it
    RECENT = "recent"  # one of the `keep` newest others of its dataset, for rollback
    JOB = "job"  # a job not finished read it
    HELD = "held"  # a process holds a lease on it: a server serves or maps it, or an import is publishing it


class Collected(enum.StrEnum):
    """Why a version went."""

    UNREFERENCED = "unreferenced"  # nothing above holds
    MISSING = "missing"  # its file was gone already (a collection that crashed before marking it, or by hand)


@dataclass(frozen=True)
class Decision:
    """What a collection did with one version (a dry run: would do)."""

    dataset: str
    version: str
    file: str
    collected: bool
    reason: Kept | Collected
    jobs: tuple[str, ...] = ()  # the jobs that keep it (Kept.JOB)

    def describe(self, keep: int) -> str:
        """Why, in words."""
        return {
            Kept.CURRENT: "the current version",
            Kept.RECENT: f"kept for rollback (--keep {keep}: the newest earlier version{'s' if keep != 1 else ''})",
            Kept.JOB: f"read by unfinished jobs {', '.join(j[:8] for j in self.jobs)}",
            Kept.HELD: "held by a running process (a server serving it, or an import publishing it)",
            Collected.UNREFERENCED: "nothing refers to it",
            Collected.MISSING: "its file was already gone",
        }[self.reason]


def collect(
    directory: Path,
    references: Callable[[], References],
    *,
    keep: int = DEFAULT_KEEP,
    dry_run: bool = False,
    by: str = "datasets gc",
) -> list[Decision]:
    """Delete every version of ``directory`` that nothing refers to (see the module docstring), mark it in
    ``versions.json``, and say what happened to each version not collected before; ``dry_run`` deletes and marks
    nothing. ``by`` names the collector in the marks ("server" or "datasets gc").

    ``references`` reads the unfinished jobs' versions. It is called once every candidate is claimed: a job
    records the versions it reads while its server holds their lease, so a version claimed here gains no job
    afterwards, and a reading taken earlier could miss a job that started, and was held, meanwhile."""
    if keep < 0:
        raise ValueError("keep must be 0 or more")
    decisions: list[Decision] = []
    with versions.locked(directory), contextlib.ExitStack() as claims:
        current = _current(directory)
        entries = versions.read_entries(directory)
        candidates: list[tuple[int, list[dict[str, Any]], list[int], Claim]] = []
        for dataset, listed in sorted(entries.items()):
            rank = 0
            for file, indices in _live_files(listed):
                version = str(listed[indices[-1]]["version"])
                kept = _kept(dataset, version, file, current, rank < keep)
                if kept is not Kept.CURRENT:
                    rank += 1
                if kept is not None:
                    decisions.append(Decision(dataset, version, file, False, kept))
                    continue
                claim = claims.enter_context(claimed(directory / file))
                decisions.append(Decision(dataset, version, file, False, Kept.HELD))  # a candidate: decided below
                if claim is not Claim.HELD:
                    candidates.append((len(decisions) - 1, listed, indices, claim))
        in_use = references() if candidates else {}
        when = versions.now()
        try:
            for position, listed, indices, claim in candidates:
                d = decisions[position]
                jobs = tuple(sorted(in_use.get((d.dataset, d.version), ())))
                if jobs:
                    decisions[position] = replace(d, reason=Kept.JOB, jobs=jobs)
                    continue
                reason = Collected.MISSING if claim is Claim.GONE else Collected.UNREFERENCED
                decisions[position] = replace(d, collected=True, reason=reason)
                if not dry_run:
                    _delete(directory / d.file, claim)
                    mark = {"collected_at": when, "collected_by": by, "collected_reason": reason.value}
                    for i in indices:
                        listed[i] |= mark
        finally:  # what was deleted is marked, even when deleting the next one failed
            if not dry_run and any(d.collected for d in decisions):
                versions.write_entries(directory, entries)
    return decisions


def _current(directory: Path) -> tuple[dict[str, str], set[str]]:
    """Each dataset's current version, and every file the catalog points at (whatever its dataset)."""
    if not (directory / MANIFEST_NAME).exists():
        return {}, set()
    manifest = Manifest.load(directory)
    hashes = {name: info.version for name, info in manifest.datasets.items() if info.version}
    files = {info.file for info in manifest.datasets.values()}
    files |= {p for info in manifest.datasets.values() if (p := version_path(info)) is not None}
    return hashes, files


def _live_files(listed: list[dict[str, Any]]) -> Iterator[tuple[str, list[int]]]:
    """Each file of a dataset's history that is not collected, newest import first, with its entries' indices (the
    same content imported again after it was collected is a live file again)."""
    by_file: dict[str, list[int]] = {}
    for i, entry in enumerate(listed):
        if not entry.get("collected_at"):
            by_file.setdefault(str(entry["file"]), []).append(i)
    yield from sorted(by_file.items(), key=lambda item: item[1][-1], reverse=True)


def _kept(dataset: str, version: str, file: str, current: tuple[dict[str, str], set[str]], recent: bool) -> Kept | None:
    """Why the catalog itself keeps a version (None: it may go, unless a process or a job holds it)."""
    hashes, files = current
    if hashes.get(dataset) == version or file in files:
        return Kept.CURRENT
    return Kept.RECENT if recent else None


def _delete(path: Path, claim: Claim) -> None:
    """Delete a claimed version (or, gone, what a crashed collection left of it)."""
    tombstone = path.with_name(f".{path.name}.collecting")
    if claim is Claim.CLAIMED and path.is_dir():
        os.rename(path, tombstone)  # the version's name goes at once, whole; then its files
    elif claim is Claim.CLAIMED:
        os.unlink(path)
    shutil.rmtree(tombstone, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path.with_name(statistics.sidecar(path.name)))
    versions.fsync_dir(path.parent)
