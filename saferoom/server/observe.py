"""Watching the server run: one log line and one metric per gRPC call, and the plain-HTTP metrics endpoint.

``RequestInterceptor`` (outermost) times every call and, when it ends, counts it in ``saferoom.metrics`` and
writes one line to the ``saferoom.requests`` logger: method, the identity the client certificate names (a
name, never a key or a secret), the gRPC status, saferoom's machine-readable error code (a fixed
catalogue), and the duration. Never the request, the response or an error message: a message may quote a user's
code or parameters, and nothing from a client or the data belongs in an operator's log line.

``JsonLines`` is the formatter of ``--log-format json``: one JSON object per line, with those fields as keys.

``MetricsEndpoint`` serves ``/metrics`` (Prometheus text), ``/healthz`` (the process answers) and ``/readyz``
(the server takes work: serving, the audit log writable) over plain HTTP on its own port, loopback by default.
It reads nothing from a request but its first line: any other method or path is 404/405, a silent client is
dropped after 5 s and any connection after 10 s in all, and at most 8 connections are served at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from saferoom.errors import ERROR_CODE_METADATA_KEY
from saferoom.metrics import Metrics
from saferoom.server.handlers import rewrap

__all__ = ["JsonLines", "MetricsEndpoint", "RequestInterceptor"]

_requests = logging.getLogger("saferoom.requests")
_log = logging.getLogger(__name__)
_FIELDS = ("method", "identity", "code", "error", "duration_ms")


def _who(context: grpc.ServicerContext) -> str:
    """The name the peer's certificate carries (the TLS handshake verified it was issued by our authority)."""
    names = context.auth_context().get("x509_common_name") or [b""]
    return str(names[0].decode("utf-8", "replace"))[:64]


def _outcome(context: grpc.ServicerContext, failed: bool) -> tuple[str, str]:
    code = context.code()
    if code is None:
        code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    error = ""
    for key, value in context.trailing_metadata() or ():
        if key == ERROR_CODE_METADATA_KEY:
            error = str(value)[:64]
    return code.name, error


class RequestInterceptor(grpc.ServerInterceptor):
    """Times and counts every call, and logs one line for it when it ends."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def _done(self, method: str, context: grpc.ServicerContext, began: float, failed: bool, code: str = "") -> None:
        seconds = time.perf_counter() - began
        status, error = _outcome(context, failed)
        status = code or status
        self._metrics.request(method, status, seconds)
        if _requests.isEnabledFor(logging.INFO):
            name = _who(context)
            fields = {
                "method": method,
                "identity": name,
                "code": status,
                "error": error,
                "duration_ms": round(seconds * 1000, 1),
            }
            _requests.info("%s %s %s %.1f ms", method, name or "-", status, seconds * 1000, extra={"call": fields})

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        done = self._done

        def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                began, failed = time.perf_counter(), True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    done(method, context, began, failed)

            return wrapped

        def streaming(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                began, failed, code = time.perf_counter(), True, ""
                try:
                    yield from behavior(request, context)
                    failed = False
                except GeneratorExit:  # the client went away (or the server is stopping)
                    code = "CANCELLED"
                    raise
                finally:
                    done(method, context, began, failed, code)

            return wrapped

        return rewrap(handler, unary, streaming)


class JsonLines(logging.Formatter):
    """One JSON object per log record: time, level, logger, message, and a request line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        call = getattr(record, "call", None)
        if isinstance(call, dict):
            line.update({k: call[k] for k in _FIELDS if k in call})
        else:
            line["message"] = record.getMessage()
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, sort_keys=True, ensure_ascii=False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    max_connections = 8

    def __init__(self, address: tuple[str, int], endpoint: MetricsEndpoint) -> None:
        self.endpoint = endpoint
        self.slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # too many at once: drop this one, keep serving the others
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("a metrics client's connection failed", exc_info=True)  # hostile or gone: not the operator's news

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5  # seconds a client may stay silent
    lifetime = 10.0  # seconds a connection may last in all (a client dribbling its headers byte by byte)
    server_version = "saferoom"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self._deadline = threading.Timer(self.lifetime, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):  # unblocks the read; the handler then ends
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):  # the client, or the deadline, closed it first
            super().finish()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        endpoint = self.server.endpoint
        if path == "/metrics":
            self._reply(200, endpoint.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            reason = endpoint.not_ready()
            self._reply(503 if reason else 200, (reason or "ready").encode() + b"\n")
        else:
            self._reply(404, b"not found\n")

    def do_HEAD(self) -> None:
        self._reply(405, b"")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD

    def _reply(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes are not requests of the service: no line per scrape


class MetricsEndpoint:
    """The plain-HTTP endpoint for Prometheus and probes, on its own thread."""

    def __init__(self, listen: str, metrics: Metrics, not_ready: Callable[[], str]) -> None:
        host, _, port = listen.rpartition(":")
        self.metrics = metrics
        self.not_ready = not_ready  # "" when ready, else why not (a fixed phrase)
        self._server = _Server((host.strip("[]") or "127.0.0.1", int(port)), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        if host not in ("127.0.0.1", "localhost", "[::1]", "::1"):
            _log.warning("the metrics endpoint listens on %s, not loopback: anyone who reaches it can scrape", listen)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
