"""Attacks on the local web console (`saferoom console`), made with plain HTTP requests against a real console
talking to a real mutual-TLS server. The console acts with its owner's identity, so any page in any browser on
the machine is a potential attacker: each attack names the check that must stop it (saferoom/console/security.py
unless said otherwise), and each asserts that nothing happened on the server."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from saferoom.console import ConsoleServer
from saferoom.server import SaferoomServer
from tests.conftest import TEST_PACKAGES
from tests.support import Deployment
from tests.support_console import Reply, login, request, running_console, session_post

PAGES = ["/", "/catalog", "/packages", "/jobs", "/budgets", "/review", "/checks", "/audit", "/audit/export.jsonl"]


@pytest.fixture(scope="module")
def alice(
    server: SaferoomServer, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ConsoleServer, str]]:
    with running_console(deployment, "alice", server.port, tmp_path_factory.mktemp("cp")) as app:
        yield app, login(app)


@pytest.fixture(scope="module")
def olga(
    server: SaferoomServer, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ConsoleServer, str]]:
    with running_console(deployment, "olga", server.port, tmp_path_factory.mktemp("cp")) as app:
        yield app, login(app)


def job_count(deployment: Deployment, server: SaferoomServer) -> int:
    with deployment.client("olga", server.port) as c:
        return sum(1 for _ in c.iter_jobs())


def echo_hash(app: ConsoleServer) -> str:
    return next(p.hash for p in app.client.list_packages() if p.name == "echo" and p.status == "approved")


def submit_echo_variant(
    deployment: Deployment,
    port: int,
    directory: Path,
    who: str,
    main: Callable[[str], str],
    toml: Callable[[str], str] = str,
) -> str:
    """A changed copy of the echo test package, submitted by ``who`` (pending: not what was approved); its hash."""
    shutil.copytree(TEST_PACKAGES / "echo", directory)
    for name, edit in (("main.py", main), ("saferoom.toml", toml)):
        (directory / name).write_text(edit((directory / name).read_text()))
    with deployment.client(who, port) as client:
        return client.submit_package(directory)[0].hash


def assert_guarded(reply: Reply) -> None:
    """Every response, refusals too, carries the security headers and no CORS grant."""
    h = reply.headers
    assert (
        "default-src 'self'" in h["content-security-policy"]
        and "frame-ancestors 'none'" in h["content-security-policy"]
    )
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] in ("same-origin", "no-referrer")
    assert h["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in h


# ------------------------------------------------------------------ no session, wrong or reused token


def test_no_session_is_refused_on_every_page_and_action(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    """Stopped by the session check: nothing is served, nothing runs, without the cookie the token bought."""
    with running_console(deployment, "alice", server.port, tmp_path) as app:
        before = job_count(deployment, server)
        for path in [*PAGES, "/catalog/population/mock.csv", "/static/console.css"]:
            reply = request(app, "GET", path)
            assert reply.status == 401, path
            assert_guarded(reply)
            assert "alice" not in reply.text
        forged = request(
            app,
            "POST",
            "/jobs/run",
            headers={"Origin": f"http://127.0.0.1:{app.port}"},
            form={"csrf": app.keys.csrf, "package": echo_hash(app)},
        )
        assert forged.status == 401
        assert job_count(deployment, server) == before


def test_a_wrong_token_is_refused_and_does_not_spend_the_real_one(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    with running_console(deployment, "alice", server.port, tmp_path) as app:
        for wrong in ("", "x", app.keys.token[:-1], app.keys.token + "x", app.keys.token.upper()):
            reply = request(app, "GET", f"/login?token={wrong}")
            assert reply.status == 403 and "set-cookie" not in reply.headers
            assert_guarded(reply)
        cookie = login(app)  # the printed link still works once ...
        assert request(app, "GET", "/jobs", headers={"Cookie": cookie}).status == 200
        again = request(app, "GET", f"/login?token={app.keys.token}")  # ... and only once
        assert again.status == 403 and "set-cookie" not in again.headers
        guessed = request(app, "GET", "/jobs", headers={"Cookie": cookie.split("=")[0] + "=guess"})
        assert guessed.status == 401


def test_the_session_cookie_is_httponly_and_samesite_strict(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    with running_console(deployment, "alice", server.port, tmp_path) as app:
        reply = request(app, "GET", f"/login?token={app.keys.token}")
        cookie = reply.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert reply.headers["referrer-policy"] == "no-referrer"  # the login URL held the token
        assert reply.headers["location"] == "/"


# ------------------------------------------------------------------ DNS rebinding


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1",
        "127.0.0.1:1",
        "localhost.evil.example:{port}",
        "0.0.0.0:{port}",
        "[::1]:{port}",
        "127.0.0.1:{port}.evil.example",
    ],
)
def test_a_foreign_host_header_is_refused(alice: tuple[ConsoleServer, str], host: str) -> None:
    """A page of evil.example that re-points its name at 127.0.0.1 sends Host: evil.example: refused before the
    session is even looked at, on pages, actions and the login link alike."""
    app, cookie = alice
    foreign = host.format(port=app.port)
    for path in ["/jobs", "/budgets", f"/login?token={app.keys.token}"]:
        reply = request(app, "GET", path, headers={"Cookie": cookie}, host=foreign)
        assert reply.status == 403, (foreign, path)
        assert "alice" not in reply.text
        assert_guarded(reply)
    posted = request(
        app,
        "POST",
        "/jobs/run",
        host=foreign,
        form={"csrf": app.keys.csrf, "package": echo_hash(app)},
        headers={"Cookie": cookie, "Origin": f"http://{foreign}"},
    )
    assert posted.status == 403


def test_both_loopback_names_are_served(alice: tuple[ConsoleServer, str]) -> None:
    app, cookie = alice
    for host in (f"127.0.0.1:{app.port}", f"localhost:{app.port}"):
        assert request(app, "GET", "/jobs", headers={"Cookie": cookie}, host=host).status == 200


# ------------------------------------------------------------------ cross-site requests (CSRF)


def test_a_cross_site_post_is_refused_and_runs_nothing(
    alice: tuple[ConsoleServer, str], server: SaferoomServer, deployment: Deployment
) -> None:
    """Stopped by the Origin check and the CSRF token: even with the cookie (a browser that ignored SameSite)."""
    app, cookie = alice
    package = echo_hash(app)
    before = job_count(deployment, server)
    own = f"http://127.0.0.1:{app.port}"
    attempts = [
        ({"Origin": "http://evil.example"}, {"csrf": app.keys.csrf}),  # another site's form
        ({"Origin": "null"}, {"csrf": app.keys.csrf}),  # a sandboxed frame or a data: URL
        ({}, {"csrf": app.keys.csrf}),  # no Origin at all
        ({"Origin": f"http://localhost:{app.port + 1}"}, {"csrf": app.keys.csrf}),  # another local port
        ({"Origin": own}, {}),  # the right origin, no token
        ({"Origin": own}, {"csrf": ""}),
        ({"Origin": own}, {"csrf": app.keys.csrf[:-1]}),
        ({"Origin": own}, {"csrf": app.keys.session}),  # the cookie's value is not the token
    ]
    for headers, token in attempts:
        reply = request(
            app, "POST", "/jobs/run", headers={"Cookie": cookie, **headers}, form={"package": package, **token}
        )
        assert reply.status == 403, (headers, token)
        assert_guarded(reply)
    plain = request(
        app,
        "POST",
        "/jobs/run",
        headers={"Cookie": cookie, "Origin": own, "Content-Type": "text/plain"},
        form={"csrf": app.keys.csrf, "package": package},
    )
    assert plain.status == 415
    assert job_count(deployment, server) == before
    ok = session_post(app, cookie, "/jobs/run", {"package": package})  # the console's own form does work
    assert ok.status == 303 and ok.headers["location"].startswith("/jobs/")
    assert job_count(deployment, server) == before + 1


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_are_refused(alice: tuple[ConsoleServer, str], method: str) -> None:
    app, cookie = alice
    reply = request(app, method, "/jobs/run", headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{app.port}"})
    assert reply.status == 405
    assert "access-control-allow-origin" not in reply.headers


def test_a_huge_form_is_refused(alice: tuple[ConsoleServer, str]) -> None:
    app, cookie = alice
    reply = session_post(app, cookie, "/jobs/run", {"package": "a" * 400_000})
    assert reply.status == 413


# ------------------------------------------------------------------ another role's pages


@pytest.mark.parametrize("path", ["/review", "/checks", "/audit", "/audit/export.jsonl", "/review/" + "0" * 64])
def test_a_researcher_gets_no_other_roles_page(alice: tuple[ConsoleServer, str], path: str) -> None:
    """Stopped by the console's role check (the server would refuse too): no data, a clear 403."""
    app, cookie = alice
    reply = request(app, "GET", path, headers={"Cookie": cookie})
    assert reply.status == 403
    assert "This page is for another role" in reply.text
    assert "package_submitted" not in reply.text and "<table" not in reply.text


