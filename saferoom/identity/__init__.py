"""Identities and roles: the deployment's certificate authority, who a caller is, and what they may call."""

from saferoom.identity.permissions import ALLOWED, PUBLIC_METHODS, authorize
from saferoom.identity.pki import (
    LEGACY_SIGNING_KEY_OID,
    SIGNING_KEY_OID,
    IssuedIdentity,
    TrustStore,
    certificate_signer,
    init_authority,
    issue_identity,
    list_identities,
    load_signing_key,
    revoke_identity,
)
from saferoom.identity.roles import NAME_PATTERN, SIGNING_ROLES, Identity, Role, parse_roles

__all__ = [
    "ALLOWED",
    "LEGACY_SIGNING_KEY_OID",
    "NAME_PATTERN",
    "PUBLIC_METHODS",
    "SIGNING_KEY_OID",
    "SIGNING_ROLES",
    "Identity",
    "IssuedIdentity",
    "Role",
    "TrustStore",
    "authorize",
    "certificate_signer",
    "init_authority",
    "issue_identity",
    "list_identities",
    "load_signing_key",
    "parse_roles",
    "revoke_identity",
]
