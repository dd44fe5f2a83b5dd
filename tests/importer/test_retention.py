"""Old dataset versions are collected once nothing refers to them, for real: files, leases, SQLite state, the CLI.

(The server's part, its leases, a SIGKILL and the audit records, is in tests/server/test_server_version_collection.py.)
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from saferoom.catalog import Catalog, Manifest
from saferoom.catalog.leases import Lease
from saferoom.cli.main import cli
from saferoom.importer import DEFAULT_KEEP, Collected, Kept, collect
from saferoom.importer.versions import HISTORY_NAME, history, now, publish, write_arrow
from saferoom.jobs.state import UNFINISHED_STATES, JobState
from saferoom.store import Database, JobStore
from saferoom.store.jobs import JobRecord
from tests.support import import_stops


def _no_jobs() -> dict[tuple[str, str], list[str]]:
    return {}


def _file(catalog: Path, version: str) -> Path:
    (entry,) = {v.file for v in history(catalog, "stops") if v.version == version}
    return catalog / entry


def test_an_unreferenced_old_version_is_deleted_with_its_statistics_and_marked(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    old, current = import_stops(tmp_path, catalog, 40), import_stops(tmp_path, catalog, 60)
    old_file = _file(catalog, old)
    sidecar = old_file.with_name(old_file.name + ".stats.json")
    assert old_file.exists() and sidecar.exists()

    decisions = collect(catalog, _no_jobs, keep=0)

    assert [(d.version, d.collected, d.reason) for d in decisions] == [
        (current, False, Kept.CURRENT),
        (old, True, Collected.UNREFERENCED),
    ]
    assert not old_file.exists() and not sidecar.exists()
    assert _file(catalog, current).exists()
    marked = {v.version: v for v in history(catalog, "stops")}
    assert marked[old].collected_at and marked[old].collected_by == "datasets gc"
    assert marked[old].collected_reason == "unreferenced"
    assert marked[current].collected_at is None
    with Catalog.open(catalog) as served:  # the current version still serves
        assert served.table("stops").num_rows == 60
    assert collect(catalog, _no_jobs, keep=0) == [decisions[0]]  # idempotent: nothing more to say or do


def test_a_spark_version_is_deleted_as_its_whole_parquet_directory(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    old, current = import_stops(tmp_path, catalog, 40, spark=True), import_stops(tmp_path, catalog, 60, spark=True)
    old_dir = _file(catalog, old)
    assert old_dir.is_dir() and any(old_dir.rglob("*.parquet"))

    decisions = collect(catalog, _no_jobs, keep=0)

    assert [(d.collected, d.reason) for d in decisions] == [(False, Kept.CURRENT), (True, Collected.UNREFERENCED)]
    assert not old_dir.exists()
    assert _file(catalog, current).is_dir()
    assert sorted(p.name for p in (catalog / "parquet").iterdir()) == [_file(catalog, current).name]  # no leftovers


def test_the_current_version_is_never_deleted(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    version = import_stops(tmp_path, catalog, 40)
    for _ in range(2):
        (only,) = collect(catalog, _no_jobs, keep=0)
        assert (only.version, only.collected, only.reason) == (version, False, Kept.CURRENT)
    assert _file(catalog, version).exists()


def test_keep_n_keeps_the_newest_earlier_versions(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    v1, v2, v3, v4 = (import_stops(tmp_path, catalog, rows) for rows in (10, 20, 30, 40))
    result = CliRunner().invoke(
        cli, ["datasets", "gc", "--catalog", str(catalog), "--state", str(_state(tmp_path)), "--keep", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["keep"] == 2 and not report["dry_run"]
    assert [(v["version"], v["collected"], v["reason"]) for v in report["versions"]] == [
        (v4, False, "current"),
        (v3, False, "recent"),
        (v2, False, "recent"),
        (v1, True, "unreferenced"),
    ]
    assert [_file(catalog, v).exists() for v in (v1, v2, v3, v4)] == [False, True, True, True]


def test_the_command_keeps_one_earlier_version_by_default() -> None:
    gc = cli.commands["datasets"].commands["gc"]  # type: ignore[attr-defined]
    (keep,) = [p for p in gc.params if p.name == "keep"]
    assert keep.default == DEFAULT_KEEP == 1


def test_a_dry_run_deletes_and_marks_nothing(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    old, current = import_stops(tmp_path, catalog, 40), import_stops(tmp_path, catalog, 60)
    before = sorted(p.name for p in catalog.iterdir())
    history_before = (catalog / HISTORY_NAME).read_bytes()
    args = ["datasets", "gc", "--catalog", str(catalog), "--state", str(_state(tmp_path)), "--keep", "0"]

    result = CliRunner().invoke(cli, [*args, "--dry-run"])

    assert result.exit_code == 0, result.output
    assert f"would delete  stops {old[:16]}" in result.output and "nothing refers to it" in result.output
    assert f"kept          stops {current[:16]}" in result.output and "the current version" in result.output
    assert sorted(p.name for p in catalog.iterdir()) == before
    assert (catalog / HISTORY_NAME).read_bytes() == history_before

    result = CliRunner().invoke(cli, args)  # and for real
    assert result.exit_code == 0, result.output
    assert f"deleted       stops {old[:16]}" in result.output and "deleted 1 version, kept 1" in result.output
    shown = CliRunner().invoke(cli, ["datasets", "history", "stops", "--catalog", str(catalog)])
    assert f"- {old[:16]}" in shown.output and "[collected " in shown.output  # history keeps showing it
    assert f"* {current[:16]}" in shown.output
    listed = json.loads(
        CliRunner().invoke(cli, ["datasets", "history", "stops", "--catalog", str(catalog), "--json"]).output
    )
    assert [(v["version"], bool(v["collected_at"]), v["current"]) for v in listed] == [
        (old, True, False),
        (current, False, True),
    ]


def _state(tmp_path: Path) -> Path:
    """A server's state directory with its (empty) database."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    Database.open(state / "saferoom.db").close()
    return state


