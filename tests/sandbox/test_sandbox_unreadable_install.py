"""Python installed where the unprivileged worker user cannot even look (a pyenv in root's home, a 0700
directory): workers drop to uid 65534 before they run a task, so anything they import after that fails.

The test builds such an install for real: a venv with copied binaries, the dependencies hard-linked into it (so
that they are reachable only through the locked directory) and saferoom's source copied beside it, all under a
root-owned 0700 directory; then runs the README's first command there (``saferoom demo``) and the start-up
self-test against a zygote that imported nothing, which must name the module a worker could not import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="workers drop privileges only when the server runs as root")

# A server whose sandbox zygote "forgot" unicodedata (the parser loads it lazily for a non-ASCII identifier):
# the start-up self-test's probe package has one, so the server must refuse to start and say which module.
FORGETFUL_SERVER = """
import sys
from pathlib import Path
from saferoom.catalog import generate_catalog
from saferoom.config import ServerConfig
from saferoom.identity import init_authority
from saferoom.sandbox.selftest import SelfTestFailed
from saferoom.server import create_server

root = Path(sys.argv[1])
generate_catalog(root / "data", scale=1000, seed=7)
init_authority(root / "pki")
config = ServerConfig.load(env={}, data_dir=root / "data", state_dir=root / "state", pki_dir=root / "pki",
                           listen="127.0.0.1:0")
try:
    server, _ = create_server(config)
except SelfTestFailed as exc:
    print("REFUSED:", exc.message)
else:
    server.stop(1.0)
    print("STARTED")
"""

UNWARMED_SELF_TEST = """
from saferoom.sandbox import WorkerPool
from saferoom.sandbox.selftest import Probe, SelfTestFailed, run_self_test

with WorkerPool(name="cold", initializer="tests.sandbox_tasks:initialize", init_args={},
                tasks=["tests.sandbox_tasks:nulls_to_numpy"]) as pool:
    try:
        run_self_test(pool, [Probe("tests.sandbox_tasks:nulls_to_numpy", {}, lambda reply: None)])
    except SelfTestFailed as exc:
        print("REFUSED:", exc.message)
    else:
        print("PASSED")
"""


@pytest.fixture(scope="module")
def locked_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(python, environment) of an install under a 0700 directory owned by root."""
    locked = tmp_path_factory.mktemp("locked")
    locked.chmod(0o700)
    venv = locked / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--copies", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    source = Path(sysconfig.get_paths()["purelib"])
    for entry in source.iterdir():  # hard links: instant, and reachable only through the locked directory
        if entry.name.startswith("__editable__") or entry.name.endswith(".pth"):
            continue  # the editable install points back at the checkout
        destination = target / entry.name
        if entry.is_dir():
            shutil.copytree(entry, destination, copy_function=os.link, symlinks=True)
        else:
            os.link(entry, destination)
    src = locked / "src"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "saferoom", src / "saferoom", ignore=ignore)
    shutil.copytree(REPO / "algorithms", src / "algorithms", ignore=ignore)
    (src / "tests").mkdir()
    shutil.copy(REPO / "tests" / "sandbox_tasks.py", src / "tests" / "sandbox_tasks.py")
    forgetful = locked / "forgetful"
    shutil.copytree(src, forgetful)
    runner = forgetful / "saferoom" / "sandbox" / "runner.py"
    text = runner.read_text()
    warm = '    unicodedata.normalize("NFKC", "\\uff57\\uff41\\uff52\\uff4d")\n'
    assert "    import unicodedata\n" in text and warm in text
    runner.write_text(text.replace("    import unicodedata\n", "").replace(warm, ""))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONPATH": str(src)}
    return python, env


def _nobody_can_reach(path: Path) -> bool:
    probe = subprocess.run(
        ["/bin/sh", "-c", f"test -r '{path}'"], user=NOBODY, group=NOBODY, extra_groups=[], check=False
    )
    return probe.returncode == 0


def test_the_install_is_really_out_of_the_worker_users_reach(
    locked_install: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    python, env = locked_install
    assert _nobody_can_reach(Path("/bin/sh"))
    assert not _nobody_can_reach(python)
    found = subprocess.run(
        [str(python), "-c", "import pyarrow, saferoom; print(pyarrow.__file__); print(saferoom.__file__)"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert found and not any(_nobody_can_reach(Path(f)) for f in found), found
    assert all(f.startswith(str(python.parent.parent.parent)) for f in found), found


def test_saferoom_demo_runs_from_an_install_the_worker_user_cannot_enter(
    locked_install: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    python, env = locked_install
    result = subprocess.run(
        [str(python), "-c", "from saferoom.cli.main import main; main()", "demo", "--scale", "5000"],
        env={**env, "COLUMNS": "160"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    assert "run out of memory" not in result.stdout + result.stderr
    assert "ModuleNotFoundError" not in result.stdout + result.stderr


def test_the_self_test_names_a_module_a_cold_zygote_left_for_its_workers(
    locked_install: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A zygote that imported nothing: its confined worker cannot import pyarrow from the locked install, and the
    self-test refuses with the module's name instead of passing (or blaming memory)."""
    python, env = locked_install
    result = subprocess.run(
        [str(python), "-c", UNWARMED_SELF_TEST], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REFUSED:" in result.stdout, result.stdout
    assert "ModuleNotFoundError for module 'pyarrow'" in result.stdout, result.stdout
    assert "tests.sandbox_tasks:nulls_to_numpy" in result.stdout


def test_a_server_whose_zygote_missed_an_import_refuses_to_start_and_names_it(
    locked_install: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    python, env = locked_install
    forgetful = {**env, "PYTHONPATH": str(python.parent.parent.parent / "forgetful")}
    result = subprocess.run(
        [str(python), "-c", FORGETFUL_SERVER, str(tmp_path)],
        env=forgetful,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REFUSED: start-up self-test failed: the sandbox pool's task saferoom.sandbox.runner:" in result.stdout
    assert "ModuleNotFoundError for module 'unicodedata'" in result.stdout, result.stdout
