"""The sandbox task: run an algorithm package's entry point under the policy and return the plans it built.

Runs inside a confined worker forked from the sandbox zygote, which holds no data: the algorithm can only build
plans over opaque tables. Errors name the line of the algorithm's own code and never host paths or frames.
"""

from __future__ import annotations

import re
import sys
import traceback
from types import CodeType, FunctionType
from typing import Any

from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog.manifest import Column, DatasetInfo, Manifest
from saferoom.errors import CodeRefused, InvalidRequest, LimitExceeded, SaferoomError, UserCodeError
from saferoom.sandbox.policy import ModuleView, Printed, compile_package, guards, safe_builtins

__all__ = ["SANDBOX_TASKS", "check_code", "run_algorithm", "sandbox_initializer", "warm_worker"]

SANDBOX_TASKS = ["saferoom.sandbox.runner:run_algorithm", "saferoom.sandbox.runner:check_code"]
RECURSION_LIMIT = 400
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def sandbox_initializer() -> None:
    """Zygote initializer: import everything a job needs, so forked workers start warm.

    Workers drop privileges before running code and may then be unable to read the interpreter's files, so
    every module a job can need is imported here: unicodedata, for one, is loaded lazily by the parser for
    non-ASCII identifiers.
    """
    import encodings.ascii  # noqa: F401  (loaded by the first ASCII codec use in a worker, measured)
    import unicodedata

    import RestrictedPython  # noqa: F401

    import saferoom.api  # noqa: F401

    compile_package({"warm.py": "def f(x):\n    return [i for i in x]\n"})
    unicodedata.normalize("NFKC", "\uff57\uff41\uff52\uff4d")


# What a spare worker runs before it is given a task (``warm_worker``): a package and a catalog of constants.
_WARM_PACKAGE = {
    "main.py": (
        "def run(ctx):\n"
        "    t = ctx.table('warm')\n"
        "    names = [c for c in t.columns]\n"
        "    print('columns', len(names))\n"
        "    kept = t.filter(col('v') >= 0).with_columns(w=col('v') * 2)\n"
        "    return {'cells': kept.group_by('k').agg(n=count(), s=sum('w')), 'rows': t.agg(n=count()), 'c': 1}\n"
    ),
}
_WARM_MANIFEST = Manifest(
    "warm",
    {"warm": DatasetInfo("warm", "", "warm.arrow", 3, "public", (Column("k", "string"), Column("v", "float64")))},
)


def warm_worker(state: None) -> None:
    """A spare worker's warm-up, before it is given any task: compile and run a package of constants through the
    task's own path, so that the copy-on-write faults of its first touches of the zygote's memory are paid off
    the job's path. Its outputs are dropped; the worker still serves exactly one task."""
    request = {"files": _WARM_PACKAGE, "entrypoint": "main.py:run", "params": {}, "datasets": ["warm"]}
    run_algorithm(state, {**request, "manifest": _WARM_MANIFEST.to_data()}, [])


class _Modules:
    """Executes the package's modules on first import, each in its own restricted globals."""

    def __init__(self, codes: dict[str, CodeType], printed: Printed) -> None:
        self._codes = {name.removesuffix(".py").replace("/", "."): code for name, code in codes.items()}
        self._printed = printed
        self._done: dict[str, dict[str, Any]] = {}
        self._loading: set[str] = set()

    def globals_of(self, module: str) -> dict[str, Any]:
        if module in self._done:
            return self._done[module]
        if module in self._loading:
            raise UserCodeError(f"circular import of {module!r}")
        if module not in self._codes:
            raise UserCodeError(f"no module {module!r} in the package")
        self._loading.add(module)
        scope: dict[str, Any] = {
            "__builtins__": safe_builtins(self.importer),
            "__name__": module,
            **guards(self._printed),
            **namespace(),
        }
        exec(self._codes[module], scope)
        self._loading.discard(module)
        self._done[module] = scope
        return scope

    def importer(
        self, name: str, globals: object = None, locals: object = None, fromlist: object = (), level: int = 0
    ) -> Any:
        if type(name) is not str or level != 0:
            raise UserCodeError("only the package's own modules can be imported")
        scope = self.globals_of(name)
        return ModuleView(name, scope)


def _user_line(exc: BaseException, files: set[str]) -> str:
    """'main.py, line 7' for the innermost frame of the algorithm's own code."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename in files:
            where = f"{frame.filename}, line {frame.lineno}"
    return where


def _clean(text: str) -> str:
    return _ADDRESS.sub("0x…", text)[:2000]


def check_code(state: None, request: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """Compile every file of a submitted package under the policy, without running any of it.

    Done in a confined worker rather than in the server, because the parser itself meets hostile input here.
    """
    files = request.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise InvalidRequest("malformed sandbox request")
    sys.setrecursionlimit(RECURSION_LIMIT * 10)
    try:
        compile_package(files)
    except RecursionError:
        raise CodeRefused("the code is nested too deeply") from None
    return {"files": len(files)}, []


def run_algorithm(state: None, request: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """Compile and run the package; reply with its outputs as plan data and what it printed."""
    files = request.get("files")
    entrypoint = request.get("entrypoint")
    params = request.get("params")
    datasets = request.get("datasets")
    if not (
        isinstance(files, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        and isinstance(entrypoint, str)
        and isinstance(params, dict)
        and isinstance(datasets, list)
    ):
        raise InvalidRequest("malformed sandbox request")
    manifest = Manifest.from_data(request["manifest"])
    entry_file, _, entry_fn = entrypoint.partition(":")
    codes = compile_package(files)
    printed = Printed()
    modules = _Modules(codes, printed)
    names = set(files)
    sys.setrecursionlimit(RECURSION_LIMIT)
    try:
        scope = modules.globals_of(entry_file.removesuffix(".py").replace("/", "."))
        fn = scope.get(entry_fn)
        if type(fn) is not FunctionType:
            raise CodeRefused(f"{entry_file} defines no function {entry_fn!r}")
        result = fn(Context(manifest, datasets), **params)
        outputs = export_outputs(result)
    except (CodeRefused, LimitExceeded) as exc:
        where = _user_line(exc, names)
        raise type(exc)(f"{where}: {exc.message}" if where else exc.message) from None
    except SaferoomError as exc:
        where = _user_line(exc, names)
        raise UserCodeError(_clean(f"{where}: {exc.message}" if where else exc.message)) from None
    except MemoryError:
        raise
    except RecursionError:
        raise UserCodeError("recursion too deep") from None
    except Exception as exc:
        where = _user_line(exc, names) or entry_file
        raise UserCodeError(_clean(f"{where}: {type(exc).__name__}: {exc}")) from None
    return {"outputs": outputs, "printed": printed.text()}, []
