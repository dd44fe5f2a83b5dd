"""Expressions as algorithm code writes them: ``col("age") >= 18``, ``when(...).otherwise(...)``, aggregates.

Every class here is an opaque proxy around plan data: its state lives in underscore slots that algorithm code
cannot name, and it never calls back into objects it receives (arguments are checked by exact type).
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from saferoom.engine import plan
from saferoom.errors import LimitExceeded, UserCodeError

__all__ = ["AggregateExpr", "Expr", "When", "as_expr", "check_name", "literal"]

MAX_EXPR_SIZE = 10_000
MAX_IS_IN = 1000
MAX_STRING = 65_536
_LITERAL_TYPES = (bool, int, float, str, type(None))


def check_name(name: object, what: str = "column name") -> str:
    """A column or output name from algorithm code: a plain identifier, not starting with '_'."""
    if type(name) is not str:
        raise UserCodeError(f"a {what} must be a string, got {type(name).__name__}")
    if not name or len(name) > 128 or not (name[0].isascii() and name[0].isalpha()):
        raise UserCodeError(f"{what} {name[:40]!r} must start with a letter and have at most 128 characters")
    if not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
        raise UserCodeError(f"{what} {name[:40]!r} may contain only ASCII letters, digits and '_'")
    return name


def literal(value: object) -> plan.Lit:
    """A Python value from algorithm code as a literal (exact types only; floats must be finite)."""
    kind = type(value)
    if kind not in _LITERAL_TYPES:
        raise UserCodeError(f"expected a number, string, bool or None, got {kind.__name__}")
    if kind is float and not math.isfinite(value):  # type: ignore[arg-type]
        raise UserCodeError("float literals must be finite")
    if kind is int and not -(2**63) <= value < 2**63:  # type: ignore[operator]
        raise UserCodeError("integer literals must fit in 64 bits")
    if kind is str and len(value) > MAX_STRING:  # type: ignore[arg-type]
        raise UserCodeError(f"string literals are at most {MAX_STRING} characters")
    return plan.Lit(value)  # type: ignore[arg-type]


def as_expr(value: object, what: str = "argument") -> Expr:
    """An Expr from an Expr, a column name (str means a column here) or a Python literal."""
    if type(value) is Expr:
        return value
    if type(value) is str:
        return Expr(plan.Col(check_name(value)), 1)
    if type(value) in _LITERAL_TYPES:
        return Expr(literal(value), 1)
    raise UserCodeError(f"{what} must be an expression, a column name or a number, got {type(value).__name__}")


def _operand(value: object) -> Expr:
    """The other side of an operator: an Expr or a Python literal (a str is a string literal here)."""
    if type(value) is Expr:
        return value
    if type(value) in _LITERAL_TYPES:
        return Expr(literal(value), 1)
    raise UserCodeError(f"cannot combine an expression with {type(value).__name__}")


def _call(fn: str, *args: Expr) -> Expr:
    size = 1 + sum(a._size for a in args)
    if size > MAX_EXPR_SIZE:
        raise LimitExceeded(f"expression has more than {MAX_EXPR_SIZE} parts")
    return Expr(plan.Call(fn, tuple(a._node for a in args)), size)


class Expr:
    """A column expression. Combine with operators; ``&``, ``|``, ``~`` for logic."""

    __slots__ = ("_node", "_size")

    def __init__(self, node: plan.Expr, size: int) -> None:
        self._node = node
        self._size = size

    def __add__(self, other: object) -> Expr:
        return _call("add", self, _operand(other))

    def __radd__(self, other: object) -> Expr:
        return _call("add", _operand(other), self)

    def __sub__(self, other: object) -> Expr:
        return _call("sub", self, _operand(other))

    def __rsub__(self, other: object) -> Expr:
        return _call("sub", _operand(other), self)

    def __mul__(self, other: object) -> Expr:
        return _call("mul", self, _operand(other))

    def __rmul__(self, other: object) -> Expr:
        return _call("mul", _operand(other), self)

    def __truediv__(self, other: object) -> Expr:
        return _call("div", self, _operand(other))

    def __rtruediv__(self, other: object) -> Expr:
        return _call("div", _operand(other), self)

    def __floordiv__(self, other: object) -> Expr:
        return _call("floor", _call("div", self, _operand(other)))

    def __rfloordiv__(self, other: object) -> Expr:
        return _call("floor", _call("div", _operand(other), self))

    def __mod__(self, other: object) -> Expr:
        return _call("mod", self, _operand(other))

    def __rmod__(self, other: object) -> Expr:
        return _call("mod", _operand(other), self)

    def __pow__(self, other: object) -> Expr:
        return _call("pow", self, _operand(other))

    def __rpow__(self, other: object) -> Expr:
        return _call("pow", _operand(other), self)

    def __neg__(self) -> Expr:
        return _call("neg", self)

    def __pos__(self) -> Expr:
        return self

    def __abs__(self) -> Expr:
        return _call("abs", self)

    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        return _call("eq", self, _operand(other))

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
        return _call("ne", self, _operand(other))

    def __lt__(self, other: object) -> Expr:
        return _call("lt", self, _operand(other))

    def __le__(self, other: object) -> Expr:
        return _call("le", self, _operand(other))

    def __gt__(self, other: object) -> Expr:
        return _call("gt", self, _operand(other))

    def __ge__(self, other: object) -> Expr:
        return _call("ge", self, _operand(other))

    def __and__(self, other: object) -> Expr:
        return _call("and", self, _operand(other))

    def __rand__(self, other: object) -> Expr:
        return _call("and", _operand(other), self)

    def __or__(self, other: object) -> Expr:
        return _call("or", self, _operand(other))

    def __ror__(self, other: object) -> Expr:
        return _call("or", _operand(other), self)

    def __invert__(self) -> Expr:
        return _call("not", self)

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> NoReturn:
        raise UserCodeError("an expression has no truth value here: use & | ~ (not and/or/not) and filter()")

    def __iter__(self) -> NoReturn:
        raise UserCodeError("an expression cannot be iterated: its values are never available to algorithm code")

    def __repr__(self) -> str:
        node = self._node
        if isinstance(node, plan.Col):
            return f"col({node.name!r})"
        if isinstance(node, plan.Lit):
            return f"lit({node.value!r})"
        return f"<expression {node.fn}(...)>"

    def abs(self) -> Expr:
        return _call("abs", self)

    def is_in(self, values: object) -> Expr:
        """True where the value is one of ``values`` (a list or tuple of literals)."""
        if type(values) not in (list, tuple):
            raise UserCodeError("is_in needs a list of values")
        items = list(values)  # type: ignore[call-overload]
        if not 1 <= len(items) <= MAX_IS_IN:
            raise UserCodeError(f"is_in takes 1 to {MAX_IS_IN} values")
        return _call("is_in", self, *(Expr(literal(v), 1) for v in items))

    def between(self, low: object, high: object) -> Expr:
        """True where low <= value <= high."""
        return _call("between", self, _operand(low), _operand(high))

    def is_null(self) -> Expr:
        return _call("is_null", self)

    def round(self, ndigits: object = 0) -> Expr:
        if type(ndigits) is not int or not -15 <= ndigits <= 15:
            raise UserCodeError("round: ndigits must be an integer between -15 and 15")
        return _call("round", self, Expr(plan.Lit(ndigits), 1))

    def floor(self) -> Expr:
        return _call("floor", self)

    def ceil(self) -> Expr:
        return _call("ceil", self)

    def clip(self, low: object, high: object) -> Expr:
        """The value limited to [low, high] (literal numbers). On differentially private datasets a sum, mean or
        quantile of a computed value needs such public bounds: they decide how much noise it gets."""
        for bound in (low, high):
            if type(bound) not in (int, float) or not math.isfinite(bound):  # type: ignore[arg-type]
                raise UserCodeError("clip: low and high must be finite numbers")
        if low > high:  # type: ignore[operator]
            raise UserCodeError("clip: low must not be greater than high")
        return _call("clamp", self, Expr(literal(low), 1), Expr(literal(high), 1))

    def cast(self, to: object) -> Expr:
        """Convert to "int", "float" or "str"."""
        fn = {"int": "cast_int", "float": "cast_float", "str": "cast_str"}.get(to) if type(to) is str else None
        if fn is None:
            raise UserCodeError('cast: the type must be "int", "float" or "str"')
        return _call(fn, self)


class When:
    """``when(cond, value).when(cond, value).otherwise(value)``: the first true condition wins."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: tuple[tuple[Expr, Expr], ...]) -> None:
        self._pairs = pairs

    def when(self, condition: object, value: object) -> When:
        if len(self._pairs) >= 100:
            raise UserCodeError("at most 100 when() branches")
        return When((*self._pairs, (as_expr(condition, "condition"), _operand(value))))

    def otherwise(self, value: object) -> Expr:
        args: list[Expr] = []
        for condition, result in self._pairs:
            args += [condition, result]
        return _call("case", *args, _operand(value))

    def __bool__(self) -> NoReturn:
        raise UserCodeError("finish when(...) with .otherwise(value)")

    def __repr__(self) -> str:
        return f"<when with {len(self._pairs)} branches>"


class AggregateExpr:
    """An aggregate (``count()``, ``mean("income")``...): only meaningful inside ``agg(...)``."""

    __slots__ = ("_agg", "_size")

    def __init__(self, agg: plan.AggExpr, size: int) -> None:
        self._agg = agg
        self._size = size

    def __bool__(self) -> NoReturn:
        raise UserCodeError("an aggregate has no value in algorithm code; use it inside agg(...)")

    def __repr__(self) -> str:
        return f"<aggregate {self._agg.fn}>"


def make_aggregate(fn: str, value: Any = None, q: float | None = None) -> AggregateExpr:
    """Build an aggregate over a column name or expression (None only for count)."""
    if value is None:
        return AggregateExpr(plan.AggExpr(fn, None, q), 1)
    expr = as_expr(value, f"the argument of {fn}")
    return AggregateExpr(plan.AggExpr(fn, expr._node, q), expr._size + 1)
