"""The layers under the interpreter, each tested on its own with the layers above it switched off.

The attacker here is raw Python (no RestrictedPython at all: as if the interpreter-level sandbox had been
escaped) in a worker forked and confined exactly as the server's. Every attack is run against each kernel layer
alone and against all of them together; the test asserts that it failed, how (the errno says which layer),
that the canary never appeared in the output and that no marker was written.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferoom.sandbox import Limits, WorkerPool
from saferoom.sandbox.kernel import available_layers, landlock_abi

TASK = "tests.sandbox_tasks:attempt"
CANARY = f"canary-{uuid.uuid4().hex}"
HOST = available_layers()

# name -> (Limits overrides, network namespace)
CONFIGS = {
    "seccomp alone": ({"seccomp": True, "landlock": False}, False),
    "landlock alone": ({"seccomp": False, "landlock": True}, False),
    "network namespace alone": ({"seccomp": False, "landlock": False}, True),
    "all layers": ({"seccomp": True, "landlock": True}, True),
}


def needs(layer: str) -> None:
    if layer in HOST and not HOST[layer]:
        pytest.skip(f"this host cannot provide {layer}")


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[str, WorkerPool]]:
    made = {}
    try:
        for name, (overrides, netns) in CONFIGS.items():
            limits = Limits(memory_bytes=512 * 2**20, cpu_seconds=5, wall_seconds=10, **overrides)  # type: ignore[arg-type]
            made[name] = WorkerPool(
                name=name,
                initializer="tests.sandbox_tasks:initialize",
                init_args={},
                tasks=[TASK],
                limits=limits,
                network_namespace=netns,
            )
        yield made
    finally:
        for pool in made.values():
            pool.close()


@pytest.fixture(scope="module")
def arena() -> Iterator[Path]:
    """A world-readable canary and a world-writable directory: only the sandbox layers stand in the way
    (not file permissions: the worker runs as nobody)."""
    root = Path("/tmp") / f"saferoom-arena-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o755)
    (root / "canary.txt").write_text(CANARY)
    (root / "canary.txt").chmod(0o644)
    (root / "victim.txt").write_text("keep me")
    (root / "victim.txt").chmod(0o666)
    (root / "open").mkdir()
    (root / "open").chmod(0o777)
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def listener() -> Iterator[tuple[str, list[bytes]]]:
    """A TCP server on loopback recording whatever reaches it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                received.append(conn.recv(100) or b"(connected)")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}", received
    stop.set()
    thread.join()
    server.close()


def attempt(pool: WorkerPool, action: str, target: str = "") -> dict:
    return pool.run(TASK, {"action": action, "target": target}).data


# attack -> {layer config: the errno that proves that layer stopped it}
ATTACKS: dict[str, tuple[str, str, dict[str, int | None]]] = {
    "read a canary file": ("read_file", "canary.txt", {"seccomp alone": None, "landlock alone": errno.EACCES}),
    "write a marker file": (
        "write_file",
        "open/marker.txt",
        {"seccomp alone": errno.EPERM, "landlock alone": errno.EACCES},
    ),
    "delete a file": ("unlink", "victim.txt", {"seccomp alone": errno.EPERM, "landlock alone": errno.EACCES}),
    "make a directory": ("mkdir", "open/newdir", {"seccomp alone": errno.EPERM, "landlock alone": errno.EACCES}),
    "connect over TCP": (
        "connect_tcp",
        "LISTENER",
        {"seccomp alone": errno.EPERM, "landlock alone": errno.EACCES, "network namespace alone": errno.ENETUNREACH},
    ),
    "start a program": ("exec", "open/exec-marker.txt", {"seccomp alone": errno.EPERM, "landlock alone": errno.EACCES}),
    "start a process": ("fork", "", {"seccomp alone": errno.EPERM}),
    "trace the parent": ("ptrace_parent", "", {"seccomp alone": errno.EPERM}),
    "signal the parent": ("kill_parent", "", {"seccomp alone": errno.EPERM}),
    "make a user namespace": ("unshare_user", "", {"seccomp alone": errno.EPERM}),
    "mount a filesystem": ("mount_tmpfs", "open", {"seccomp alone": errno.EPERM}),
}


CASES = [(attack, config) for attack, (_, _, by) in sorted(ATTACKS.items()) for config in (*by, "all layers")]


