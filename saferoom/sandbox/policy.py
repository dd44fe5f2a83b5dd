"""The language policy for algorithm code: RestrictedPython's compiler, tightened, and the runtime guards.

Compile time refuses: syntax errors, names and attributes starting with ``_`` (RestrictedPython), class
definitions, ``yield`` (user generators), ``async``/``await``, ``global``/``nonlocal``, imports other than the
package's own modules, and known dangerous builtins by name. Run time allows attribute access only from a
per-type allow-list (API objects: their public methods; str: no ``format``/``format_map``), item access and
iteration only on plain containers, and writes only to containers the code created.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from types import CodeType
from typing import Any

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import RestrictingNodeTransformer

from saferoom.api import public_attributes
from saferoom.errors import CodeRefused, UserCodeError

__all__ = ["MAX_SOURCE_BYTES", "ModuleView", "Printed", "compile_package", "guards", "safe_builtins"]

MAX_SOURCE_BYTES = 1024 * 1024
MAX_PRINTED = 64 * 1024
MAX_RANGE = 10_000_000

# Never available to algorithm code; refused by name at compile time for a clear message.
FORBIDDEN_NAMES = frozenset(
    {
        "eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "hasattr", "vars", "dir", "globals",
        "locals", "type", "super", "object", "breakpoint", "input", "help", "memoryview", "classmethod",
        "staticmethod", "property", "exit", "quit", "id", "callable", "issubclass", "isinstance", "format",
        "printed", "bytearray", "frozenset",
    }
)  # fmt: skip


class SaferoomPolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy plus saferoom's refusals."""

    local_modules: frozenset[str] = frozenset()

    def _refuse(self, node: ast.AST, what: str) -> None:
        self.error(node, f"{what} are not allowed in algorithm code")

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self._refuse(node, "class definitions")
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self._refuse(node, "async functions")
        return node

    def visit_Await(self, node: ast.Await) -> ast.AST:
        self._refuse(node, "await expressions")
        return node

    def visit_Yield(self, node: ast.Yield) -> ast.AST:
        self._refuse(node, "generators (yield)")
        return node

    def visit_YieldFrom(self, node: ast.YieldFrom) -> ast.AST:
        self._refuse(node, "generators (yield from)")
        return node

    def visit_Global(self, node: ast.Global) -> ast.AST:
        self._refuse(node, "global statements")
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        self._refuse(node, "nonlocal statements")
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            if alias.name not in self.local_modules:
                self.error(node, f"import of {alias.name!r} is not allowed: only the package's own modules")
        return super().visit_Import(node)  # type: ignore[return-value]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level or node.module not in self.local_modules or any(a.name == "*" for a in node.names):
            self.error(node, f"import from {node.module!r} is not allowed: only the package's own modules")
        return super().visit_ImportFrom(node)  # type: ignore[return-value]

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in FORBIDDEN_NAMES:
            self.error(node, f"{node.id!r} is not available in algorithm code")
        return super().visit_Name(node)  # type: ignore[return-value]


_LINE = re.compile(r"^Line (\d+): (.*)$", re.S)


def _format_error(filename: str, message: str) -> str:
    match = _LINE.match(message)
    if match:
        return f"{filename}, line {match.group(1)}: {match.group(2)}"
    return f"{filename}: {message}"


def compile_package(files: Mapping[str, str]) -> dict[str, CodeType]:
    """Compile every file under the policy; CodeRefused lists every problem as 'file, line N: ...'."""
    if sum(len(s.encode("utf-8")) for s in files.values()) > MAX_SOURCE_BYTES:
        raise CodeRefused(f"the package's source is larger than {MAX_SOURCE_BYTES // 1024} KiB")
    modules = frozenset(name.removesuffix(".py").replace("/", ".") for name in files)
    policy = type("PackagePolicy", (SaferoomPolicy,), {"local_modules": modules})
    codes: dict[str, CodeType] = {}
    problems: list[str] = []
    for filename, source in sorted(files.items()):
        if "\x00" in source:
            problems.append(f"{filename}: contains a NUL character")
            continue
        try:
            result = compile_restricted_exec(source, filename=filename, policy=policy)
        except ImportError:  # not the code's fault: a module the zygote did not import (reported as what it is)
            raise
        except Exception:  # a construct RestrictedPython's transformer itself fails on: refuse, fail closed
            problems.append(f"{filename}: the code uses a construct the sandbox policy does not support")
            continue
        problems += [_format_error(filename, e) for e in result.errors]
        if result.code is not None and not result.errors:
            codes[filename] = result.code
    if problems:
        raise CodeRefused("; ".join(problems[:20]))
    return codes


# ----------------------------------------------------------------------------------------------- run time

SAFE_METHODS: dict[type, frozenset[str]] = {
    str: frozenset(
        {
            "capitalize", "casefold", "center", "count", "endswith", "find", "index", "isalnum", "isalpha",
            "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "join", "ljust", "lower",
            "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
            "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title",
            "upper", "zfill",
        }
    ),
    list: frozenset(
        {"append", "extend", "insert", "pop", "remove", "index", "count", "reverse", "sort", "copy", "clear"}
    ),
    dict: frozenset({"get", "items", "keys", "values", "pop", "setdefault", "update", "copy", "clear"}),
    tuple: frozenset({"count", "index"}),
    set: frozenset(
        {"add", "discard", "remove", "pop", "union", "intersection", "difference", "issubset", "issuperset",
         "copy", "clear", "update"}
    ),
    int: frozenset({"bit_length"}),
    float: frozenset({"is_integer"}),
}  # fmt: skip
_CONTAINERS = (list, tuple, dict, str, range)
_ITERABLE: tuple[type, ...] = (list, tuple, dict, str, range, set, type({}.keys()), type({}.values()), type({}.items()))
_ITERATOR_TYPES: tuple[type, ...] = (
    enumerate,
    zip,
    reversed,
    type(iter([])),
    type(iter(())),
    type(iter("")),
    type(iter(range(0))),
)
_WRITABLE = (list, dict, set)