def test_a_researcher_cannot_approve_through_the_console(
    alice: tuple[ConsoleServer, str], deployment: Deployment, server: SaferoomServer, tmp_path: Path
) -> None:
    app, cookie = alice
    pending = submit_echo_variant(deployment, server.port, tmp_path / "echo", "bob", lambda s: s + "\n# pending\n")
    for action in ("approve", "reject", "revoke"):
        reply = session_post(app, cookie, f"/review/{pending}/{action}", {"hash": pending, "reason": "x"})
        assert reply.status == 403
    with deployment.client("bob", server.port) as bob:
        assert bob.get_package(pending).status == "pending"


@pytest.mark.parametrize("path", ["/packages", "/catalog/population/mock.csv", "/jobs/run"])
def test_an_operator_gets_no_researcher_page(olga: tuple[ConsoleServer, str], path: str) -> None:
    app, cookie = olga
    reply = (
        session_post(app, cookie, path, {"package": "0" * 64})
        if path == "/jobs/run"
        else request(app, "GET", path, headers={"Cookie": cookie})
    )
    assert reply.status == 403


def test_what_the_server_refuses_is_shown_as_its_refusal(
    alice: tuple[ConsoleServer, str], deployment: Deployment, server: SaferoomServer
) -> None:
    """Bob's job through alice's console: the server's NOT_FOUND/PERMISSION_DENIED, never bob's data."""
    app, cookie = alice
    with deployment.client("bob", server.port) as bob:
        echo, _ = bob.submit_package(TEST_PACKAGES / "echo")  # the approved one: bob becomes a submitter
        job = bob.run_job(echo.hash, {"label": "bobs-secret-label"})
        bob.wait(job.id, timeout=120)
    for path in (f"/jobs/{job.id}", f"/jobs/{job.id}/outputs/stops.csv"):
        reply = request(app, "GET", path, headers={"Cookie": cookie})
        assert reply.status in (403, 404), path
        assert "Refused" in reply.text and "bobs-secret-label" not in reply.text
    for path in ("/jobs/..%2f..%2fetc", "/jobs/" + "x" * 500, "/jobs/a/outputs/..%2fx.csv", "/jobs/a/outputs/n.exe"):
        assert request(app, "GET", path, headers={"Cookie": cookie}).status == 404, path


