"""The gRPC server: servicers, error mapping, bootstrap."""

from saferoom.server.app import SaferoomServer, create_server

__all__ = ["SaferoomServer", "create_server"]