class ModuleView:
    """What ``import helpers`` binds in algorithm code: a module's public top-level names, read-only."""

    __slots__ = ("_items", "_name")

    def __init__(self, name: str, scope: Mapping[str, Any]) -> None:
        self._name = name
        self._items = {k: v for k, v in scope.items() if not k.startswith("_")}

    def __getattr__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            raise UserCodeError(f"module {self._name!r} has no name {name!r}") from None

    def __repr__(self) -> str:
        return f"<module {self._name}>"


def guarded_getattr(obj: object, name: str, default: object = None) -> Any:
    """``obj.name`` for algorithm code: only allow-listed attributes of allow-listed types."""
    if type(name) is not str or name.startswith("_"):
        raise UserCodeError("attributes starting with '_' are not available")
    if type(obj) is ModuleView:
        return getattr(obj, name)
    allowed = public_attributes(obj)
    if allowed is None:
        allowed = SAFE_METHODS.get(type(obj), frozenset())
    if name not in allowed:
        raise UserCodeError(f"{type(obj).__name__} has no attribute {name[:40]!r} available to algorithm code")
    return getattr(obj, name)


def guarded_getitem(obj: object, key: object) -> Any:
    if type(obj) not in _CONTAINERS:
        raise UserCodeError(f"{type(obj).__name__} does not support [] in algorithm code")
    if type(key) is slice:
        for part in (key.start, key.stop, key.step):
            if part is not None and type(part) is not int:
                raise UserCodeError("slices take integers")
    return obj[key]  # type: ignore[index]


def guarded_iter(obj: object) -> Any:
    if type(obj) in _ITERABLE or type(obj) in _ITERATOR_TYPES:
        return iter(obj)  # type: ignore[call-overload]
    raise UserCodeError(f"{type(obj).__name__} cannot be iterated in algorithm code")


def guarded_write(obj: object) -> object:
    if type(obj) in _WRITABLE:
        return obj
    raise UserCodeError(f"{type(obj).__name__} cannot be modified by algorithm code")


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.add, "-=": operator.sub, "*=": operator.mul, "/=": operator.truediv, "//=": operator.floordiv,
    "%=": operator.mod, "**=": operator.pow, "&=": operator.and_, "|=": operator.or_, "^=": operator.xor,
}  # fmt: skip


def guarded_inplace(op: str, target: Any, value: Any) -> Any:
    fn = _INPLACE.get(op)
    if fn is None:
        raise UserCodeError(f"operator {op} is not available")
    return fn(target, value)


def guarded_apply(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def guarded_range(*args: object) -> range:
    ints = [a for a in args if type(a) is int]
    if len(ints) != len(args) or not 1 <= len(ints) <= 3:
        raise UserCodeError("range takes one to three integers")
    r = range(*ints)
    if len(r) > MAX_RANGE:
        raise UserCodeError(f"range of more than {MAX_RANGE:,} numbers")
    return r


class Printed:
    """Collects what algorithm code prints, bounded."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def text(self) -> str:
        return "".join(self.parts)

    def printer(self) -> Callable[..., Any]:
        collector = self

        class _Print:
            def __init__(self, _getattr_: object = None) -> None:
                pass

            def _call_print(self, *objects: object, **kwargs: object) -> None:
                sep, end = kwargs.pop("sep", " "), kwargs.pop("end", "\n")
                if kwargs or type(sep) is not str or type(end) is not str:
                    raise UserCodeError("print takes only sep= and end= strings")
                collector.write(sep.join(str(o) for o in objects) + end)

        return _Print

    def write(self, text: str) -> None:
        room = MAX_PRINTED - self.size
        if room <= 0:
            return
        piece = text[:room]
        self.parts.append(piece)
        self.size += len(piece)


def safe_builtins(importer: Callable[..., Any]) -> dict[str, Any]:
    """The builtins algorithm code gets."""
    import builtins as _b

    names = [
        "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "float", "int", "len", "list", "map", "filter",
        "pow", "repr", "reversed", "round", "set", "sorted", "str", "tuple", "zip", "True", "False", "None",
        "ArithmeticError", "Exception", "IndexError", "KeyError", "TypeError", "ValueError", "ZeroDivisionError",
        "min", "max", "sum", "chr", "ord", "hex", "bin", "oct",
    ]  # fmt: skip
    out = {name: getattr(_b, name) for name in names}
    out["range"] = guarded_range
    out["__import__"] = importer
    return out


def guards(printed: Printed) -> dict[str, Any]:
    """The guard functions RestrictedPython's compiled code calls."""
    return {
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": guarded_iter,
        "_write_": guarded_write,
        "_inplacevar_": guarded_inplace,
        "_apply_": guarded_apply,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_print_": printed.printer(),
    }
