"""The `saferoom` command, through click's runner, against real files and a real server."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from saferoom.catalog import Catalog
from saferoom.cli.main import cli
from saferoom.server import SaferoomServer
from tests.support import Deployment

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


def as_user(deployment: Deployment, name: str, server: SaferoomServer, *args: str) -> tuple[int, str]:
    """Run a client command with ``name``'s profile against the test server."""
    profile = deployment.pki / "identities" / name / "profile.toml"
    return invoke("--profile", str(profile), *args, "--server", f"127.0.0.1:{server.port}")


def test_catalog_commands_against_server(server: SaferoomServer, deployment: Deployment) -> None:
    code, out = as_user(deployment, "alice", server, "datasets", "list")
    assert code == 0 and "population" in out and "personal" in out
    code, out = as_user(deployment, "alice", server, "datasets", "describe", "population")
    assert code == 0 and "person_id" in out and "income" in out
    code, out = as_user(deployment, "alice", server, "package", "list")
    assert code == 0 and "site-selection" in out and "approved" in out


def test_profile_from_the_environment(server: SaferoomServer, deployment: Deployment, monkeypatch) -> None:
    monkeypatch.setenv("SAFEROOM_PROFILE", str(deployment.pki / "identities" / "bob" / "profile.toml"))
    monkeypatch.setenv("SAFEROOM_SERVER", f"127.0.0.1:{server.port}")
    code, out = invoke("package", "list")
    assert code == 0 and "site-selection" not in out  # bob submitted nothing: he sees nothing


def test_missing_profile_is_a_clear_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--profile", str(tmp_path / "nope.toml"), "package", "list"])
    assert result.exit_code == 1
    assert "no profile at" in result.output and len(result.output.strip().splitlines()) == 1


def test_mock_download_then_dev_run(server: SaferoomServer, deployment: Deployment, tmp_path: Path) -> None:
    mock = tmp_path / "mock"
    code, out = as_user(deployment, "alice", server, "datasets", "mock", "--out", str(mock), "--rows", "3000")
    assert code == 0, out
    with Catalog.open(mock) as catalog:
        assert catalog.table("population").num_rows == 3000
    code, out = invoke("dev", "run", str(REPO / "algorithms" / "population_profile"), "--data", str(mock), "--json")
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
    result = CliRunner().invoke(cli, ["dev", "run", str(package), "--data", str(catalog_dir), "--param", "n=999"])
    assert result.exit_code == 1
    assert "invalid_parameter" in result.output


def test_jobs_run_json_over_grpc(server: SaferoomServer, deployment: Deployment) -> None:
    args = ("jobs", "run", "echo", "--param", "n=5", "--param", "label=x", "--json")
    code, out = as_user(deployment, "alice", server, *args)
    assert code == 0, out
    result = json.loads(out)
    assert result["outputs"]["n"]["value"] == 10
    assert len(result["outputs"]["stops"]["rows"]) == 5


def test_demo_runs_the_whole_flow() -> None:
    code, out = invoke("demo", "--scale", "20000", "--top", "3")
    assert code == 0, out
    assert "Top 3 candidate cells" in out
    assert "ended awaiting_check" in out and "job_not_finished" in out  # held under the exact rules ...
    assert "signs the release" in out and "job succeeded" in out  # ... until the checker signs
    assert "1 signed output-check decision" in out
    # After site selection, the second use case runs on the imported enterprise registers and says what it read.
    credit = out.index("credit profiles of small enterprises")
    assert out.index("Top 3 candidate cells") < credit
    assert re.search(r"job [0-9a-f]{8} read enterprise_years [0-9a-f]{12}, enterprises [0-9a-f]{12}", out[credit:])
    assert "done in" in out


