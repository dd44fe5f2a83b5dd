"""Who a caller is: a name and the roles a certificate of the deployment's authority gives it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

__all__ = ["NAME_PATTERN", "SIGNING_ROLES", "Identity", "Role", "parse_roles"]

# Identity names: short, lowercase, safe in file names, log lines and certificate subjects.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")


class Role(StrEnum):
    """What an identity may do (see ``saferoom.identity.permissions`` for the table)."""

    RESEARCHER = "researcher"  # submits packages, runs approved ones, reads their own results
    OPERATOR = "operator"  # reviews, approves (signs), rejects and revokes packages
    AUDITOR = "auditor"  # reads and verifies the audit log
    OUTPUT_CHECKER = "output_checker"  # reviews held exact results and signs their release (or refusal)


# Roles whose holders sign decisions with an Ed25519 key of their own (its public half in their certificate).
SIGNING_ROLES = frozenset({Role.OPERATOR, Role.OUTPUT_CHECKER})


def parse_roles(values: str | list[str] | tuple[str, ...]) -> frozenset[Role]:
    """Roles from names (a list, or one comma-separated string); unknown names are an error."""
    items = values.split(",") if isinstance(values, str) else list(values)
    roles = set()
    for item in (i.strip() for i in items):
        try:
            roles.add(Role(item))
        except ValueError:
            raise ValueError(f"unknown role {item[:40]!r}; roles are {', '.join(r.value for r in Role)}") from None
    if not roles:
        raise ValueError("at least one role is needed")
    return frozenset(roles)


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, as its client certificate states it."""

    name: str
    roles: frozenset[Role]
    serial: int
    not_after: datetime
    certificate_pem: bytes = field(repr=False)
    signing_key: bytes | None = field(default=None, repr=False)  # raw Ed25519 public key (operators, checkers)

    def has(self, role: Role) -> bool:
        return role in self.roles

    @property
    def role_names(self) -> str:
        return ",".join(sorted(r.value for r in self.roles))
