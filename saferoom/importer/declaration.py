"""The declaration: the one file in which a data owner states what the catalog publishes about a dataset.

A TOML file, read with ``tomllib``; everything in it becomes public (researchers see it and mock data is drawn
from it), so nothing in it may come from the data itself. ``saferoom datasets propose`` writes a draft from the
data for convenience, and marks every value it took from the data twice: a ``# FROM DATA`` comment for the
reader and the key's path in the top-level ``from_data`` list for the machine. ``saferoom datasets import``
refuses a declaration that still has either: a bound taken from the data discloses its extremes (the oldest
person's age, the highest income), and a category list taken from the data discloses that someone has it.

    name = "population"                      # the dataset's name in the catalog
    description = "..."
    sensitivity = "personal"                 # or "public"
    privacy_unit = "person_id"               # personal datasets: the column naming the person
    one_row_per_unit = true                  # checked on import: no unit appears twice
    engine = "arrow"                         # or "spark": partitioned Parquet (``partition_by``)
    ignore = ["internal_note"]               # source columns deliberately left out
    from_data = []                           # what propose took from the data: must be empty to import

    [policy]                                 # manifest.Policy: the release rules
    differential_privacy = true

    [[columns]]                              # in catalog order; every source column is declared or ignored
    name = "age"
    type = "int64"                           # int64, float64, string, bool, date32, timestamp
    description = "age in completed years"
    unit = "years"
    min = 0                                  # public bounds (date32: "YYYY-MM-DD";
                                             # timestamp: "YYYY-MM-DD HH:MM:SS", no time zone)
    max = 110
    categories = ["female", "male"]          # string columns: the public domain (dictionary-encoded)
    magnitude = false
    may_be_null = false
    may_be_nan = false                       # float64 only
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from saferoom.catalog.manifest import COLUMN_TYPES, Column, DatasetInfo, Policy, timestamp_seconds
from saferoom.errors import InvalidRequest

__all__ = ["FROM_DATA_MARK", "Declaration", "DeclarationError", "load_declaration"]

FROM_DATA_MARK = "FROM DATA"
EPOCH = dt.date(1970, 1, 1)
_TOP_KEYS = {
    "name",
    "description",
    "sensitivity",
    "privacy_unit",
    "one_row_per_unit",
    "engine",
    "partition_by",
    "ignore",
    "from_data",
    "policy",
    "columns",
}
_COLUMN_KEYS = {f.name for f in fields(Column)}
_POLICY_KEYS = {f.name for f in fields(Policy)}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class DeclarationError(InvalidRequest):
    """A declaration file that cannot be imported under (malformed, or still carrying data-derived values)."""


@dataclass(frozen=True)
class Declaration:
    """A parsed declaration: the dataset as the catalog will publish it, less what the import fills in."""

    info: DatasetInfo  # file, rows and version are placeholders until the import writes them
    ignore: tuple[str, ...]
    partition_by: str | None
    sha256: str  # of the file's bytes: recorded with every version imported under it

    @property
    def name(self) -> str:
        return self.info.name


def load_declaration(path: Path) -> Declaration:
    """Read and check a declaration; raises ``DeclarationError`` naming what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DeclarationError(f"cannot read the declaration {path}: {exc.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeclarationError(f"{path.name}: not valid TOML: {exc}") from None
    marked = data.get("from_data", [])
    if not isinstance(marked, list) or marked:
        raise DeclarationError(
            f"{path.name} still has values taken from the data ({', '.join(map(str, marked))}): replace each with "
            "a public bound or category list, then empty from_data"
        )
    for number, line in enumerate(text.splitlines(), 1):
        if FROM_DATA_MARK in line:
            raise DeclarationError(
                f"{path.name} line {number} is still marked {FROM_DATA_MARK!r}: replace the value with a public "
                "one and delete the mark"
            )
    return Declaration(*_parse(data), sha256=hashlib.sha256(raw).hexdigest())


def _parse(data: dict[str, Any]) -> tuple[DatasetInfo, tuple[str, ...], str | None]:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise DeclarationError(f"unknown key(s) in the declaration: {', '.join(sorted(unknown))}")
    for key in ("name", "description", "sensitivity"):
        if not isinstance(data.get(key), str):
            raise DeclarationError(f"the declaration needs {key} (a string)")
    columns_data = data.get("columns")
    if not isinstance(columns_data, list) or not columns_data:
        raise DeclarationError("the declaration needs at least one [[columns]] table")
    columns = tuple(_column(c, i) for i, c in enumerate(columns_data, 1))
    policy_data = data.get("policy", {})
    if not isinstance(policy_data, dict) or set(policy_data) - _POLICY_KEYS:
        bad = sorted(set(policy_data) - _POLICY_KEYS) if isinstance(policy_data, dict) else ["(not a table)"]
        raise DeclarationError(f"unknown key(s) in [policy]: {', '.join(bad)}")
    ignore = data.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(x, str) for x in ignore):
        raise DeclarationError("ignore must be a list of source column names")
    engine = data.get("engine", "arrow")
    partition_by = data.get("partition_by")
    if partition_by is not None and (engine != "spark" or partition_by not in {c.name for c in columns}):
        raise DeclarationError("partition_by names a declared column, and only for engine = 'spark'")
    try:
        info = DatasetInfo(
            name=data["name"],
            description=data["description"],
            file=f"{data['name']}.arrow",
            rows=0,
            sensitivity=data["sensitivity"],
            columns=columns,
            privacy_unit=data.get("privacy_unit"),
            one_row_per_unit=bool(data.get("one_row_per_unit", False)),
            policy=Policy(**policy_data),
            engine=engine,
            location="/pending" if engine == "spark" else None,
        )
    except (TypeError, InvalidRequest) as exc:
        raise DeclarationError(f"the declaration is not a valid dataset: {exc}") from None
    if info.privacy_unit is not None:
        unit = info.column(info.privacy_unit)
        if unit.may_be_null:
            raise DeclarationError(f"the privacy unit {unit.name!r} may not be null")
    return info, tuple(ignore), partition_by


