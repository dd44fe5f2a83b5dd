"""A Spark Connect server on loopback, started from the pip-installed pyspark (tests, benchmarks, demos).

Production points saferoom at an existing cluster's Connect endpoint instead (``spark_connect`` in the server
configuration); nothing here runs there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

__all__ = ["LocalConnectServer", "free_port", "spark_home"]

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def spark_home() -> Path:
    """The Spark distribution bundled with the pyspark package (jars, bin/spark-submit)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalConnectServer:
    """One Spark Connect server process bound to 127.0.0.1 (``master``: ``local[N]`` or ``spark://...``)."""

    def __init__(
        self, log: Path, master: str = "local[2]", port: int | None = None, conf: dict[str, str] | None = None
    ) -> None:
        if shutil.which("java") is None and "JAVA_HOME" not in os.environ:
            raise RuntimeError("Spark needs Java 17: install a JRE (e.g. apt-get install openjdk-17-jre-headless)")
        self.port = port or free_port()
        self.url = f"sc://127.0.0.1:{self.port}"
        home = spark_home()
        settings = {
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(self.port),
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.sql.adaptive.enabled": "true",
            **(conf or {}),
        }
        command = [str(home / "bin" / "spark-submit"), "--master", master, "--class", SERVER_CLASS]
        for key, value in settings.items():
            command += ["--conf", f"{key}={value}"]
        env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": "false"}
        # posix_spawn rather than Popen: the server may outlive this object (tests hand it over between
        # processes), and its own session makes it a process group that stop() can end as a whole.
        with log.open("wb") as out:
            self.pid = os.posix_spawn(
                command[0],
                command,
                env,
                file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1), (os.POSIX_SPAWN_DUP2, out.fileno(), 2)],
                setsid=True,
            )
        self._status: int | None = None

    def _exited(self) -> bool:
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status is not None

    def wait(self, timeout: float = 120.0) -> LocalConnectServer:
        """Block until the server accepts connections; raises RuntimeError if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._exited():
                raise RuntimeError(f"the Spark Connect server exited with status {self._status}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Spark Connect server did not start within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server and everything it started (idempotent)."""
        if self._exited():
            return
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not self._exited() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not self._exited():
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self._status = -signal.SIGKILL
