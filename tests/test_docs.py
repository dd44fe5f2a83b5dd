"""Docs are checked: the README's commands, RPCs, CLI commands and config options stay true."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import click

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


def test_every_audit_event_type_is_documented() -> None:
    for event in EventType:
        assert f"`{event.value}`" in README, event.value