def test_certs_commands_write_private_keys_0600(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    code, out = invoke("certs", "init", str(pki), "--host", "saferoom.example.gov")
    assert code == 0, out
    code, out = invoke("certs", "issue", "--pki", str(pki), "--name", "wen", "--role", "researcher,operator")
    assert code == 0 and "operator, researcher" in out, out
    for key in (pki / "ca.key", pki / "server.key", pki / "identities/wen/key.pem", pki / "identities/wen/signing.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    code, out = invoke("certs", "issue", "--pki", str(pki), "--name", "wen", "--role", "auditor")
    assert code == 1 and "exists" in out  # never overwrites a key
    code, out = invoke("certs", "issue", "--pki", str(pki), "--name", "x", "--role", "king")
    assert code == 1
    code, out = invoke("certs", "revoke", "--pki", str(pki), "wen")
    assert code == 0 and "revoked 1" in out
    code, out = invoke("certs", "list", "--pki", str(pki))
    assert code == 0 and "wen" in out and "revoked" in out
    code, out = invoke("certs", "revoke", "--pki", str(pki), "wen")
    assert code == 1  # nothing left to revoke


def test_submit_review_approve_run_through_the_cli(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    package = tmp_path / "cli_pkg"
    package.mkdir()
    (package / "saferoom.toml").write_text(
        'name = "cli-pkg"\nversion = "0.1.0"\nentrypoint = "main.py:run"\ndatasets = ["bus_stops"]\n'
    )
    (package / "main.py").write_text('def run(ctx):\n    return {"stops": ctx.table("bus_stops").agg(n=count())}\n')
    code, out = as_user(deployment, "bob", server, "package", "submit", str(package))
    assert code == 0 and "pending" in out, out
    code, out = as_user(deployment, "bob", server, "package", "show", "cli-pkg")
    assert code == 0 and "awaiting review" in out
    package_hash = next(w for w in out.split() if len(w) == 64)
    code, out = as_user(deployment, "olga", server, "review", "list")
    assert code == 0 and "cli-pkg" in out
    code, out = as_user(deployment, "olga", server, "review", "show", package_hash)
    assert code == 0 and "ctx.table" in out
    code, out = as_user(deployment, "olga", server, "review", "diff", package_hash)
    assert code == 0 and "+def run(ctx):" in out
    code, out = as_user(deployment, "bob", server, "review", "approve", package_hash)
    assert code == 1 and "signing key" in out  # a researcher has no key to sign with
    code, out = as_user(deployment, "olga", server, "review", "approve", package_hash, "--days", "7")
    assert code == 0 and "approved" in out, out
    code, out = as_user(deployment, "bob", server, "jobs", "run", "cli-pkg", "--json")
    assert code == 0, out
    code, out = as_user(deployment, "olga", server, "review", "revoke", package_hash, "--reason", "test over")
    assert code == 0 and "revoked" in out
    code, out = as_user(deployment, "bob", server, "jobs", "run", "cli-pkg")
    assert code == 1 and "not_approved" in out
    code, out = as_user(deployment, "bob", server, "package", "download", package_hash, "--out", str(tmp_path / "d"))
    assert code == 0
    assert (tmp_path / "d" / "main.py").read_bytes() == (package / "main.py").read_bytes()


def test_result_show_lists_every_rule_for_an_output_checker(server: SaferoomServer, deployment: Deployment) -> None:
    with deployment.client("alice", server.port) as alice:
        job = alice.run_job("population-profile")
        assert alice.wait(job.id, timeout=120).state == "succeeded"
    code, out = as_user(deployment, "alice", server, "result", "show", job.id, "--no-data")
    assert code == 0, out
    assert "min_contributors" in out and "clamp" in out
    assert "threshold" in out and "aggregate" in out
    assert "cells suppressed" not in out  # no count of suppressed cells reaches the researcher (exact data)


def test_mock_commands_publish_and_describe(server: SaferoomServer, deployment: Deployment) -> None:
    code, out = as_user(deployment, "alice", server, "datasets", "describe", "housing_transactions")
    assert code == 0 and "declared-domain fallback" in out
    code, out = as_user(deployment, "alice", server, "mock", "publish", "housing_transactions", "--epsilon", "1")
    assert code == 1 and "permission_denied" in out
    code, out = as_user(deployment, "olga", server, "mock", "budget", "housing_transactions", "--epsilon", "2")
    assert code == 0 and "budget epsilon 2, 0 spent" in out
    code, out = as_user(deployment, "olga", server, "mock", "publish", "housing_transactions", "--epsilon", "1")
    assert code == 0 and "synthetic (DP, ε=1)" in out and "operators: real vs mock TVD" in out
    code, out = as_user(deployment, "alice", server, "datasets", "describe", "housing_transactions")
    assert code == 0 and "synthetic (DP, ε=1), version 1" in out and "district -> price" in out
    assert "estimated from the noisy measurements" in out and "operators:" not in out
    code, out = as_user(deployment, "alice", server, "mock", "info", "bus_stops")
    assert code == 0 and "public: the real rows" in out