def _job(store: JobStore, job_id: str, versions: dict[str, str]) -> None:
    t = 1_700_000_000.0
    store.insert_job(
        JobRecord(
            job_id,
            "alice",
            "ab" * 32,
            "count-stops",
            "1.0.0",
            "{}",
            '["stops"]',
            "queued",
            None,
            None,
            t,
            None,
            None,
            t,
        )
    )
    store.record_versions(job_id, versions)


def test_a_version_an_unfinished_job_read_is_kept_until_the_job_ends(tmp_path: Path) -> None:
    catalog, state = tmp_path / "catalog", _state(tmp_path)
    old = import_stops(tmp_path, catalog, 40)
    database = Database.open(state / "saferoom.db")
    try:
        store = JobStore(database)
        _job(store, "job-running", {"stops": old})
        import_stops(tmp_path, catalog, 60)
        args = ["datasets", "gc", "--catalog", str(catalog), "--state", str(state), "--keep", "0", "--json"]
        unfinished = [s for s in JobState if s in UNFINISHED_STATES]
        assert unfinished == [JobState.QUEUED, JobState.RUNNING, JobState.RELEASING, JobState.AWAITING_CHECK]
        for state_now in unfinished:
            assert store.update_state("job-running", state_now.value, expected=[s.value for s in JobState])
            report = json.loads(CliRunner().invoke(cli, args).output)
            (kept,) = [v for v in report["versions"] if v["version"] == old]
            assert (kept["collected"], kept["reason"], kept["jobs"]) == (False, "job", ["job-running"]), state_now
            assert "read by unfinished jobs job-runn" in kept["why"]
            assert _file(catalog, old).exists()
        assert store.update_state("job-running", JobState.REJECTED.value, expected=[JobState.AWAITING_CHECK.value])
        report = json.loads(CliRunner().invoke(cli, args).output)
        assert [(v["version"], v["collected"]) for v in report["versions"] if v["version"] == old] == [(old, True)]
        assert not _file(catalog, old).exists()
    finally:
        database.close()


