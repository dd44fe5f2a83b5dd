"""Wrapping a gRPC method handler's behaviour, whatever its streaming kind: the one helper interceptors share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["rewrap"]

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Wrap,
    streaming: Wrap,
    deserializer: Wrap | None = None,
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped: ``unary`` for unary responses, ``streaming`` for streams.

    ``deserializer``, if given, wraps the handler's request deserializer as well.
    """
    request_deserializer = handler.request_deserializer
    if deserializer is not None and request_deserializer is not None:
        request_deserializer = deserializer(request_deserializer)
    kinds = {
        "unary_unary": (unary, grpc.unary_unary_rpc_method_handler),
        "unary_stream": (streaming, grpc.unary_stream_rpc_method_handler),
        "stream_unary": (unary, grpc.stream_unary_rpc_method_handler),
        "stream_stream": (streaming, grpc.stream_stream_rpc_method_handler),
    }
    for attribute, (wrap, make) in kinds.items():
        behavior = getattr(handler, attribute)
        if behavior is not None:
            return make(
                wrap(behavior),
                request_deserializer=request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