@pytest.mark.parametrize(("attack", "config"), CASES, ids=[f"{a} / {c}" for a, c in CASES])
def test_each_kernel_layer_stops_the_attack_on_its_own(
    pools: dict[str, WorkerPool], arena: Path, listener: tuple[str, list[bytes]], attack: str, config: str
) -> None:
    action, target, expected = ATTACKS[attack]
    if config == "all layers":
        wanted: int | None = next(iter(v for v in expected.values() if v is not None), None)
    else:
        wanted = expected[config]
    needs({"seccomp alone": "seccomp", "landlock alone": "landlock"}.get(config, ""))
    if config == "all layers" and not all(pools[config].layers.values()):
        pytest.skip(f"this host lacks a layer: {pools[config].layers}")
    if config == "network namespace alone" and not pools[config].layers.get("network namespace"):
        pytest.skip("this host does not allow new network namespaces (no CAP_SYS_ADMIN)")
    if config == "landlock alone" and action == "connect_tcp" and landlock_abi() < 4:
        pytest.skip("Landlock restricts TCP from ABI 4 (Linux 6.7) on")
    address, received = listener
    resolved = address if target == "LISTENER" else str(arena / target) if target else ""
    outcome = attempt(pools[config], action, resolved)
    if wanted is None:  # seccomp allows reading files: the process layer (uid) or landlock must stop it
        assert outcome["outcome"] == "done" and outcome["value"] == CANARY  # documented: seccomp alone reads
        return
    assert outcome == {"outcome": "refused", "errno": wanted}, outcome
    assert CANARY not in str(outcome)
    assert not (arena / "open" / "marker.txt").exists() and not (arena / "open" / "exec-marker.txt").exists()
    assert not (arena / "open" / "newdir").exists() and (arena / "victim.txt").exists()
    assert received == []


def test_threads_still_work_under_every_layer(pools: dict[str, WorkerPool]) -> None:
    for pool in pools.values():
        assert attempt(pool, "thread") == {"outcome": "done", "value": "thread ran"}


def test_the_network_namespace_has_only_a_loopback(pools: dict[str, WorkerPool]) -> None:
    if not pools["network namespace alone"].layers.get("network namespace"):
        pytest.skip("this host does not allow new network namespaces")
    assert attempt(pools["network namespace alone"], "interfaces") == {"outcome": "done", "value": ["lo"]}


def test_the_process_layer_holds_without_any_kernel_layer(arena: Path) -> None:
    """No seccomp, no Landlock, no namespace: the unprivileged uid, no_new_privs and rlimits still hold.

    What this layer alone cannot stop is what file permissions allow nobody (e.g. creating an empty file in a
    world-writable directory: the file-size limit of 0 keeps it empty); the kernel layers above close that.
    """
    if os.geteuid() != 0:
        pytest.skip("the uid drop is tested when the server starts as root")
    limits = Limits(memory_bytes=512 * 2**20, cpu_seconds=5, wall_seconds=10, seccomp=False, landlock=False)
    with WorkerPool(
        name="process-only",
        initializer="tests.sandbox_tasks:initialize",
        init_args={},
        tasks=[TASK],
        limits=limits,
        network_namespace=False,
    ) as pool:
        assert attempt(pool, "setuid_root") == {"outcome": "refused", "errno": errno.EPERM}
        assert attempt(pool, "raise_rlimit") == {"outcome": "refused", "errno": errno.EPERM}
        private = arena / "private.txt"
        private.write_text(CANARY)
        private.chmod(0o600)  # root's
        assert attempt(pool, "read_file", str(private)) == {"outcome": "refused", "errno": errno.EACCES}
        assert attempt(pool, "write_file", str(private)) == {"outcome": "refused", "errno": errno.EACCES}
        assert private.read_text() == CANARY
        private.unlink()
        assert attempt(pool, "write_file", str(arena / "open" / "filled.txt")) == {
            "outcome": "refused",
            "errno": errno.EFBIG,  # RLIMIT_FSIZE = 0: not one byte
        }
        assert (arena / "open" / "filled.txt").read_bytes() == b""
        (arena / "open" / "filled.txt").unlink()


def test_the_host_reports_its_layers(pools: dict[str, WorkerPool]) -> None:
    layers = pools["all layers"].layers
    assert set(layers) == {"seccomp", "landlock", "network namespace"}
    assert pools["seccomp alone"].layers["landlock"] is False  # switched off is reported as off


def test_landlock_hides_the_checkout_and_the_working_directory(pools: dict[str, WorkerPool]) -> None:
    """Workers read the interpreter and the saferoom package, not whatever else is on sys.path (an editable
    install puts the whole checkout there, and a state directory may sit inside it)."""
    if not pools["landlock alone"].layers["landlock"]:
        pytest.skip("this host cannot provide landlock")
    repo_file = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert attempt(pools["landlock alone"], "read_file", str(repo_file)) == {
        "outcome": "refused",
        "errno": errno.EACCES,
    }
    package_file = Path(__file__).resolve().parents[2] / "saferoom" / "__init__.py"
    assert attempt(pools["landlock alone"], "read_file", str(package_file))["outcome"] == "done"


def test_the_state_directory_is_the_servers_alone(server) -> None:
    state = server.database.path.parent
    assert state.stat().st_mode & 0o777 == 0o700
