"""Docs are checked: the README's commands, RPCs, CLI commands and config options stay true."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import click
import pytest

from saferoom._proto.saferoom.v1 import (
    audit_pb2,
    budgets_pb2,
    catalog_pb2,
    checks_pb2,
    jobs_pb2,
    mock_pb2,
    packages_pb2,
    review_pb2,
)
from saferoom.audit import EventType
from saferoom.cli.main import cli
from saferoom.config import ServerConfig

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block, "the README starts with a bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands() -> None:
    assert README.index("```bash") < README.index("\n## ")
    demo, tests = readme_commands()
    assert "saferoom demo" in demo
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci.splitlines()


def test_every_rpc_is_documented() -> None:
    for module in (catalog_pb2, jobs_pb2, packages_pb2, review_pb2, audit_pb2, budgets_pb2, checks_pb2, mock_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            assert f"saferoom.v1.{service.name}" in README
            for method in service.methods:
                assert f"`{method.name}`" in README, method.name


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out.extend(_commands(command, f"{prefix}{name} "))
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_cli_command_is_documented() -> None:
    for command in _commands(cli):
        assert f"`saferoom {command}" in README, command


def test_every_config_option_is_documented() -> None:
    for f in fields(ServerConfig):
        assert f"`{f.name}`" in README, f.name


def test_every_bench_is_listed_in_the_bench_readme() -> None:
    listed = (REPO / "bench" / "README.md").read_text(encoding="utf-8")
    for script in sorted((REPO / "bench").glob("*.py")):
        if not script.name.startswith("_"):
            assert f"`{script.name}`" in listed, script.name


def test_every_audit_event_type_is_documented() -> None:
    for event in EventType:
        assert f"`{event.value}`" in README, event.value


NOT_RUN = "# not run by tests/test_docs.py:"
WALKTHROUGH_PORT = 50051  # the port the README's walkthrough serves on, as written


def fenced_blocks() -> list[tuple[int, str, str]]:
    """(line, language, text) of every fenced block in the README."""
    return [
        (README[: m.start()].count("\n") + 1, m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", README, re.S | re.M)
    ]


def test_every_readme_block_says_its_language() -> None:
    untagged = [line for line, language, _ in fenced_blocks() if not language]
    assert not untagged, f"README blocks at lines {untagged} have no language: bash blocks are run, say which"


def test_readme_names_the_walkthrough_package_by_its_real_hash() -> None:
    from saferoom.packages import package_from_files, read_package_files

    digest = package_from_files(read_package_files(REPO / "algorithms" / "site_selection")).hash
    assert f"saferoom review approve {digest[:12]} " in README, (
        f"algorithms/site_selection changed: its hash is now {digest[:12]}; update the README's walkthrough"
    )


@pytest.mark.slow
def test_every_readme_command_block_runs_in_order(tmp_path: Path) -> None:
    """The README's bash blocks after the two set-up commands (CI runs those), as written, in order, in one shell,
    in an empty directory with ``algorithms/`` beside it: a fresh state, a fresh PKI, the README's own port."""
    parts = []
    for line, language, text in fenced_blocks()[1:]:
        if language != "bash":
            continue
        first = text.splitlines()[0]
        if first.startswith(NOT_RUN):
            assert len(first) > len(NOT_RUN) + 10, f"README line {line + 1}: say why the block is not run"
            continue
        parts.append(f'echo "=== README line {line}" >&2\n{text}')
    assert len(parts) >= 5, "the README's walkthrough blocks were not found"
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", WALKTHROUGH_PORT)) == 0:
            pytest.fail(f"port {WALKTHROUGH_PORT} is in use here: the README's walkthrough serves on it")
    (tmp_path / "algorithms").symlink_to(REPO / "algorithms")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEROOM_")}
    env.update(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    env.update(COLUMNS="120", NO_COLOR="1")
    script = "set -euo pipefail\n" + "\n".join(parts)
    log = tmp_path / "walkthrough.log"  # a file, not a pipe: the server in the background keeps its end open
    with log.open("w") as out:
        shell = subprocess.Popen(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server the walkthrough starts in the background goes with it
        )
    try:
        shell.wait(timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the README's blocks did not finish in 240 s:\n{log.read_text()[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGTERM)  # the walkthrough's server: a graceful stop
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(shell.pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
    output = log.read_text()
    assert shell.returncode == 0, f"a README block failed (its line is the last one shown):\n{output[-6000:]}"
    assert "SERVING" in output and "released" in output


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
