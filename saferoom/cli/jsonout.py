"""`--json`: what a read command prints for programs, and how an error looks to them.

Every read command takes ``--json`` and then prints exactly one JSON document on stdout (an object or a list),
with the client's dataclass field names as keys (stable: renaming one is a breaking change). Times stay as the
client reports them (seconds since the epoch, UTC). Bytes that are UTF-8 become text; others become
``{"base64": ...}``. Arrow tables become ``{"columns": [...], "rows": [{...}, ...]}``. Non-finite floats become
``null`` (JSON has no NaN).

An error, with ``--json``, is one document on stderr, ``{"error": {"code": STATUS, "reason": CODE, "message":
...}}``: ``code`` is the gRPC status name (``NOT_FOUND``, ``INVALID_ARGUMENT``, ...), ``reason`` the domain's own
machine-readable code (``job_not_found``, ...), and the exit status is the one the command has without ``--json``.
An invalid package adds ``"problems"``: every problem found in it, one string each.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

__all__ = ["JSON_META", "dumps", "emit", "error_document", "json_option", "remember_json", "to_data"]

JSON_META = "saferoom.json"  # ctx.meta key: --json was given (errors go to stderr as JSON too)


def remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_META] = True
    return value


def json_option(fn: Any) -> Any:
    """``--json``: one JSON document on stdout, errors as JSON on stderr."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,  # before the other parameters: their errors are JSON too
        callback=remember_json,
        help="One JSON document on stdout (errors as JSON on stderr).",
    )(fn)


def emit(value: Any) -> None:
    """Print ``value`` as the one JSON document of a --json command."""
    click.echo(dumps(value))


def _table(table: pa.Table) -> dict[str, Any]:
    return {"columns": table.column_names, "rows": [{k: to_data(v) for k, v in r.items()} for r in table.to_pylist()]}


def to_data(value: Any) -> Any:
    """``value`` as plain JSON data (see the module docstring for the rules)."""
    from saferoom.client import HeldOutput

    if isinstance(value, HeldOutput):  # what a checker reads: the table itself, not its IPC bytes
        table = value.table
        data: dict[str, Any] = {"name": value.name, "kind": value.kind, "report": value.report}
        data.update({"table": _table(table)} if table is not None else {"value": value.value})
        return {**data, "check": to_data(value.check), "flags": list(value.flags)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, pa.Table):
        return _table(value)
    if isinstance(value, Mapping):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [to_data(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return to_data(value.value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def dumps(value: Any) -> str:
    """One JSON document (indented, keys sorted)."""
    return json.dumps(to_data(value), indent=2, sort_keys=True, allow_nan=False)


def error_document(code: str, reason: str, message: str, problems: Sequence[str] = ()) -> str:
    """The one-line JSON an error becomes on stderr under ``--json`` (with ``problems``, a list, when the error
    lists several: a package's)."""
    error: dict[str, Any] = {"code": code, "reason": reason, "message": message}
    if problems:
        error["problems"] = list(problems)
    return json.dumps({"error": error}, sort_keys=True)
