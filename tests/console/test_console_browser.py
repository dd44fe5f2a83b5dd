"""Each role's main task clicked through in a real headless Chromium, against a real mutual-TLS server.

The city is the exact-rules one with output checking required, so that the researcher's site selection is
held until an output checker approves it in their own console, and only then shows on the map. Screenshots of
every main page go to tests/artifacts/ (the README's come from here)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from saferoom.server import SaferoomServer, create_server
from tests.conftest import ALGORITHMS
from tests.support import Deployment, approve_all, server_config
from tests.support_console import chromium, running_console, screenshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checked_server(
    checked_catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    """The exact-rules city (results held for output checking); alice's vetted packages approved by olga."""
    srv, port = create_server(server_config(checked_catalog_dir, tmp_path_factory.mktemp("state"), deployment.pki))
    try:
        approve_all(deployment, port, ALGORITHMS)
        yield srv
    finally:
        srv.stop(1.0)


def wait_for(driver: object, condition: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            screenshot(driver, "timeout")
            raise AssertionError("the page never reached the expected state")
        time.sleep(0.3)


def text_of(driver: object, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]
    return str(found[0].text) if found else ""


def test_researcher_runs_site_selection_a_checker_releases_it_and_the_map_shows_the_candidates(
    checked_server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    port = checked_server.port
    with (
        running_console(deployment, "alice", port, tmp_path / "cp-alice") as alice,
        running_console(deployment, "quinn", port, tmp_path / "cp-quinn") as quinn,
        chromium() as driver,
    ):
        driver.get(alice.url)  # type: ignore[attr-defined]
        assert "alice" in text_of(driver, "#identity")
        driver.find_element(By.LINK_TEXT, "Packages").click()  # type: ignore[attr-defined]
        driver.find_element(By.LINK_TEXT, "site-selection").click()  # type: ignore[attr-defined]
        top = driver.find_element(By.CSS_SELECTOR, "input[name='param.top']")  # type: ignore[attr-defined]
        top.clear()
        top.send_keys("6")
        driver.find_element(By.ID, "run").click()  # type: ignore[attr-defined]
        wait_for(driver, lambda: "/jobs/" in driver.current_url, 30)  # type: ignore[attr-defined]
        # The job page follows the job live (it reloads itself) until it settles: held for a checker.
        wait_for(driver, lambda: text_of(driver, "#state") == "awaiting_check")
        job_url = driver.current_url  # type: ignore[attr-defined]
        job_id = job_url.rsplit("/", 1)[-1]
        assert not driver.find_elements(By.CSS_SELECTOR, "figure")  # type: ignore[attr-defined]

        # The output checker, in their own console (its own cookie: consoles on one host do not collide).
        driver.get(quinn.url)  # type: ignore[attr-defined]
        assert driver.current_url.endswith("/checks")  # type: ignore[attr-defined]
        driver.find_element(By.LINK_TEXT, job_id).click()  # type: ignore[attr-defined]
        wait_for(driver, lambda: len(text_of(driver, "#result-hash")) == 64, 30)
        shown_hash = text_of(driver, "#result-hash")
        assert len(shown_hash) == 64
        assert driver.find_elements(By.CSS_SELECTOR, "figure.figure-map svg")  # type: ignore[attr-defined]
        screenshot(driver, "console-checker", focus="#outputs-title")
        driver.find_element(By.ID, "d-approve").click()  # type: ignore[attr-defined]
        driver.find_element(By.ID, "decide").click()  # type: ignore[attr-defined]
        wait_for(driver, lambda: "approve" in text_of(driver, "#note"), 30)
        assert job_id not in text_of(driver, "#held")  # no longer waiting for a decision

        # Back in the researcher's console: released, drawn on the map of the city.
        driver.get(job_url)  # type: ignore[attr-defined]
        wait_for(driver, lambda: text_of(driver, "#state") == "succeeded")
        svg = driver.find_element(By.CSS_SELECTOR, "figure.figure-map svg")  # type: ignore[attr-defined]
        assert len(svg.find_elements(By.CSS_SELECTOR, "polygon.district")) == 6
        markers = svg.find_elements(By.CSS_SELECTOR, "g.candidate")
        assert 1 <= len(markers) <= 6
        assert driver.find_elements(By.LINK_TEXT, "CSV")  # type: ignore[attr-defined]
        screenshot(driver, "console-researcher", focus="#output-1")
        with deployment.client("alice", port) as client:
            released = client.get_result(job_id).output("candidates").table
        assert released is not None and released.num_rows == len(markers)


def test_operator_reviews_the_diff_and_approves_signing_locally(
    checked_server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    port = checked_server.port
    changed = tmp_path / "population_profile"
    shutil.copytree(ALGORITHMS / "population_profile", changed)
    main = changed / "main.py"
    main.write_text(main.read_text().replace("band_years=10", "band_years=5"))
    with deployment.client("bob", port) as bob:
        submitted, _ = bob.submit_package(changed)
    assert submitted.status == "pending"
    with running_console(deployment, "olga", port, tmp_path / "cp") as olga, chromium() as driver:
        driver.get(olga.url)  # type: ignore[attr-defined]
        assert driver.current_url.endswith("/review")  # type: ignore[attr-defined]
        driver.find_element(By.CSS_SELECTOR, f"#pending a[href='/review/{submitted.hash}']").click()  # type: ignore[attr-defined]
        wait_for(driver, lambda: text_of(driver, "#hash") == submitted.hash, 30)
        diff = text_of(driver, "#diff")
        assert "+def run(ctx, band_years=5):" in diff and "-def run(ctx, band_years=10):" in diff
        screenshot(driver, "console-operator", focus="#diff-title")
        driver.find_element(By.ID, "approve").click()  # type: ignore[attr-defined]
        wait_for(driver, lambda: "approved" in text_of(driver, "#note"), 30)
    with deployment.client("bob", port) as bob:
        approved = bob.get_package(submitted.hash)
    assert approved.status == "approved" and approved.approver == "olga"


def test_auditor_verifies_the_log_against_a_saved_checkpoint(
    checked_server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    with running_console(deployment, "audrey", checked_server.port, tmp_path / "cp") as audrey, chromium() as driver:
        driver.get(audrey.url)  # type: ignore[attr-defined]
        assert driver.current_url.endswith("/audit")  # type: ignore[attr-defined]
        rows = driver.find_elements(By.CSS_SELECTOR, "#records tbody tr")  # type: ignore[attr-defined]
        assert len(rows) > 5
        screenshot(driver, "console-auditor")
        driver.find_element(By.ID, "f-event").send_keys("package_approved")  # type: ignore[attr-defined]
        driver.find_element(By.ID, "f-event").submit()  # type: ignore[attr-defined]
        wait_for(driver, lambda: "event=package_approved" in driver.current_url, 30)  # type: ignore[attr-defined]
        events = {r.text for r in driver.find_elements(By.CSS_SELECTOR, "#records tbody td:nth-child(3)")}  # type: ignore[attr-defined]
        assert events == {"package_approved"}
        driver.find_element(By.ID, "verify").click()  # type: ignore[attr-defined]
        wait_for(driver, lambda: text_of(driver, "#verdict").startswith("Verified:"), 60)
        assert len(list((tmp_path / "cp").glob("checkpoint-*.json"))) == 1
        driver.find_element(By.LINK_TEXT, "Back to the log").click()  # type: ignore[attr-defined]
        driver.find_element(By.ID, "verify").click()  # type: ignore[attr-defined]
        wait_for(driver, lambda: "consistent with 1 saved checkpoint" in text_of(driver, "#verdict"), 60)
        assert text_of(driver, "#verdict").startswith("Verified:")

        # Keyboard: the first Tab reaches the skip link, Enter moves focus to the content.
        driver.get(f"http://127.0.0.1:{audrey.port}/audit")  # type: ignore[attr-defined]
        body = driver.find_element(By.TAG_NAME, "body")  # type: ignore[attr-defined]
        body.send_keys(Keys.TAB)
        active = driver.switch_to.active_element  # type: ignore[attr-defined]
        assert active.get_attribute("class") == "skip"
        active.send_keys(Keys.ENTER)
        assert driver.switch_to.active_element.get_attribute("id") == "main"  # type: ignore[attr-defined]
        labelled = driver.execute_script(  # type: ignore[attr-defined]
            "return [...document.querySelectorAll('input:not([type=hidden])')]"
            ".every(i => document.querySelector('label[for=\"' + i.id + '\"]'))"
        )
        assert labelled  # every visible field has its label

        # A phone: nothing wider than the screen but the tables, which scroll in their own box.
        driver.set_window_size(390, 844)  # type: ignore[attr-defined]
        driver.refresh()  # type: ignore[attr-defined]
        width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")  # type: ignore[attr-defined]
        assert width[0] <= width[1] + 1, width
