"""The `saferoom` command, through click's runner, against real files and a real server."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from saferoom.catalog import Catalog
from saferoom.cli.main import cli
from saferoom.server import SaferoomServer

REPO = Path(__file__).resolve().parent.parent.parent


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_datasets_generate_is_deterministic(tmp_path: Path) -> None:
    code, out = invoke("datasets", "generate", "--out", str(tmp_path / "a"), "--scale", "5000", "--seed", "3")
    assert code == 0, out
    assert "wrote 6 datasets" in out
    invoke("datasets", "generate", "--out", str(tmp_path / "b"), "--scale", "5000", "--seed", "3")
    for name in ("population.arrow", "catalog.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_catalog_commands_against_server(server: SaferoomServer) -> None:
    address = f"127.0.0.1:{server.port}"
    code, out = invoke("datasets", "list", "--server", address)
    assert code == 0 and "population" in out and "personal" in out
    code, out = invoke("datasets", "describe", "population", "--server", address)
    assert code == 0 and "person_id" in out and "income" in out
    code, out = invoke("packages", "list", "--server", address)
    assert code == 0 and "site-selection" in out


def test_mock_download_then_dev_run(server: SaferoomServer, tmp_path: Path) -> None:
    address = f"127.0.0.1:{server.port}"
    mock = tmp_path / "mock"
    code, out = invoke("datasets", "mock", "--out", str(mock), "--rows", "3000", "--server", address)
    assert code == 0, out
    with Catalog.open(mock) as catalog:
        assert catalog.table("population").num_rows == 3000
    code, out = invoke(
        "dev", "run", str(REPO / "algorithms" / "population_profile"), "--data", str(mock), "--json"
    )
    assert code == 0, out
    result = json.loads(out)
    assert result["outputs"]
    for output in result["outputs"].values():
        assert output["kind"] in ("aggregate", "public", "value")


def test_dev_run_refusal_exits_non_zero_with_one_line(catalog_dir: Path) -> None:
    package = REPO / "tests" / "fixtures" / "packages" / "row_leak"
    result = CliRunner().invoke(cli, ["dev", "run", str(package), "--data", str(catalog_dir)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "release_refused" in lines[0]


def test_dev_run_bad_param(catalog_dir: Path) -> None:
    package = REPO / "tests" / "fixtures" / "packages" / "echo"
    result = CliRunner().invoke(
        cli, ["dev", "run", str(package), "--data", str(catalog_dir), "--param", "n=999"]
    )
    assert result.exit_code == 1
    assert "invalid_parameter" in result.output


def test_jobs_run_json_over_grpc(server: SaferoomServer) -> None:
    address = f"127.0.0.1:{server.port}"
    code, out = invoke(
        "jobs", "run", "echo", "--param", "n=5", "--param", "label=x", "--json", "--server", address
    )
    assert code == 0, out
    result = json.loads(out)
    assert result["outputs"]["n"]["value"] == 10
    assert len(result["outputs"]["stops"]["rows"]) == 5


def test_demo_runs_the_whole_flow() -> None:
    code, out = invoke("demo", "--scale", "20000", "--top", "3")
    assert code == 0, out
    assert "Top 3 candidate cells" in out
    assert "done in" in out
