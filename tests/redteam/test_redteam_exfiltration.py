"""Attempts to read host files, write marker files, poison later jobs, or flood the output."""

from __future__ import annotations

from pathlib import Path

import pytest

from saferoom.errors import SaferoomError

CANARY = "CANARY-7f3a9c-do-not-leak"


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    path = tmp_path / "canary.txt"
    path.write_text(CANARY)
    path.chmod(0o644)
    return path


READS = [
    "def run(ctx):\n    return {'x': open({path!r}).read()}\n",
    "def run(ctx):\n    return {'x': __import__('pathlib').Path({path!r}).read_text()}\n",
    "import io\ndef run(ctx):\n    return {'x': io.open({path!r}).read()}\n",
    "def run(ctx):\n    return {'x': ctx.describe({path!r})}\n",
    "def run(ctx):\n    return {'x': ctx.table({path!r})}\n",
    "def run(ctx):\n    g = (x for x in [1])\n    return {'x': g.gi_frame.f_builtins['open']({path!r}).read()}\n",
    "def run(ctx):\n    return {'x': [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'FileIO'][0]({path!r}).read()}\n",
]


@pytest.mark.parametrize("template", READS)
def test_canary_is_never_read(sandbox, canary: Path, template: str) -> None:
    source = template.replace("{path!r}", repr(str(canary)))
    try:
        result = sandbox.run(source)
    except SaferoomError as exc:
        assert CANARY not in str(exc)
    else:
        assert CANARY not in repr(result)


WRITES = [
    "def run(ctx):\n    open({path!r}, 'w').write('x')\n    return {}\n",
    "import os\ndef run(ctx):\n    os.system('touch ' + {path!r})\n    return {}\n",
    "def run(ctx):\n    __import__('os').system('touch ' + {path!r})\n    return {}\n",
    "def run(ctx):\n    print('x', file=open({path!r}, 'w'))\n    return {}\n",
]


@pytest.mark.parametrize("template", WRITES)
def test_marker_is_never_written(sandbox, tmp_path: Path, template: str) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(SaferoomError):
        sandbox.run(template.replace("{path!r}", repr(str(marker))))
    assert not marker.exists()


def test_poisoning_does_not_reach_the_next_job(sandbox) -> None:
    poison = (
        "def run(ctx):\n"
        "    d = ctx.datasets\n"
        "    d.append('housing_transactions')\n"
        "    d.clear()\n"
        "    return {'n': len(ctx.datasets)}\n"
    )
    assert sandbox.run(poison)["outputs"]["n"] == {"value": 2}  # the list handed out was a copy
    probe = "def run(ctx):\n    return {'datasets': ','.join(ctx.datasets)}\n"
    assert sandbox.run(probe)["outputs"]["datasets"] == {"value": "population,bus_stops"}


def test_module_globals_do_not_survive_between_jobs(sandbox) -> None:
    source = "seen = []\ndef run(ctx):\n    seen.append(1)\n    return {'n': len(seen)}\n"
    assert sandbox.run(source)["outputs"]["n"] == {"value": 1}
    assert sandbox.run(source)["outputs"]["n"] == {"value": 1}  # a fresh process each time


def test_print_flood_is_bounded(sandbox) -> None:
    result = sandbox.run("def run(ctx):\n    for i in range(2000):\n        print('x' * 1000)\n    return {'ok': 1}\n")
    assert len(result["printed"]) == 64 * 1024


def test_print_cannot_redirect_to_files(sandbox) -> None:
    with pytest.raises(SaferoomError, match="print takes only"):
        sandbox.run("def run(ctx):\n    print('x', file=ctx)\n    return {'ok': 1}\n")


def test_local_modules_import_but_nothing_else(sandbox) -> None:
    helpers = "WEIGHT = 3\ndef double(x):\n    return x * 2\n"
    main = "import helpers\nfrom helpers import WEIGHT\ndef run(ctx):\n    return {'x': helpers.double(WEIGHT)}\n"
    assert sandbox.run(main, extra_files={"helpers.py": helpers})["outputs"]["x"] == {"value": 6}


def test_error_messages_name_the_users_line_only(sandbox) -> None:
    with pytest.raises(SaferoomError) as info:
        sandbox.run("def run(ctx):\n    x = 1\n    return {'x': x / 0}\n")
    assert str(info.value) == "main.py, line 3: ZeroDivisionError: division by zero"


def test_ordinary_python_still_works(sandbox) -> None:
    source = (
        "def run(ctx, n=3):\n"
        "    squares = [i * i for i in range(n)]\n"
        "    total = sum(squares)\n"
        "    pick = max(squares)\n"
        "    names = sorted({'b': 1, 'a': 2}.items(), key=lambda kv: kv[1])\n"
        "    label = ' '.join(k for k, _ in names).upper()\n"
        "    return {'total': total, 'pick': pick, 'label': label}\n"
    )
    outputs = sandbox.run(source)["outputs"]
    assert outputs == {"total": {"value": 5}, "pick": {"value": 4}, "label": {"value": "B A"}}


def test_syntax_errors_name_file_and_line(sandbox) -> None:
    from saferoom.errors import CodeRefused

    with pytest.raises(CodeRefused) as info:
        sandbox.run("def run(ctx):\n    x = (1,\n    return {'x': 1}\n", extra_files={"helpers.py": "y = = 2\n"})
    message = str(info.value)
    assert "helpers.py, line 1" in message and "main.py, line" in message