def test_a_leased_version_is_kept_until_its_lease_goes(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    old = import_stops(tmp_path, catalog, 40)
    mapped = Catalog.open(catalog)  # maps the version: holds its lease
    import_stops(tmp_path, catalog, 60)
    assert [d.reason for d in collect(catalog, _no_jobs, keep=0) if d.version == old] == [Kept.HELD]
    assert mapped.table("stops").num_rows == 40
    mapped.close()
    assert [d.reason for d in collect(catalog, _no_jobs, keep=0) if d.version == old] == [Collected.UNREFERENCED]


def test_an_import_of_a_collectable_versions_content_during_a_collection_loses_nothing(tmp_path: Path) -> None:
    """The importer's own steps, in its order, with a collection in the worst place: after the importer wrote the
    content of an old version (so found that version's file under its name), before it published. Importing an
    old version's content again is how an owner rolls back."""
    catalog = tmp_path / "catalog"
    old = import_stops(tmp_path, catalog, 40)
    import_stops(tmp_path, catalog, 60)
    with pa.OSFile(str(_file(catalog, old)), "rb") as f:
        table = pa.ipc.open_file(f).read_all()
    entry = next(v for v in history(catalog, "stops") if v.version == old)
    with Lease() as lease:
        name, digest = write_arrow(catalog, "stops", table.schema, iter(table.to_batches()), lease)
        assert (digest, name) == (old, entry.file)
        assert [d.reason for d in collect(catalog, _no_jobs, keep=0) if d.version == old] == [Kept.HELD]
        info = replace(Manifest.load(catalog).dataset("stops"), file=name, rows=40, version=old)
        publish(catalog, info, replace(entry, imported_at=now()))
    assert [d.reason for d in collect(catalog, _no_jobs, keep=0) if d.version == old] == [Kept.CURRENT]
    with Catalog.open(catalog) as served:
        assert served.table("stops").num_rows == 40
        assert served.statistics("stops")


@pytest.mark.slow
def test_imports_racing_collections_lose_nothing(tmp_path: Path) -> None:
    """Two importers, each importing its own content over and over (so each finds its file under its name while
    the other's publication has just made it an old version), while collections keep running: every import
    publishes a version that is whole on disk, and so is every version not collected."""
    catalog = tmp_path / "catalog"
    for rows in (40, 60):  # both files written once, so that the importers' first runs do not race on it
        (tmp_path / str(rows)).mkdir()
        import_stops(tmp_path / str(rows), catalog, rows)
    stop = threading.Event()
    failures: list[BaseException] = []
    collected: list[str] = []

    def collecting() -> None:
        while not stop.is_set():
            collected.extend(d.version for d in collect(catalog, _no_jobs, keep=0) if d.collected)

    def importing(rows: int) -> None:
        for _ in range(15):
            import_stops(tmp_path / str(rows), catalog, rows)
            with Catalog.open(catalog) as served:  # whatever is current now is whole
                served.table("stops")

    def reported(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported below
                failures.append(exc)

        return run

    collector = threading.Thread(target=reported(collecting))
    importers = [threading.Thread(target=reported(functools.partial(importing, rows))) for rows in (40, 60)]
    collector.start()
    for t in importers:
        t.start()
    for t in importers:
        t.join(120)
    stop.set()
    collector.join(60)
    assert not failures, failures
    assert len(collected) >= 3  # the collections did delete versions that were imported again later
    live = {v.file for v in history(catalog, "stops") if not v.collected_at}
    assert live and all((catalog / f).exists() and (catalog / f"{f}.stats.json").exists() for f in live)
    with Catalog.open(catalog) as served:
        assert served.table("stops").num_rows in (40, 60)
        assert served.statistics("stops")  # its statistics were not deleted under it
