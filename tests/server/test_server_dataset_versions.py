"""A running server picks up a new dataset version without a restart; a job already running finishes on the old."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from saferoom.audit.log import AuditFilter
from saferoom.catalog import Manifest
from saferoom.catalog.watch import CatalogWatcher, changed_versions
from saferoom.importer import import_dataset
from saferoom.packages import load_package
from saferoom.server import create_server
from tests.support import STOPS_DECLARATION, Deployment, approve_all, import_stops, server_config

PACKAGE = {
    "saferoom.toml": 'name = "count-stops"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["stops"]\n',
    "main.py": (
        'def run(ctx):\n    return {"n": ctx.table("stops").group_by("district").agg(n=count()).sort("district")}\n'
    ),
}


def _import(tmp_path: Path, catalog: Path, rows: int) -> str:
    return import_stops(tmp_path, catalog, rows)


@pytest.mark.slow
def test_a_new_version_is_served_while_a_running_job_finishes_on_the_old(
    tmp_path: Path, deployment: Deployment
) -> None:
    catalog = tmp_path / "catalog"
    first = _import(tmp_path, catalog, 40)
    package_dir = tmp_path / "count_stops"
    package_dir.mkdir()
    for name, text in PACKAGE.items():
        (package_dir / name).write_text(text)
    package = load_package(package_dir)
    srv, port = create_server(server_config(catalog, tmp_path / "state", deployment.pki, catalog_poll_seconds=0.2))
    try:
        assert srv.watcher is not None
        in_engine_phase, go_on = threading.Event(), threading.Event()
        results: dict[str, object] = {}

        def blocked() -> None:
            in_engine_phase.set()
            assert go_on.wait(60)

        def old_job() -> None:
            results["old"] = srv.pipeline.run(package, {}, before_engine=blocked)

        runner = threading.Thread(target=old_job)
        runner.start()
        assert in_engine_phase.wait(60)
        second = _import(tmp_path, catalog, 100)  # published while the old job waits for the engine
        assert srv.watcher.check() == ["stops"] or srv.pipeline.manifest.dataset("stops").version == second
        assert srv.pipeline.manifest.dataset("stops").version == second
        new = srv.pipeline.run(package, {})  # a new job: the new version, in a new engine pool
        go_on.set()
        runner.join(60)
        old = results["old"]
        counts = {o.name: o.table.column("n").to_pylist() for o in old.outputs}  # type: ignore[attr-defined]
        assert counts == {"n": [20, 20]}  # the 40 rows it started on, though 100 were published meanwhile
        assert old.versions == {"stops": first}  # type: ignore[attr-defined]
        assert new.outputs[0].table is not None and new.outputs[0].table.column("n").to_pylist() == [50, 50]
        assert new.versions == {"stops": second}
        with deployment.client("alice", port) as alice:
            assert alice.describe_dataset("stops").rows == 100  # what researchers see followed too
        published = list(srv.audit.read(AuditFilter(events=frozenset({"dataset_published"}))))
        assert [(r.objects["dataset"], r.summary["version"], r.summary["rows"]) for r in published] == [
            ("stops", first, 40),
            ("stops", second, 100),
        ]
        assert published[1].summary["declaration_hash"] == Manifest.load(catalog).dataset("stops").declaration_hash
    finally:
        srv.stop(1.0)
    # Restarting records nothing twice (the log is asked first).
    srv, _ = create_server(server_config(catalog, tmp_path / "state", deployment.pki))
    try:
        again = list(srv.audit.read(AuditFilter(events=frozenset({"dataset_published"}))))
        assert len(again) == 2
    finally:
        srv.stop(1.0)


def test_a_changed_declaration_waits_for_a_restart(tmp_path: Path, deployment: Deployment) -> None:
    catalog = tmp_path / "catalog"
    first = _import(tmp_path, catalog, 40)
    srv, _ = create_server(server_config(catalog, tmp_path / "state", deployment.pki, catalog_poll_seconds=0))
    try:
        assert srv.watcher is not None
        source = tmp_path / "stops-40.csv"
        wider = STOPS_DECLARATION.format(engine="").replace('"Huli", "Siming"', '"Huli", "Siming", "Jimei"')
        (tmp_path / "wider.toml").write_text(wider)
        import_dataset(str(source), tmp_path / "wider.toml", catalog)
        assert srv.watcher.check() == []  # the categories changed: approvals were checked against the old ones
        assert srv.pipeline.manifest.dataset("stops").version == first
    finally:
        srv.stop(1.0)


def test_a_job_records_the_versions_it_read(tmp_path: Path, deployment: Deployment) -> None:
    catalog = tmp_path / "catalog"
    version = _import(tmp_path, catalog, 40)
    packages = tmp_path / "packages"
    (packages / "count_stops").mkdir(parents=True)
    for name, text in PACKAGE.items():
        (packages / "count_stops" / name).write_text(text)
    srv, port = create_server(server_config(catalog, tmp_path / "state", deployment.pki, catalog_poll_seconds=0))
    try:
        approve_all(deployment, port, packages)
        with deployment.client("alice", port) as alice:
            job = alice.wait(alice.run_job("count-stops", {}).id)
            assert job.state == "succeeded"
            assert alice.get_job(job.id).dataset_versions == {"stops": version}
    finally:
        srv.stop(1.0)


def test_a_new_version_of_a_spark_dataset_waits_for_a_restart(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    source = tmp_path / "stops.csv"
    source.write_text("stop_id,district\n1,Huli\n2,Siming\n")
    (tmp_path / "stops.toml").write_text(STOPS_DECLARATION.format(engine='engine = "spark"'))
    import_dataset(str(source), tmp_path / "stops.toml", catalog)
    started_on = Manifest.load(catalog)
    switched: list[list[str]] = []
    watcher = CatalogWatcher(catalog, started_on, lambda _, names: switched.append(names), poll_seconds=0)
    source.write_text("stop_id,district\n1,Huli\n2,Siming\n3,Huli\n")
    import_dataset(str(source), tmp_path / "stops.toml", catalog)
    assert Manifest.load(catalog).dataset("stops").location != started_on.dataset("stops").location
    assert watcher.check() == [] and switched == []  # the running server keeps the Parquet it started with
    with pytest.raises(ValueError, match="on the Spark engine"):
        changed_versions(started_on, Manifest.load(catalog))
