"""Running the console: bind 127.0.0.1 (port 0: any free port), print the one-time login URL, serve."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import uvicorn

from saferoom.client import Client, Profile
from saferoom.console.app import Console, create_app, profile_roles
from saferoom.console.security import SessionKeys

__all__ = ["ConsoleServer"]


class ConsoleServer:
    """One console on 127.0.0.1: ``url`` logs in once; ``start()`` serves in a thread, ``run()`` in this one."""

    def __init__(
        self,
        profile: Profile,
        *,
        port: int = 0,
        server: str | None = None,
        checkpoints_dir: Path | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.keys = SessionKeys()
        self.client = Client.from_profile(profile, server=server, timeout=timeout)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(128)  # from now on connections wait in the backlog until serving starts
        self.port: int = self._socket.getsockname()[1]
        console = Console(
            self.client,
            profile.name,
            profile_roles(profile),
            self.keys,
            checkpoints_dir or Path.home() / ".local" / "share" / "saferoom" / "checkpoints",
        )
        config = uvicorn.Config(
            create_app(console, self.port), log_level="warning", access_log=False, server_header=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The login URL (its token works once)."""
        return f"http://127.0.0.1:{self.port}/login?token={self.keys.token}"

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C)."""
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        finally:
            self.close()

    def start(self) -> ConsoleServer:
        """Serve in a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.run, name="saferoom-console", daemon=True)
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                break
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def close(self) -> None:
        self._socket.close()
        self.client.close()
