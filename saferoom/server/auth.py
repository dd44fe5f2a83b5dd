"""Authentication and authorization of every call, in one interceptor, against one table.

TLS (``require_client_auth``) already refused any peer without a certificate of the deployment's authority:
such a peer never reaches a handler (its client sees UNAVAILABLE; gRPC Python cannot request a client
certificate without also requiring it). Here, for every call, the certificate the handshake verified becomes
an ``Identity`` (signature, validity, revocation list re-read when it changes, roles) and the method is checked
against ``saferoom.identity.permissions``. UNAUTHENTICATED or PERMISSION_DENIED otherwise, and the refusal is
reported to ``on_refused`` (the audit log's hook).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from saferoom.errors import AuthenticationFailed, LimitExceeded, PermissionDenied, SaferoomError
from saferoom.identity import Identity, TrustStore, authorize
from saferoom.server.handlers import rewrap
from saferoom.store import IdentityStore

__all__ = ["AuthInterceptor", "Caller", "RefusalHook", "StreamSlots"]

_log = logging.getLogger(__name__)
# (method, name, roles, error): the name and roles the certificate claims, even when it was not accepted.
RefusalHook = Callable[[str, str, str, SaferoomError], None]


def _log_refusal(method: str, name: str, roles: str, error: SaferoomError) -> None:
    _log.warning("refused %s for %s: %s", method, name or "an unidentified peer", error.message)


class Caller:
    """Who is calling: the identity behind a call's verified client certificate.

    Each certificate is recorded in the identity store the first time this process sees it.
    """

    def __init__(
        self,
        trust: TrustStore,
        identities: IdentityStore | None = None,
        on_new_identity: Callable[[Identity], object] | None = None,
    ) -> None:
        self._trust = trust
        self._identities = identities
        self._on_new_identity = on_new_identity
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, context: grpc.ServicerContext) -> Identity:
        certs = context.auth_context().get("x509_pem_cert")
        if not certs:
            raise AuthenticationFailed("a client certificate of this deployment is required")
        identity = self._trust.identify(certs[0])
        if self._identities is not None and identity.serial not in self._seen:
            self._identities.remember(
                identity.serial,
                identity.name,
                identity.role_names,
                identity.not_after.timestamp(),
                identity.certificate_pem,
            )
            if self._on_new_identity is not None:
                self._on_new_identity(identity)
            with self._lock:
                self._seen.add(identity.serial)
        return identity


class StreamSlots:
    """How many server streams (WatchJob, ReadLog with follow, DownloadMock, health Watch) may be open at once,
    per identity and in all: each holds an RPC thread, and no caller (nor three together: the configuration
    keeps ``per_identity`` under a third of ``total``) may take them all. The one over its share is refused
    with RESOURCE_EXHAUSTED; its other streams and everyone else's go on."""

    def __init__(self, per_identity: int = 8, total: int = 32) -> None:
        self.per_identity, self.total = per_identity, total
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, name: str) -> None:
        with self._lock:
            if self._open.get(name, 0) >= self.per_identity or sum(self._open.values()) >= self.total:
                raise LimitExceeded(
                    f"too many open streams (at most {self.per_identity} per identity, {self.total} in all)"
                )
            self._open[name] = self._open.get(name, 0) + 1

    def release(self, name: str) -> None:
        with self._lock:
            left = self._open.get(name, 0) - 1
            if left > 0:
                self._open[name] = left
            else:
                self._open.pop(name, None)


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses every call whose caller is not authenticated, or whose roles do not allow the method; bounds
    the server streams each caller may hold open."""

    def __init__(
        self, caller: Caller, on_refused: RefusalHook | None = None, streams: StreamSlots | None = None
    ) -> None:
        self._caller = caller
        self._on_refused = on_refused or _log_refusal
        self._streams = streams or StreamSlots()

    def _check(self, method: str, context: grpc.ServicerContext) -> Identity:
        identity: Identity | None = None
        try:
            identity = self._caller(context)
            authorize(identity, method)
            return identity
        except (AuthenticationFailed, PermissionDenied) as exc:
            if identity is not None:
                name, roles = identity.name, identity.role_names
            else:  # not accepted: record what the certificate claimed, marked as such
                claimed = context.auth_context().get("x509_common_name") or [b""]
                name, roles = claimed[0].decode("utf-8", "replace")[:64], "unauthenticated"
            self._on_refused(method, name, roles, exc)
            raise

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        check = self._check

        def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                check(method, context)
                return behavior(request, context)

            return wrapped

        streams = self._streams

        def streaming(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                who = check(method, context).name
                streams.acquire(who)
                try:
                    yield from behavior(request, context)
                finally:
                    streams.release(who)

            return wrapped

        return rewrap(handler, unary, streaming)
