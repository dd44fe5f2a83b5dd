"""Red team, output channel, on the default (differentially private) city, through the real server: attacks
that exact rules alone cannot stop, and attempts to spend more privacy than was granted."""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow.compute as pc
import pytest

from saferoom.catalog import Catalog
from saferoom.errors import SaferoomError
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

VICTIM = 4242

ATTACKS = {
    "by-person": ('{"x": ctx.table("population").group_by("person_id").agg(n=count())}', 0.5),
    "district-total": (
        '{"x": ctx.table("population").filter(col("district") == district).agg(total=sum("income"))}',
        0.5,
    ),
    "district-but-one": (
        '{"x": ctx.table("population").filter((col("district") == district) & (col("person_id") != victim))'
        '.agg(total=sum("income"))}',
        0.5,
    ),
    "count-siming": ('{"x": ctx.table("population").filter(col("district") == "Siming").agg(n=count())}', 0.25),
    # A thousand statistics in one run still spend exactly what the manifest declares.
    "many-statistics": (
        '{"x": ctx.table("population").group_by("district").agg(**{"m" + str(i): mean("age") for i in range(40)})}',
        0.1,
    ),
}


def _write(root: Path, name: str, body: str, epsilon: float) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "saferoom.toml").write_text(
        textwrap.dedent(
            f"""\
            name = "{name}"
            version = "1.0.0"
            entrypoint = "main.py:run"
            datasets = ["population"]
            [parameters]
            district = {{ type = "str", default = "Siming" }}
            victim = {{ type = "int", default = {VICTIM} }}
            [privacy]
            epsilon = {{ population = {epsilon} }}
            """
        )
    )
    (directory / "main.py").write_text(f"def run(ctx, district='Siming', victim={VICTIM}):\n    return {body}\n")
    return directory


@pytest.fixture(scope="module")
def dp_server(
    dp_catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, dict[str, str]]]:
    root = tmp_path_factory.mktemp("dp-attacks")
    srv, port = create_server(server_config(dp_catalog_dir, tmp_path_factory.mktemp("dp-state"), deployment.pki))
    hashes = {}
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            for name, (body, epsilon) in ATTACKS.items():
                summary, _ = alice.submit_package(_write(root, name, body, epsilon))
                olga.approve_package(summary.hash, days=1)
                hashes[name] = summary.hash
            olga.set_budget("alice", "population", epsilon=8.0, delta=1e-5)
        yield srv, hashes
    finally:
        srv.stop(1.0)


def _released(client, package: str):  # type: ignore[no-untyped-def]
    job = client.run_job(package)
    final = client.wait(job.id, timeout=60)
    assert final.state == "succeeded", final.error_message
    return client.get_result(job.id).output("x")


def test_group_by_person_releases_no_cell(dp_server, deployment: Deployment) -> None:
    srv, hashes = dp_server
    with deployment.client("alice", srv.port) as alice:
        out = _released(alice, hashes["by-person"])
    assert out.table is not None and out.table.num_rows == 0


def test_differencing_across_two_jobs_recovers_nothing(dp_server, deployment: Deployment, dp_catalog_dir) -> None:
    srv, hashes = dp_server
    with Catalog.open(dp_catalog_dir) as catalog:
        people = catalog.table("population")
        income = people.filter(pc.equal(people["person_id"], VICTIM))["income"][0].as_py()
    errors = []
    with deployment.client("alice", srv.port) as alice:
        for _ in range(3):
            everyone = _released(alice, hashes["district-total"])
            but_one = _released(alice, hashes["district-but-one"])
            difference = everyone.table["total"][0].as_py() - but_one.table["total"][0].as_py()
            errors.append(abs(difference - income))
    # Each total carries Laplace noise of scale 5,000,000 / 0.5 (an income is at most 5 million yuan).
    assert statistics.median(errors) > 100_000
    rule = everyone.report["rules"][0]
    assert rule["rule"] == "differential_privacy"
    assert [n["scale"] for n in rule["noise"] if n["column"] == "total"] == [pytest.approx(5_000_000 / 0.25)]


def test_repeating_a_query_until_the_budget_runs_out(dp_server, deployment: Deployment) -> None:
    srv, hashes = dp_server
    with deployment.client("olga", srv.port) as olga:
        olga.set_budget("bob", "population", epsilon=1.0, delta=1e-5)
    with deployment.client("alice", srv.port) as alice, deployment.client("bob", srv.port) as bob:
        summary, _ = bob.submit_package(tmp_path_factory_write("count-siming"))
        assert summary.hash == hashes["count-siming"]  # the same content: already approved
        answers = [_released(bob, summary.hash).table["n"][0].as_py() for _ in range(4)]
        jobs_before = len(bob.list_jobs()[0])
        with pytest.raises(SaferoomError) as refused:
            bob.run_job(summary.hash)
        assert refused.value.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "remain" in refused.value.message
        assert len(bob.list_jobs()[0]) == jobs_before  # refused before any job existed
        assert len(set(answers)) > 1  # fresh noise every time: nothing to average away by repetition
        del alice


def tmp_path_factory_write(name: str) -> Path:
    import tempfile

    body, epsilon = ATTACKS[name]
    return _write(Path(tempfile.mkdtemp(prefix="saferoom-dp-")), name, body, epsilon)


def test_many_statistics_in_one_run_share_the_declared_epsilon(dp_server, deployment: Deployment) -> None:
    srv, hashes = dp_server
    with deployment.client("alice", srv.port) as alice:
        out = _released(alice, hashes["many-statistics"])
    noise = [n for rule in out.report["rules"] for n in rule["noise"]]
    assert len(noise) == 41  # the cells and 40 means
    assert sum(n["epsilon"] for n in noise) == pytest.approx(0.1)
