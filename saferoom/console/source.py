"""Source as a reviewer must see it in a browser, as ``saferoom review show`` shows it on a terminal
(``saferoom.cli.render.print_source``): every character a reader could miss made visible. Control and format
characters (bidi overrides, zero-width spaces, escapes, carriage returns) become a marked ``⟨U+XXXX⟩``, tabs
``⇥``, non-ASCII letters (look-alikes of ASCII ones) are highlighted; everything else is escaped HTML. Lines wrap,
never crop (the stylesheet's ``pre.source``)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["VisibleSource", "visible"]

_SHOWN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})  # control, format (bidi, zero-width), unassigned


@dataclass(frozen=True)
class VisibleSource:
    """A text made safe to review: its HTML and how many hidden and non-ASCII characters it holds."""

    html: Markup
    hidden: int
    foreign: int


def visible(text: str) -> VisibleSource:
    """``text`` (one file, or a diff) with its hidden characters shown; newlines kept."""
    out: list[str] = []
    hidden = foreign = 0
    for ch in text:
        if ch == "\n":
            out.append("\n")
        elif ch == "\t":
            out.append('<span class="tab">⇥   </span>')
        elif unicodedata.category(ch) in _SHOWN:
            out.append(f'<mark class="hidden">⟨U+{ord(ch):04X}⟩</mark>')
            hidden += 1
        elif ord(ch) > 127:
            out.append(f'<mark class="foreign">{escape(ch)}</mark>')
            foreign += 1
        else:
            out.append(str(escape(ch)))
    return VisibleSource(Markup("".join(out)), hidden, foreign)