# ------------------------------------------------------------------ hostile names and code (XSS)

XSS = "<script>document.title='pwned'</script>"


def test_hostile_package_text_and_outputs_are_escaped(
    alice: tuple[ConsoleServer, str],
    olga: tuple[ConsoleServer, str],
    deployment: Deployment,
    server: SaferoomServer,
    tmp_path: Path,
) -> None:
    """A researcher's description, source and output values are hostile to the operator, the checker and the
    researcher's own browser: every page escapes them (and the CSP would refuse inline script anyway)."""
    app, cookie = alice
    hostile_hash = submit_echo_variant(
        deployment,
        server.port,
        tmp_path / "echo",
        "alice",
        lambda s: f"# {XSS}\n" + s,
        lambda t: t.replace('description = "Test package', f'description = "{XSS} <img src=x onerror=alert(1)> Test'),
    )
    operator, olga_cookie = olga
    pages = [
        request(app, "GET", "/packages", headers={"Cookie": cookie}),
        request(app, "GET", f"/packages/{hostile_hash}", headers={"Cookie": cookie}),
        request(operator, "GET", "/review", headers={"Cookie": olga_cookie}),
        request(operator, "GET", f"/review/{hostile_hash}", headers={"Cookie": olga_cookie}),
    ]
    ran = session_post(app, cookie, "/jobs/run", {"package": echo_hash(app), "param.label": XSS})
    assert ran.status == 303
    job_id = ran.headers["location"].rsplit("/", 1)[-1]
    with deployment.client("alice", server.port) as client:
        assert client.wait(job_id, timeout=120).state == "succeeded"
    pages.append(request(app, "GET", f"/jobs/{job_id}", headers={"Cookie": cookie}))
    for page in pages:
        assert page.status == 200
        assert "<script" not in page.text.lower() and "<img src=x" not in page.text
    assert "&lt;script&gt;document.title" in pages[3].text  # the operator sees the text, inert
    assert "\\u003cscript\\u003e" in pages[-1].text or "&lt;script&gt;" in pages[-1].text


