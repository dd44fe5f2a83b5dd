"""One regression test per published RestrictedPython / Zope AccessControl advisory, adapted to saferoom's API,
plus the neighbouring tricks each advisory suggests. Each runs in the real sandbox worker and asserts which
layer stopped it and that nothing of the host leaked. New advisories get a line here."""

from __future__ import annotations

import pytest

from saferoom.errors import CodeRefused, SaferoomError, UserCodeError

COMPILE, GUARD = CodeRefused, UserCodeError


def body(code: str) -> str:
    lines = "\n".join("    " + line for line in code.strip().splitlines())
    return f"def run(ctx):\n{lines}\n    return {{'ok': 1}}\n"


ADVISORIES = [
    # CVE-2023-37271 (RestrictedPython < 6.1): stack frames reachable from generators -> f_globals/f_builtins.
    ("CVE-2023-37271 generator gi_frame", body("g = (x for x in [1])\nb = g.gi_frame.f_back.f_builtins"), COMPILE,
     "gi_frame"),
    ("CVE-2023-37271 generator expression frame in a list", body("fs = [(x for x in [1]).gi_frame]"), COMPILE,
     "gi_frame"),
    ("CVE-2023-37271 coroutine cr_frame", "async def c():\n    return 1\n" + body("f = c().cr_frame"), COMPILE,
     "async"),
    ("CVE-2023-37271 async generator ag_frame", "async def a():\n    yield 1\n" + body("f = a().ag_frame"), COMPILE,
     "async"),
    # CVE-2023-41039 (RestrictedPython < 6.2): attribute traversal through str.format and string.Formatter.
    ("CVE-2023-41039 str.format attribute", body("s = '{0.__class__.__mro__}'.format(ctx)"), GUARD, "format"),
    ("CVE-2023-41039 string.Formatter", "import string\n" + body("s = string.Formatter().format('{0.__class__}', 1)"),
     COMPILE, "import of 'string'"),
    ("CVE-2023-41039 format via getattr", body("f = getattr('', 'format')"), COMPILE, "'getattr' is not available"),
    # CVE-2024-47532 (RestrictedPython < 7.3): format_map and friends on user-controlled mappings.
    ("CVE-2024-47532 format_map", body("s = '{x.__class__}'.format_map({'x': ctx})"), GUARD, "format_map"),
    ("CVE-2024-47532 format_map on a table", body("s = '{t}'.format_map({'t': ctx.table('bus_stops')})"), GUARD,
     "format_map"),
    # CVE-2025-22153 (RestrictedPython < 8.0): try/except* type confusion reaching guarded objects.
    ("CVE-2025-22153 except*", body("try:\n    x = 1\nexcept* Exception as e:\n    y = e.exceptions"), COMPILE, ""),
    # CVE-2021-32807 (AccessControl < 5.2): format strings reaching attributes through unbound methods.
    ("CVE-2021-32807 unbound str.format", body("s = str.format('{0.__class__.__base__}', ctx)"), GUARD, "format"),
    ("CVE-2021-32807 format via method reference", body("f = '{0.__class__}'.format\ns = f(ctx)"), GUARD, "format"),
    # CVE-2023-41050 (AccessControl < 6.2): information disclosure through the string module's Formatter.
    ("CVE-2023-41050 Formatter.get_field", "from string import Formatter\n" + body("x = Formatter().get_field"),
     COMPILE, "import from"),
    ("CVE-2023-41050 vformat", body("s = ''.vformat('{0.__class__}', [ctx], {})"), GUARD, "vformat"),
]  # fmt: skip

NEIGHBOURS = [
    ("percent formatting of an API object", body("s = '%s %r' % (ctx, ctx.table('bus_stops'))"), None, ""),
    ("f-string of an API object", body("s = f'{ctx!r} {col(\"income\")!r}'"), None, ""),
    ("str() of a table", body("s = str(ctx.table('population'))"), None, ""),
    ("repr of an expression", body("s = repr(col('income') + 1)"), None, ""),
]  # fmt: skip


@pytest.mark.parametrize(("name", "source", "error", "fragment"), ADVISORIES, ids=[a[0] for a in ADVISORIES])
def test_advisory_is_stopped(sandbox, name: str, source: str, error, fragment: str) -> None:
    with pytest.raises(error) as info:
        sandbox.run(source)
    message = str(info.value)
    assert fragment in message, message
    assert "/work" not in message and "site-packages" not in message and "0x7" not in message


@pytest.mark.parametrize(("name", "source", "error", "fragment"), NEIGHBOURS, ids=[n[0] for n in NEIGHBOURS])
def test_printing_api_objects_shows_nothing_of_the_host(sandbox, name: str, source: str, error, fragment) -> None:
    """Formatting an opaque object gives a short description: no address, module, path, or data."""
    text_source = source.replace("return {'ok': 1}", "return {'s': s}")
    try:
        result = sandbox.run(text_source)
    except SaferoomError as exc:  # refusing is fine too; leaking is not
        text = str(exc)
    else:
        text = str(result["outputs"]["s"])
    for leak in ("0x", "/work", "site-packages", "saferoom.", "pyarrow", "object at"):
        assert leak not in text, text
