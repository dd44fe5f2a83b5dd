"""Hostile algorithms, each with the layer that must stop it. These tests stay forever.

Layers: "compile" = RestrictedPython + saferoom's compile policy (CodeRefused); "guard" = runtime guards and the
API's own checks (UserCodeError); "limit" = OS limits of the worker (LimitExceeded / JobTimeout).
"""

from __future__ import annotations

import pytest

from saferoom.errors import CodeRefused, JobTimeout, LimitExceeded, UserCodeError
from tests.redteam.conftest import CANARY_TEXT

COMPILE, GUARD, LIMIT = CodeRefused, UserCodeError, (LimitExceeded, JobTimeout)


def body(code: str) -> str:
    """Wrap statements into run(ctx) and return a harmless value."""
    lines = "\n".join("    " + line for line in code.strip().splitlines())
    return f"def run(ctx):\n{lines}\n    return {{'ok': 1}}\n"


ATTACKS = [
    # --- imports and dangerous builtins
    ("import_os", "import os\n" + body("x = 1"), COMPILE, "import of 'os'"),
    ("import_socket", "import socket\n" + body("x = 1"), COMPILE, "import of 'socket'"),
    ("import_subprocess", body("import subprocess"), COMPILE, "import of 'subprocess'"),
    ("from_import_string_formatter", "from string import Formatter\n" + body("x = 1"), COMPILE, "import from"),
    ("dunder_import", body("m = __import__('os')"), COMPILE, "_"),
    ("open_file", body("f = open('/etc/passwd')"), COMPILE, "'open' is not available"),
    ("eval", body("eval('1+1')"), COMPILE, "'eval' is not available"),
    ("exec", body("exec('x = 1')"), COMPILE, "'exec' is not available"),
    ("compile", body("compile('1', 'x', 'eval')"), COMPILE, "'compile' is not available"),
    ("getattr_builtin", body("getattr(ctx, 'table')"), COMPILE, "'getattr' is not available"),
    ("vars", body("vars(ctx)"), COMPILE, "'vars' is not available"),
    ("dir", body("dir(ctx)"), COMPILE, "'dir' is not available"),
    ("type_builtin", body("t = type(ctx)"), COMPILE, "'type' is not available"),
    ("globals", body("g = globals()"), COMPILE, "'globals' is not available"),
    ("breakpoint", body("breakpoint()"), COMPILE, "'breakpoint' is not available"),
    ("printed_name", body("x = printed"), COMPILE, "'printed'"),
    # --- underscore attributes: frames, globals, subclasses
    ("private_slot", body("m = ctx._manifest"), COMPILE, "_manifest"),
    ("function_globals", body("g = col.__globals__"), COMPILE, "__globals__"),
    ("subclasses_walk", body("s = ().__class__.__bases__[0].__subclasses__()"), COMPILE, "__class__"),
    ("bound_method_self", body("s = ctx.table.__self__"), COMPILE, "__self__"),
    ("code_object", body("c = (lambda: 0).__code__"), COMPILE, "__code__"),
    (
        "traceback_frames",
        body("try:\n    1 / 0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame"),
        COMPILE,
        "__traceback__",
    ),
    ("generator_function", "def g():\n    yield 1\n" + body("x = 1"), COMPILE, "generators"),
    ("generator_frame_gi_frame", body("g = (x for x in [1])\nf = g.gi_frame"), COMPILE, "gi_frame"),
    ("generator_frame_f_back", body("g = (x for x in [1])\nf = g.gi_frame.f_back.f_globals"), COMPILE, "f_back"),
    ("generator_attribute_guard", body("g = (x for x in [1])\nf = g.send"), GUARD, "send"),
    (
        "exception_with_traceback",
        body("try:\n    1 / 0\nexcept Exception as e:\n    e.with_traceback(None)"),
        GUARD,
        "with_traceback",
    ),
    ("exception_args", body("try:\n    1 / 0\nexcept Exception as e:\n    a = e.args"), GUARD, "args"),
    ("async_function", "async def f():\n    pass\n" + body("x = 1"), COMPILE, "async"),
    ("class_definition", "class Evil:\n    pass\n" + body("x = 1"), COMPILE, "class definitions"),
    ("metaclass", "class M(type):\n    pass\n" + body("x = 1"), COMPILE, "class definitions"),
    ("global_statement", "x = 1\ndef run(ctx):\n    global x\n    return {'x': x}\n", COMPILE, "global"),
    # --- format-string traversal (CVE-2023-41039, CVE-2024-47532)
    ("str_format_attribute", body("s = '{0.__class__}'.format(1)"), GUARD, "format"),
    ("str_format_map", body("s = '{x}'.format_map({'x': 1})"), GUARD, "format_map"),
    ("str_format_unbound", body("s = str.format('{0.__class__}', 1)"), GUARD, "format"),
    ("fstring_underscore", body("s = f'{ctx._manifest}'"), COMPILE, "_manifest"),
    ("format_builtin", body("s = format(ctx, '')"), COMPILE, "'format' is not available"),
    # --- identifiers and guard names
    ("fullwidth_open", body("f = \uff4f\uff50\uff45\uff4e('/etc/passwd')"), COMPILE, "'open' is not available"),
    ("fullwidth_underscore", body("m = ctx.\uff3fmanifest"), COMPILE, "invalid character"),
    ("fullwidth_dunder_import", body("m = \uff3f\uff3fimport\uff3f\uff3f('os')"), COMPILE, "invalid character"),
    (
        "positional_only_guard_shadow",
        "def f(_getattr_=None, /):\n    return 1\n" + body("x = f()"),
        COMPILE,
        "_getattr_",
    ),
    ("walrus_guard_name", body("(_getattr_ := 1)"), COMPILE, "_getattr_"),
    ("assign_guard_name", body("_getiter_ = list"), COMPILE, "_getiter_"),
    ("except_star_type_confusion", body("try:\n    x = 1\nexcept* ValueError:\n    pass"), COMPILE, ""),
    # --- the API used against itself
    ("undeclared_dataset", body("t = ctx.table('housing_transactions')"), GUARD, "not declared"),
    ("path_as_dataset", body("t = ctx.table('../../etc/passwd')"), GUARD, "not declared"),
    ("hidden_column", body("t = ctx.table('population').select(col('__u1'))"), GUARD, "must start with a letter"),
    (
        "hidden_column_kwargs",
        body("t = ctx.table('population').with_columns(**{'__c1': lit(1)})"),
        GUARD,
        "must start with a letter",
    ),
    ("branch_on_data", body("if col('income') > 100000:\n    x = 1"), GUARD, "no truth value"),
    ("iterate_table", body("rows = list(ctx.table('population'))"), GUARD, "cannot be iterated"),
    ("len_table", body("n = len(ctx.table('population'))"), GUARD, "length is not available"),
    ("for_over_table", body("for r in ctx.table('population'):\n    pass"), GUARD, "cannot be iterated"),
    ("head_negative", body("ctx.table('population').head(-1)"), GUARD, "head"),
    ("head_huge", body("ctx.table('population').head(10**12)"), GUARD, "head"),
    ("head_wrong_type", body("ctx.table('population').head('5')"), GUARD, "head"),
    ("filter_not_expression", body("ctx.table('population').filter(True)"), GUARD, "condition of filter"),
    ("join_not_table", body("ctx.table('population').join(5, on='district')"), GUARD, "join needs"),
    ("is_in_huge", body("col('age').is_in(list(range(5000)))"), GUARD, "is_in takes"),
    ("huge_column_name", body("col('a' * 1000)"), GUARD, "128"),
    ("type_confusion_compare", body("ctx.table('population').filter(col('district') > 3)"), GUARD, "cannot compare"),
    ("aggregate_outside_agg", body("ctx.table('population').filter(count())"), GUARD, "condition of filter"),
    (
        "decorator_host_function",
        "def run(ctx):\n    @ctx.table\n    def f():\n        pass\n    return {}\n",
        GUARD,
        "not declared",
    ),
    ("host_callback_sort", body("sorted([ctx.table('population'), ctx.table('bus_stops')])"), GUARD, "TypeError"),
    ("max_of_table", body("max(ctx)"), GUARD, "max"),
    ("write_to_function", body("col.x = 1"), GUARD, "cannot be modified"),
    ("write_to_ctx", body("ctx.datasets = []"), GUARD, "cannot be modified"),
    (
        "plan_size_bomb",
        body("t = ctx.table('population')\nfor i in range(30000):\n    t = t.filter(col('age') > i)"),
        LIMIT,
        "more than",
    ),
    # --- resources
    ("recursion_bomb", "def f(n):\n    return f(n + 1)\n" + body("f(0)"), GUARD, "recursion"),
    ("string_bomb", body("s = 'a' * (10 ** 10)"), LIMIT, "memory limit"),
    ("list_bomb", body("s = [0] * (10 ** 10)"), LIMIT, "memory limit"),
    ("range_bomb", body("r = range(10 ** 12)"), GUARD, "range of more than"),
    ("integer_bomb", body("x = 10 ** 10 ** 10"), LIMIT, ""),
    ("infinite_loop", body("while True:\n    pass"), LIMIT, ""),
    ("huge_output_value", "def run(ctx):\n    return {'s': 'x' * 1000000}\n", GUARD, "at most 65536"),
    ("too_many_outputs", "def run(ctx):\n    return {'o' + str(i): i for i in range(100)}\n", GUARD, "at most 64"),
    ("output_not_dict", "def run(ctx):\n    return [1, 2]\n", GUARD, "must return a dict"),
    ("output_expression", "def run(ctx):\n    return {'e': col('income')}\n", GUARD, "must be a table"),
    (
        "output_grouped",
        "def run(ctx):\n    return {'g': ctx.table('population').group_by('district')}\n",
        GUARD,
        "finish group_by",
    ),
    ("non_finite_output", "def run(ctx):\n    return {'x': float('inf')}\n", GUARD, "finite"),
]


@pytest.mark.parametrize(("name", "source", "error", "fragment"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_is_stopped(sandbox, name: str, source: str, error, fragment: str) -> None:
    with pytest.raises(error) as info:
        sandbox.run(source)
    message = str(info.value)
    assert fragment in message, message
    assert CANARY_TEXT not in message
    assert "/work" not in message and "site-packages" not in message  # no host paths
    assert "saferoom/" not in message and "0x7" not in message  # no saferoom frames or addresses
