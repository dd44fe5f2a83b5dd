"""The API's enums of kinds match the domain's strings one to one (saferoom/wire.py maps them by name), and a
rule the disclosure code can name never reaches a client as RULE_KIND_UNSPECIFIED."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from saferoom._proto.saferoom.v1 import catalog_pb2, checks_pb2, jobs_pb2, packages_pb2
from saferoom.catalog.manifest import COLUMN_TYPES, OUTPUT_CHECKING
from saferoom.checks import Decision
from saferoom.jobs.state import JobState
from saferoom.packages.package import PARAM_TYPES
from saferoom.packages.service import PackageStatus
from saferoom.wire import enum_from_proto, enum_to_proto

SAFEROOM = Path(__file__).resolve().parents[2] / "saferoom"
OUTPUT_KINDS = {"aggregate", "public", "model", "value"}  # saferoom.disclosure ReleaseReport.kind


def _names(enum: Any) -> set[str]:
    return {enum_from_proto(enum, number) for number in enum.values() if number}


@pytest.mark.parametrize(
    ("enum", "domain"),
    [
        (catalog_pb2.ColumnType, set(COLUMN_TYPES)),
        (catalog_pb2.Sensitivity, {"public", "personal"}),
        (catalog_pb2.OutputChecking, set(OUTPUT_CHECKING)),
        (packages_pb2.ParameterType, set(PARAM_TYPES)),
        (packages_pb2.PackageStatus, {s.value for s in PackageStatus}),
        (jobs_pb2.JobState, {s.value for s in JobState}),
        (jobs_pb2.OutputKind, OUTPUT_KINDS),
        (checks_pb2.CheckDecision, {d.value for d in Decision}),
    ],
    ids=lambda v: v.DESCRIPTOR.name if hasattr(v, "DESCRIPTOR") else "",
)
def test_each_closed_set_of_kinds_is_one_enum(enum: Any, domain: set[str]) -> None:
    assert _names(enum) == domain
    for name in domain:
        number = enum_to_proto(enum, name)
        assert number != 0 and enum_from_proto(enum, number) == name
    assert enum.Name(0).endswith("_UNSPECIFIED")


def _rule_names() -> dict[str, str]:
    """Every rule name saferoom/ can put in a release report (``RuleOutcome("x", ...)`` or ``rule="x"``), with
    where it is written."""
    found: dict[str, str] = {}
    for path in sorted(SAFEROOM.rglob("*.py")):
        if "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RuleOutcome"):
                continue
            first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "rule"), None)
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found[first.value] = f"{path.relative_to(SAFEROOM)}:{node.lineno}"
            elif first is not None:
                pytest.fail(f"{path}:{node.lineno}: a rule named by an expression cannot be checked against RuleKind")
    return found


def test_every_rule_the_disclosure_code_names_is_a_rule_kind() -> None:
    """A rule added without its RuleKind would reach clients as RULE_KIND_UNSPECIFIED (its explanation intact):
    this fails first, naming where the rule is written."""
    rules = _rule_names()
    assert len(rules) >= 12, rules
    missing = {name: where for name, where in rules.items() if enum_to_proto(jobs_pb2.RuleKind, name) == 0}
    assert not missing, f"add these to RuleKind in protos/saferoom/v1/jobs.proto: {missing}"
    assert _names(jobs_pb2.RuleKind) == set(rules), "a RuleKind no code writes"


def test_unknown_kinds_map_to_unspecified_both_ways() -> None:
    assert enum_to_proto(jobs_pb2.RuleKind, "no_such_rule") == jobs_pb2.RULE_KIND_UNSPECIFIED
    assert enum_to_proto(catalog_pb2.ColumnType, "") == catalog_pb2.COLUMN_TYPE_UNSPECIFIED
    assert enum_from_proto(jobs_pb2.OutputKind, 0) == ""
    assert enum_from_proto(jobs_pb2.OutputKind, 999) == ""  # a newer server's kind, read by an older client