def _column(data: Any, index: int) -> Column:
    if not isinstance(data, dict):
        raise DeclarationError(f"columns[{index}] must be a table")
    unknown = set(data) - _COLUMN_KEYS
    if unknown:
        raise DeclarationError(f"columns[{index}]: unknown key(s) {', '.join(sorted(unknown))}")
    kind = data.get("type")
    if kind not in COLUMN_TYPES:
        raise DeclarationError(f"columns[{index}]: type must be one of {', '.join(sorted(COLUMN_TYPES))}")
    values = dict(data)
    for bound in ("min", "max"):
        if bound in values:
            values[bound] = _bound(values[bound], kind, f"columns[{index}].{bound}")
    categories = values.get("categories")
    if categories is not None:
        if kind != "string" or not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise DeclarationError(f"columns[{index}]: categories are a list of strings, for string columns")
        if len(set(categories)) != len(categories) or not categories:
            raise DeclarationError(f"columns[{index}]: categories must be distinct and not empty")
        values["categories"] = tuple(categories)
    if values.get("may_be_nan") and kind != "float64":
        raise DeclarationError(f"columns[{index}]: only float64 columns can hold NaN")
    for flag in ("magnitude", "may_be_null", "may_be_nan"):
        if flag in values and not isinstance(values[flag], bool):
            raise DeclarationError(f"columns[{index}].{flag} must be true or false")
    values.setdefault("may_be_null", False)
    if kind == "float64":
        values.setdefault("may_be_nan", False)
    if values.get("min") is not None and values.get("max") is not None and values["min"] > values["max"]:
        raise DeclarationError(f"columns[{index}]: min is above max")
    try:
        return Column(**values)
    except (TypeError, InvalidRequest) as exc:
        raise DeclarationError(f"columns[{index}]: {exc}") from None


def _bound(value: Any, kind: str, where: str) -> float:
    """A bound as the catalog stores it (dates: days since 1970-01-01, like the generated catalog; timestamps:
    seconds since 1970-01-01 00:00:00)."""
    if kind == "timestamp":
        return _timestamp_bound(value, where)
    if kind == "date32":
        if isinstance(value, dt.date):
            return float((value - EPOCH).days)
        if isinstance(value, str):
            try:
                return float((dt.date.fromisoformat(value) - EPOCH).days)
            except ValueError:
                pass
        raise DeclarationError(f"{where}: a date32 bound is a date (YYYY-MM-DD)")
    if kind not in ("int64", "float64") or isinstance(value, bool) or not isinstance(value, int | float):
        raise DeclarationError(f"{where}: bounds are numbers, for int64, float64, date32 and timestamp columns")
    return float(value)


def _timestamp_bound(value: Any, where: str) -> float:
    """A timestamp bound: text "YYYY-MM-DD HH:MM:SS" or a TOML local date-time, to the second, no time zone."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            raise DeclarationError(f"{where}: a timestamp bound has no time zone (write 2024-01-31 08:30:00)")
        if value.microsecond:
            raise DeclarationError(f"{where}: a timestamp bound is to the second (no fraction of a second)")
        value = value.isoformat(sep=" ")
    try:
        return float(timestamp_seconds(value))
    except ValueError:
        raise DeclarationError(
            f'{where}: a timestamp bound is a time "YYYY-MM-DD HH:MM:SS" in years 1 to 9999, to the second and '
            "without a time zone"
        ) from None
