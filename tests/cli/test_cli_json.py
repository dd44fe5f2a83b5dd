"""`--json` on every read command (one JSON document on stdout, errors as JSON on stderr), the server's address
resolved --server > $SAFEROOM_SERVER > profile in the CLI and the Python client alike, and audit dates. Through
the real CLI (click's runner) against a real server."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from saferoom.cli.main import cli
from saferoom.client import Client
from saferoom.server import SaferoomServer
from tests.support import Deployment

# Commands that change something (or start something) rather than read: everything else must take --json.
WRITES = {
    "serve",
    "demo",
    "datasets generate",
    "datasets mock",
    "package download",
    "review approve",
    "review reject",
    "review revoke",
    "check approve",
    "check reject",
    "check request-changes",
    "audit export",
    "audit recover",
    "certs init",
    "certs issue",
    "certs revoke",
    "jobs cancel",
    "datasets import",
    "datasets propose",
    "datasets enterprises",
    "mock budget",
    "mock publish",
    "state backup",
    "state restore",
    "console",
}


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{path} "))
        else:
            found[path] = command
    return found


def test_every_read_command_takes_json() -> None:
    commands = _commands(cli)
    assert set(commands) >= WRITES, set(WRITES) - set(commands)  # the list names real commands
    missing = [
        path
        for path, command in commands.items()
        if path not in WRITES and not any("--json" in p.opts for p in command.params if isinstance(p, click.Option))
    ]
    assert not missing, f"read commands without --json: {missing}"


def _run(deployment: Deployment, name: str, server: SaferoomServer | None, *args: str, **env: str) -> Result:
    profile = deployment.pki / "identities" / name / "profile.toml"
    tail = ("--server", f"127.0.0.1:{server.port}") if server is not None else ()
    return CliRunner().invoke(cli, ["--profile", str(profile), *args, *tail], env=env or None)


def _document(result: Result) -> object:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)  # exactly one document: json.loads refuses anything after it


def test_read_commands_print_one_json_document(server: SaferoomServer, deployment: Deployment) -> None:
    with deployment.client("alice", server.port) as alice:
        job = alice.wait(alice.run_job("echo", {"n": 2}).id, timeout=120)
        package = alice.get_package("echo")
    for who, args in [
        ("alice", ("datasets", "list")),
        ("alice", ("datasets", "describe", "population")),
        ("alice", ("package", "list")),
        ("alice", ("package", "show", "echo")),
        ("alice", ("jobs", "get", job.id[:8])),
        ("alice", ("jobs", "list")),
        ("alice", ("jobs", "result", job.id)),
        ("alice", ("result", "show", job.id)),
        ("alice", ("budget", "show")),
        ("alice", ("profile", "show")),
        ("olga", ("review", "list")),
        ("olga", ("review", "show", package.hash)),
        ("olga", ("review", "diff", package.hash)),
        ("audrey", ("audit", "tail", "-n", "3")),
        ("audrey", ("audit", "search", "--job", job.id)),
        ("audrey", ("audit", "show", "1")),
        ("audrey", ("audit", "verify")),
        ("quinn", ("check", "list")),
    ]:
        data = _document(_run(deployment, who, server, *args, "--json"))
        assert data is not None, args
    got = _document(_run(deployment, "alice", server, "jobs", "get", job.id[:8], "--json"))
    assert isinstance(got, dict) and got["id"] == job.id and got["state"] == "succeeded" and got["owner"] == "alice"
    listed = _document(_run(deployment, "alice", server, "jobs", "list", "--json"))
    assert isinstance(listed, list) and job.id in {j["id"] for j in listed}
    shown = _document(_run(deployment, "olga", server, "review", "show", package.hash, "--json"))
    assert isinstance(shown, dict) and shown["package"]["hash"] == package.hash and "main.py" in shown["files"]
    searched = _document(_run(deployment, "audrey", server, "audit", "search", "--job", job.id, "--json"))
    assert isinstance(searched, list) and "job_queued" in {r["event"] for r in searched}
    assert _document(_run(deployment, "alice", server, "jobs", "list", "--state", "rejected", "--json")) == []
    certs = _document(CliRunner().invoke(cli, ["certs", "list", "--pki", str(deployment.pki), "--json"]))
    assert isinstance(certs, list) and "alice" in {c["name"] for c in certs}


@pytest.mark.parametrize(
    ("who", "args", "code", "status"),
    [
        ("alice", ("jobs", "get", "ffffffff"), "NOT_FOUND", 1),
        ("alice", ("package", "show", "no-such-package"), "NOT_FOUND", 1),
        ("alice", ("datasets", "describe", "nope"), "NOT_FOUND", 1),
        ("alice", ("review", "list"), "PERMISSION_DENIED", 1),  # a researcher is no operator
        ("audrey", ("audit", "show", "999999"), "NOT_FOUND", 1),
        ("audrey", ("audit", "search", "--since", "yesterday"), "INVALID_ARGUMENT", 2),  # a usage error
        ("alice", ("jobs", "get"), "INVALID_ARGUMENT", 2),  # a missing argument
    ],
)
def test_errors_are_json_on_stderr(
    server: SaferoomServer, deployment: Deployment, who: str, args: tuple[str, ...], code: str, status: int
) -> None:
    result = _run(deployment, who, server, *args, "--json")
    assert result.exit_code == status, (result.stdout, result.stderr)
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == code and error["message"] and error["reason"]
    plain = _run(deployment, who, server, *args)  # without --json: the same exit status, a line of text
    assert plain.exit_code == status and not plain.stderr.startswith("{")


def test_the_server_flag_beats_the_environment_which_beats_the_profile(
    server: SaferoomServer, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, dead = f"127.0.0.1:{server.port}", "127.0.0.1:1"
    profile = deployment.pki / "identities" / "alice" / "profile.toml"
    assert deployment.profile("alice").server != real  # the profile names another address

    def shown(*args: str, **env: str) -> dict[str, str]:
        result = CliRunner().invoke(cli, ["--profile", str(profile), "profile", "show", "--json", *args], env=env)
        data = _document(result)
        assert isinstance(data, dict)
        return data

    monkeypatch.delenv("SAFEROOM_SERVER", raising=False)
    assert shown()["server_from"] == "profile"
    assert shown(SAFEROOM_SERVER=real) == {**shown(), "server": real, "server_from": "env"}
    assert shown("--server", real, SAFEROOM_SERVER=dead)["server"] == real
    # And for real: the environment reaches the server, the flag wins over a dead environment.
    result = CliRunner().invoke(cli, ["--profile", str(profile), "package", "list"], env={"SAFEROOM_SERVER": real})
    assert result.exit_code == 0 and "echo" in result.stdout
    args = ["--profile", str(profile), "package", "list", "--server", real]
    assert CliRunner().invoke(cli, args, env={"SAFEROOM_SERVER": dead}).exit_code == 0

    # The Python client: $SAFEROOM_SERVER over the profile, an explicit server over both.
    monkeypatch.setenv("SAFEROOM_SERVER", real)
    with Client.from_profile(profile, timeout=20) as client:
        assert client.profile is not None and client.profile.server == real
        assert "echo" in {p.name for p in client.list_packages()}
    monkeypatch.setenv("SAFEROOM_SERVER", dead)
    with Client.from_profile(profile, server=real, timeout=20) as client:
        assert client.get_package("echo").name == "echo"


def test_audit_tail_shows_the_date(server: SaferoomServer, deployment: Deployment) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    result = _run(deployment, "audrey", server, "audit", "tail", "-n", "3")
    assert result.exit_code == 0, result.output
    assert f"{today}T" in result.stdout and "Z" in result.stdout, result.stdout
    data = _document(_run(deployment, "audrey", server, "audit", "tail", "-n", "3", "--json"))
    assert isinstance(data, list) and len(data) == 3 and all(r["ts"].startswith(today) for r in data)


def test_a_path_is_json_too(tmp_path: Path) -> None:
    """Offline reads: `state check` on a fresh (empty) state directory says why, as JSON and with status 1."""
    result = CliRunner().invoke(cli, ["state", "check", "--state", str(tmp_path), "--json"])
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "problems"} and data["ok"] == (result.exit_code == 0)
