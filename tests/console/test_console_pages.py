"""The console's pages over plain HTTP against real servers: DP results drawn with their noise intervals,
budgets as spent/remaining, downloads, the public geography, and the `saferoom console` command itself."""

from __future__ import annotations

import http.client
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saferoom.catalog.generate import DISTRICTS
from saferoom.catalog.geography import CITY_BOUNDS, district_outlines
from saferoom.console import app as console_app
from saferoom.console.charts import bar_chart, site_map
from saferoom.server import SaferoomServer, create_server
from tests.conftest import ALGORITHMS
from tests.support import Deployment, approve_all, server_config
from tests.support_console import login, request, running_console, session_post

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dp_server(
    dp_catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    """The differentially private city; alice's vetted packages approved, a budget on population for her."""
    srv, port = create_server(server_config(dp_catalog_dir, tmp_path_factory.mktemp("state"), deployment.pki))
    try:
        approve_all(deployment, port, ALGORITHMS)
        with deployment.client("olga", port) as olga:
            olga.set_budget("alice", "population", epsilon=3.0)
        yield srv
    finally:
        srv.stop(1.0)


def _area(ring: tuple[tuple[float, float], ...]) -> float:
    return abs(sum(a[1] * b[0] - b[1] * a[0] for a, b in zip(ring, ring[1:] + ring[:1], strict=True))) / 2


def test_district_outlines_partition_the_city_and_hold_their_centres() -> None:
    outlines = district_outlines()
    assert [d.name for d in outlines] == [d.name for d in DISTRICTS]
    south, west, north, east = CITY_BOUNDS
    assert sum(_area(d.ring) for d in outlines) == pytest.approx((north - south) * (east - west), rel=1e-3)
    for d in outlines:
        lat, lon = d.centre
        inside = False  # ray casting: the published centre lies in its own cell
        for (y1, x1), (y2, x2) in zip(d.ring, d.ring[1:] + d.ring[:1], strict=True):
            if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        assert inside, d.name


def test_a_checker_is_shown_every_row_of_what_they_would_release() -> None:
    """A researcher's result page shows its first rows; a held output's page shows them all, since the checker's
    approval releases every one of them."""
    rows = console_app.MAX_ROWS_SHOWN + 50
    table = pa.table({"district": [f"d{i}" for i in range(rows)], "n": list(range(rows))})
    output = type("Held", (), {"name": "cells", "kind": "table", "table": table, "value": None, "report": {}})()
    held = type("HeldResult", (), {"outputs": [output]})()
    ((shown, _),) = console_app._held_outputs(held)  # type: ignore[arg-type]
    assert len(shown.rows) == shown.total_rows == rows
    assert shown.rows[-1][0] == f"d{rows - 1}"
    researcher = console_app._table_view("cells", "table", table, None, {})
    assert len(researcher.rows) == console_app.MAX_ROWS_SHOWN and researcher.total_rows == rows


def test_chart_text_is_escaped() -> None:
    hostile = "<script>alert(1)</script>"
    for chart in (bar_chart(hostile, [hostile], [1.0], [0.5]), site_map(hostile, [(24.5, 118.1, 1.0, hostile)])):
        assert "<script" not in str(chart.svg) and "&lt;script&gt;" in str(chart.svg)


def test_dp_results_show_charts_with_noise_intervals_and_budgets_spent(
    dp_server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    with running_console(deployment, "alice", dp_server.port, tmp_path) as app:
        cookie = login(app)
        profile = next(p for p in app.client.list_packages() if p.name == "population-profile")
        ran = session_post(app, cookie, "/jobs/run", {"package": profile.hash, "param.band_years": "10"})
        assert ran.status == 303, ran.text
        job_id = ran.headers["location"].rsplit("/", 1)[-1]
        assert app.client.wait(job_id, timeout=120).state == "succeeded"
        page = request(app, "GET", f"/jobs/{job_id}", headers={"Cookie": cookie}).text
        # A choropleth of the six districts, a histogram of the age bands, bars with 95% noise whiskers.
        assert 'class="figure figure-choropleth"' in page
        assert page.count('class="district"') >= 6
        assert 'class="figure figure-histogram"' in page
        assert 'class="whisker"' in page and " ± " in page
        assert "Differential-privacy noise" in page
        csv = request(app, "GET", f"/jobs/{job_id}/outputs/income_by_district.csv", headers={"Cookie": cookie})
        assert csv.status == 200 and csv.body.splitlines()[0].startswith(b'"district"')
        assert "attachment" in csv.headers["content-disposition"]
        parquet = request(app, "GET", f"/jobs/{job_id}/outputs/income_by_district.parquet", headers={"Cookie": cookie})
        released = app.client.get_result(job_id).output("income_by_district").table
        assert pq.read_table(io.BytesIO(parquet.body)).num_rows == released.num_rows
        budgets = request(app, "GET", "/budgets", headers={"Cookie": cookie}).text
        spent = app.client.list_budgets(dataset="population")[0]
        assert spent.epsilon_spent > 0
        assert re.search(r"<meter min=\"0\" max=\"3.0\" value=\"" + re.escape(str(spent.epsilon_spent)), budgets)
        mock = request(app, "GET", "/catalog/population/mock.csv?rows=50", headers={"Cookie": cookie})
        assert mock.status == 200 and len(mock.body.splitlines()) == 51


def test_the_console_command_prints_a_login_url_that_works_once(
    dp_server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SAFEROOM_PROFILE": str(deployment.pki / "identities/audrey/profile.toml"),
    }
    command = ["console", "--server", f"127.0.0.1:{dp_server.port}", "--checkpoints", str(tmp_path)]
    main = "from saferoom.cli.main import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", main, *command], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)(/login\?token=[A-Za-z0-9_-]+)", line)
        assert match, line

        def get(path: str, cookie: str = "") -> tuple[int, str]:
            conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=60)
            try:
                conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
                reply = conn.getresponse()
                reply.read()
                return reply.status, reply.getheader("set-cookie", "")
            finally:
                conn.close()

        status, set_cookie = get(match.group(2))
        assert status == 303
        assert get("/audit", set_cookie.split(";")[0])[0] == 200
        assert get(match.group(2))[0] == 403  # spent
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_job_list_pages_through_every_job_and_filters_on_the_server(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    """More jobs than a page: every one is reached through "Older jobs", none twice; the filters (state, owner
    for operators, package) are the server's (ListJobs), kept across pages."""
    srv, port = create_server(server_config(catalog_dir, tmp_path / "state", deployment.pki))
    try:
        approve_all(deployment, port, algorithms_dir)
        total = console_app.JOBS_PAGE + 7
        with deployment.client("alice", port) as alice:
            ran = [alice.run_job("echo", {"n": i}) for i in range(total)]
            assert all(alice.wait(j.id, timeout=120).state == "succeeded" for j in ran)
        with running_console(deployment, "olga", port, tmp_path / "checkpoints") as app:
            cookie = login(app)
            seen: list[str] = []
            path = "/jobs?owner=alice&state=succeeded"
            pages = 0
            while path:
                reply = request(app, "GET", path, headers={"Cookie": cookie})
                assert reply.status == 200, reply.text
                seen += re.findall(r'<a href="/jobs/([0-9a-f-]+)">', reply.text)
                assert 'value="alice"' in reply.text and 'value="succeeded" checked' in reply.text  # kept
                found = re.search(r'<a href="([^"]+)" rel="next"', reply.text)
                path = found.group(1).replace("&amp;", "&") if found else ""
                pages += 1
            assert pages == 2 and len(seen) == total and set(seen) == {j.id for j in ran}
            failed = request(app, "GET", "/jobs?state=failed", headers={"Cookie": cookie}).text
            assert "No jobs." in failed
            other = request(app, "GET", "/jobs?package=population-profile", headers={"Cookie": cookie}).text
            assert "No jobs." in other
            hostile = request(
                app, "GET", "/jobs?state=<script>&after=%00%ff&owner=" + "x" * 500, headers={"Cookie": cookie}
            )
            assert hostile.status in (200, 400) and "<script>" not in hostile.text
    finally:
        srv.stop(1.0)
