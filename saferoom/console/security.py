"""The console's gate: every request passes here before any page or action runs.

The console listens on 127.0.0.1 and acts with its owner's mutual-TLS identity, so any web page in any browser
on the machine could try to use it. What keeps them out, in order:

1. **Host**: only ``127.0.0.1:PORT`` or ``localhost:PORT`` (a page of another site that re-points its DNS name
   at 127.0.0.1 sends its own name: DNS rebinding).
2. **The one-time token** printed with the URL: ``GET /login?token=...`` exchanges it, once, for a random
   session cookie (``saferoom_console_PORT``; ``HttpOnly``, ``SameSite=Strict``: other sites' pages never send
   it, scripts never read it).
   The token is then spent; a wrong token is refused without spending it.
3. **The session**: every other request needs the cookie.
4. **Changes**: only ``POST``, form-encoded, with an ``Origin`` of this console and the session's CSRF token
   in the form (both checked here, so that no handler can forget).

Every response carries a strict Content-Security-Policy (no inline script, nothing from elsewhere, no
framing), ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` (no other site learns a console URL;
``no-referrer`` on the login redirect, whose URL held the token) and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["COOKIE", "MAX_FORM_BYTES", "Gate", "SessionKeys"]

COOKIE = "saferoom_console"
MAX_FORM_BYTES = 256 * 1024
_SAFE = {"GET", "HEAD"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with the console's own
    # form posts, and the Origin check (4.) could not tell them from a sandboxed frame's. No other origin ever
    # gets a Referer; the login response itself is no-referrer (its URL held the token).
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


@dataclass
class SessionKeys:
    """The login token (spent on first use), the session cookie's value and the CSRF token."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    session: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    spent: bool = False

    def exchange(self, token: str) -> bool:
        """Whether ``token`` is the unspent login token (then it is spent)."""
        if self.spent or not hmac.compare_digest(token.encode(), self.token.encode()):
            return False
        self.spent = True
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    values: list[bytes] = [v for k, v in scope.get("headers", ()) if k == name]
    return values[0].decode("latin-1") if len(values) == 1 else None


def _cookie(scope: Scope, cookie: str) -> str:
    for k, v in scope.get("headers", ()):
        if k == b"cookie":
            text: str = v.decode("latin-1")
            for part in text.split(";"):
                name, _, value = part.strip().partition("=")
                if name == cookie:
                    return value
    return ""


class Gate:
    """ASGI middleware enforcing the rules of the module docstring in front of ``app``."""

    def __init__(self, app: ASGIApp, keys: SessionKeys, port: int) -> None:
        self.app = app
        self.keys = keys
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{h}" for h in self.hosts}
        self.cookie = f"{COOKIE}_{port}"  # one per console: browsers share cookies between a host's ports

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                message["headers"] = headers + [(k, v) for k, v in HEADERS if k not in present]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await _plain(guarded_send, *refusal)
            return
        if scope["path"] == "/login":
            await self._login(scope, guarded_send)
            return
        if scope["method"] in _SAFE:
            await self.app(scope, receive, guarded_send)
            return
        body = await _body(receive)
        if body is None:
            await _plain(guarded_send, 413, "the form is too large")
            return
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=200))
        if not hmac.compare_digest(form.get("csrf", "").encode(), self.keys.csrf.encode()):
            await _plain(guarded_send, 403, "refused: the form carries no valid CSRF token")
            return
        scope["saferoom.form"] = form
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, guarded_send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        """Why the request is refused before anything runs, or None."""
        if _header(scope, b"host") not in self.hosts:
            return 403, "refused: this console answers only to 127.0.0.1 or localhost on its own port"
        method = scope["method"]
        if method not in _SAFE and method != "POST":
            return 405, "method not allowed"
        if scope["path"] == "/login":
            return None if method == "GET" else (405, "method not allowed")
        cookie = _cookie(scope, self.cookie).encode()
        if not self.keys.spent or not hmac.compare_digest(cookie, self.keys.session.encode()):
            return 401, "no session: open the URL that `saferoom console` printed"
        if method == "POST":
            if _header(scope, b"origin") not in self.origins:
                return 403, "refused: a change must come from this console's own pages (Origin)"
            kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if kind != "application/x-www-form-urlencoded":
                return 415, "changes are form-encoded"
        return None

    async def _login(self, scope: Scope, send: Send) -> None:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), max_num_fields=5))
        if not self.keys.exchange(query.get("token", "")):
            await _plain(send, 403, "refused: this login link is wrong or already used; restart the console")
            return
        cookie = f"{self.cookie}={self.keys.session}; HttpOnly; SameSite=Strict; Path=/"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", b"/"),
                    (b"set-cookie", cookie.encode()),
                    (b"content-length", b"0"),
                    (b"referrer-policy", b"no-referrer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