# ------------------------------------------------------------------ bad input: a clear error, nothing done


def test_bad_form_and_query_input_gets_a_clear_error_and_changes_nothing(
    alice: tuple[ConsoleServer, str],
    olga: tuple[ConsoleServer, str],
    deployment: Deployment,
    server: SaferoomServer,
    tmp_path: Path,
) -> None:
    app, cookie = alice
    before = job_count(deployment, server)
    cases = [
        ({"package": "site-selection"}, 400, "full hash"),  # a name, not the hash of what was shown
        ({"package": echo_hash(app), "param.n": "many"}, 400, "not a valid int"),
        ({"package": echo_hash(app), "param.n": "1000"}, 409, "must be at most 100"),  # the server's, shown
        ({"package": echo_hash(app), "param.nope": "1"}, 409, "nope"),
    ]
    for form, status, words in cases:
        reply = session_post(app, cookie, "/jobs/run", form)
        assert reply.status == status, (form, reply.text[-300:])
        assert words in reply.text and 'id="error"' in reply.text
    assert job_count(deployment, server) == before
    mock = request(app, "GET", "/catalog/population/mock.csv?rows=lots", headers={"Cookie": cookie})
    assert mock.status == 200
    operator, olga_cookie = olga
    target = submit_echo_variant(deployment, server.port, tmp_path / "echo", "bob", lambda s: s + "\n# waiting\n")
    bad_days = [{"hash": target, "days": d} for d in ("soon", "nan", "inf", "-inf", "0", "-5", "1e300", "3651")]
    for form in ({"hash": "0" * 64, "days": "30"}, *bad_days, {"days": "30"}):
        reply = session_post(operator, olga_cookie, f"/review/{target}/approve", form)
        assert reply.status == 400, reply.text[-300:]
    assert operator.client.get_package(target).status == "pending"


def test_hidden_characters_in_source_are_shown_to_the_reviewer(
    olga: tuple[ConsoleServer, str], deployment: Deployment, server: SaferoomServer, tmp_path: Path
) -> None:
    """Trojan Source: a bidi override or a zero-width character makes code read differently from how it runs.
    The review page shows each as a marked ⟨U+XXXX⟩ (as `saferoom review show` does) and warns, in the full
    source and in the diff; the raw character never reaches the browser."""
    operator, cookie = olga
    hostile_hash = submit_echo_variant(
        deployment,
        server.port,
        tmp_path / "echo",
        "alice",
        lambda s: s.replace('print("echo"', 'print("echo\u202e\u200b"'),
    )
    page = request(operator, "GET", f"/review/{hostile_hash}", headers={"Cookie": cookie}).text
    assert "\u202e" not in page and "\u200b" not in page
    assert page.count("⟨U+202E⟩") >= 2 and page.count("⟨U+200B⟩") >= 2  # the source and the diff
    assert "control or format character(s)" in page
