"""Red team: code an operator signs that they could not read.

``review show`` and ``review diff`` used to crop every line at the terminal's width with no marker (80 columns
when piped): a statement placed after column 100 was invisible, also through ``| cat``. The same family: a
Unicode bidi override that displays code in another order than it runs ("Trojan Source"), zero-width and other
format characters, escape sequences that rewrite the terminal, look-alike letters. What a reviewer is shown
must be every character that will run: lines whole (wrapped with a visible marker on a terminal, unwrapped
when piped), hidden characters made visible, and the hash to approve being exactly the files shown.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from saferoom.cli.main import cli
from saferoom.cli.render import print_source
from saferoom.server import SaferoomServer
from tests.support import Deployment

HIDDEN_TAIL = "; n = n + 41  # after column 100: what runs returns 42"
SOURCE = (
    "def run(ctx):\n"
    "    n = 1" + " " * 120 + HIDDEN_TAIL + "\n"
    "    label = 'admin\u202e \u2066# check\u2069 \u2066'  # a bidi override\n"
    "    quiet = 'zero\u200bwidth'  # a zero-width space\n"
    "    bell = '\x1b[2J'\n"
    "    return {'n': n}\n"
)
TOML = 'name = "hidden-code"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["bus_stops"]\n'


def _cli(deployment: Deployment, name: str, server: SaferoomServer, *args: str) -> str:
    profile = deployment.pki / "identities" / name / "profile.toml"
    result = CliRunner().invoke(cli, ["--profile", str(profile), *args, "--server", f"127.0.0.1:{server.port}"])
    assert result.exit_code == 0, result.output
    return result.output


def test_review_show_and_diff_show_every_character(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    package = tmp_path / "hidden-code"
    package.mkdir()
    (package / "main.py").write_text(SOURCE)
    (package / "saferoom.toml").write_text(TOML)
    with deployment.client("alice", server.port) as alice:
        summary, _ = alice.submit_package(package)
    for command in ("show", "diff"):
        out = _cli(deployment, "olga", server, "review", command, summary.hash)
        assert HIDDEN_TAIL in out, command  # piped: the whole line, nothing cropped
        for hidden in ("\u202e", "\u2066", "\u2069", "\u200b", "\x1b"):
            assert hidden not in out, (command, hex(ord(hidden)))  # never passed to the terminal raw
        for marker in ("⟨U+202E⟩", "⟨U+2066⟩", "⟨U+200B⟩", "⟨U+001B⟩"):
            assert marker in out, (command, marker)
    show = _cli(deployment, "olga", server, "review", "show", summary.hash)
    assert f"saferoom review approve {summary.hash}" in show
    assert "control or format character(s)" in show


def test_on_a_narrow_terminal_long_lines_wrap_with_a_marker_and_lose_nothing() -> None:
    console = Console(width=50, force_terminal=True, color_system=None, record=True)
    print_source(console, "main.py", SOURCE.encode())
    text = console.export_text()
    rows = [line for line in text.splitlines() if " │ " in line]
    assert all(len(r) <= 50 for r in rows)
    continued = [r for r in rows if r.lstrip().startswith("↪")]
    assert continued, "the long line is wrapped with a visible marker"
    # Every character of line 2 is on screen, in order: its first row and the continuations right after it.
    start = next(i for i, r in enumerate(rows) if r.lstrip().startswith("2 │"))
    pieces = [rows[start].split(" │ ", 1)[1]]
    for row in rows[start + 1 :]:
        if not row.lstrip().startswith("↪"):
            break
        pieces.append(row.split(" │ ", 1)[1])
    assert "".join(pieces).rstrip().endswith(HIDDEN_TAIL)
