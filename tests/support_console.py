"""Helpers for the web console's tests: a console per identity, plain HTTP requests, a real headless Chromium."""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from saferoom.console import ConsoleServer
from saferoom.console.security import COOKIE
from tests.support import Deployment

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@contextmanager
def running_console(deployment: Deployment, name: str, port: int, checkpoints: Path) -> Iterator[ConsoleServer]:
    """``name``'s console on a free 127.0.0.1 port, talking to the saferoom server on ``port``."""
    app = ConsoleServer(deployment.profile(name), server=f"127.0.0.1:{port}", checkpoints_dir=checkpoints)
    app.start()
    try:
        yield app
    finally:
        app.stop()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(
    app: ConsoleServer,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    host: str | None = None,
) -> Reply:
    """One plain HTTP request to the console (``host`` overrides the Host header)."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=120)
    try:
        body = urlencode(form).encode() if form is not None else None
        sent = {"Host": host or f"127.0.0.1:{app.port}", **(headers or {})}
        if body is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in sent.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        reply = conn.getresponse()
        return Reply(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
    finally:
        conn.close()


def login(app: ConsoleServer) -> str:
    """Spend the console's one-time token; returns the Cookie header for the session."""
    reply = request(app, "GET", urlsplit(app.url).path + "?" + urlsplit(app.url).query)
    assert reply.status == 303, reply.text
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}_{app.port}=")
    return cookie.split(";")[0]


def session_post(app: ConsoleServer, cookie: str, path: str, form: dict[str, str], **headers: str) -> Reply:
    """A POST as the console's own page makes it: the session cookie, its Origin and the CSRF token."""
    sent = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{app.port}", **headers}
    return request(app, "POST", path, headers=sent, form={"csrf": app.keys.csrf, **form})


def browser_available() -> bool:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return True
    if os.environ.get("CI"):
        pytest.fail("CI runs the console's browser tests: install chromium and chromium-driver (.ci/run does)")
    return False


@contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator[object]:
    """A real headless Chromium (Selenium), with a fresh profile directory, closed afterwards."""
    if not browser_available():
        pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="saferoom-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: object, name: str, focus: str = "") -> Path:
    """Two PNGs under tests/artifacts/ (gitignored): ``NAME.png``, the top of the page in a laptop-sized window
    (the README's figures are these; scrolled to the element ``focus`` selects), and ``NAME-full.png``, the whole
    page."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = driver.get_window_size()  # type: ignore[attr-defined]
    driver.set_window_size(1024, 720)  # type: ignore[attr-defined]
    if focus:
        script = "document.querySelector(arguments[0]).scrollIntoView(); window.scrollBy(0, -12);"
        driver.execute_script(script, focus)  # type: ignore[attr-defined]
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    height = driver.execute_script("return document.documentElement.scrollHeight")  # type: ignore[attr-defined]
    driver.set_window_size(1200, min(max(height, 600), 4000))  # type: ignore[attr-defined]
    driver.save_screenshot(str(ARTIFACTS / f"{name}-full.png"))  # type: ignore[attr-defined]
    driver.execute_script("window.scrollTo(0, 0);")  # type: ignore[attr-defined]
    driver.set_window_size(size["width"], size["height"])  # type: ignore[attr-defined]
    return path
