"""The one place where domain errors become gRPC statuses.

``ErrorInterceptor`` wraps every handler: a ``SaferoomError`` is answered with the status it names, its
message as details, and its machine-readable code in the trailing metadata key ``saferoom-error-code`` (the
client rebuilds the same exception from it). Anything else is a bug of ours: logged here, answered with
INTERNAL and no details, and the server keeps serving.

A request body that does not decode is the client's fault, not ours. gRPC deserialises before any handler
runs and answers a failing deserializer with INTERNAL itself, so the interceptor wraps each deserializer: a
body that does not decode becomes an ``Undecodable`` marker, which the wrapped handler answers with
INVALID_ARGUMENT (code ``invalid_request``) before anything else, authorisation included, sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from saferoom.errors import ERROR_CODE_METADATA_KEY, InvalidRequest, SaferoomError
from saferoom.server.handlers import rewrap

__all__ = ["ErrorInterceptor", "status_of"]

_log = logging.getLogger(__name__)


def status_of(error: SaferoomError) -> grpc.StatusCode:
    """The gRPC status code a domain error maps to."""
    return getattr(grpc.StatusCode, error.status, grpc.StatusCode.INTERNAL)


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, SaferoomError):
        context.set_trailing_metadata(((ERROR_CODE_METADATA_KEY, exc.code),))
        context.abort(status_of(exc), exc.message)
    _log.exception("internal error in %s", method)
    context.set_trailing_metadata(((ERROR_CODE_METADATA_KEY, "internal"),))
    context.abort(grpc.StatusCode.INTERNAL, "internal error")


class Undecodable:
    """What a request deserializer yields for a body that is not a valid message of the method's type."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, bad UTF-8 in a string field, anything the runtime raises
            return Undecodable(type(exc).__name__)

    return deserialize


def _decoded(request: Any) -> Any:
    """``request`` itself; a stream of requests checked message by message; an error if it did not decode."""
    if isinstance(request, Undecodable):
        raise InvalidRequest(f"the request body is not a valid message for this method ({request.reason})")
    if isinstance(request, Iterator):
        return (_decoded(item) for item in request)
    return request


def _wrap_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(_decoded(request), context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            _abort(context, exc, method)

    return handler


def _wrap_stream(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(_decoded(request), context)
        except Exception as exc:
            if _is_abort(exc):
                raise
            _abort(context, exc, method)

    return handler


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises a bare ``Exception()`` once the status is set; let it through untouched.
    return type(exc) is Exception and not exc.args


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps domain errors to statuses for every method, whatever its streaming kind."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return rewrap(handler, lambda b: _wrap_unary(b, method), lambda b: _wrap_stream(b, method), _lenient)
