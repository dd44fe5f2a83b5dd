"""Job parameters: checked against the package's typed schema before a job starts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from saferoom.errors import InvalidParameter, SaferoomError
from saferoom.packages.package import MAX_STR_PARAM, Package, ParameterSpec

__all__ = ["check_value", "parse_param_value", "validate_params"]


def check_value(
    spec: ParameterSpec, value: Any, error: type[SaferoomError] = InvalidParameter, what: str | None = None
) -> Any:
    """Return ``value`` if it fits ``spec`` (an int is accepted for a float), else raise ``error``."""
    what = what or f"parameter {spec.name!r}"
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise error(f"{what} must be true or false")
        return value
    if spec.type == "str":
        if not isinstance(value, str):
            raise error(f"{what} must be a string")
        if len(value) > MAX_STR_PARAM:
            raise error(f"{what} is longer than {MAX_STR_PARAM} characters")
    elif spec.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{what} must be an integer")
        if not -(2**63) <= value < 2**63:
            raise error(f"{what} is outside the 64-bit range")
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise error(f"{what} must be a number")
        value = float(value)
        if not math.isfinite(value):
            raise error(f"{what} must be finite")
    if spec.min is not None and value < spec.min:
        raise error(f"{what} must be at least {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise error(f"{what} must be at most {spec.max:g}")
    if spec.choices is not None and value not in spec.choices:
        raise error(f"{what} must be one of {', '.join(map(str, spec.choices))}")
    return value


def validate_params(package: Package, given: Mapping[str, Any]) -> dict[str, Any]:
    """The complete, checked parameters of a job: defaults filled in, unknown names refused."""
    unknown = sorted(set(given) - set(package.parameters))
    if unknown:
        shown = ", ".join(repr(u[:64]) for u in unknown[:5])
        raise InvalidParameter(f"{package.name} has no parameter {shown}")
    return {
        name: check_value(spec, given[name]) if name in given else spec.default
        for name, spec in package.parameters.items()
    }


def parse_param_value(kind: str, text: str, name: str = "parameter") -> Any:
    """Parse the text of a ``--param NAME=VALUE`` for a parameter of type ``kind``."""
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(text)
    except ValueError:
        raise InvalidParameter(f"parameter {name!r}: {text[:64]!r} is not a valid {kind}") from None
    return text
