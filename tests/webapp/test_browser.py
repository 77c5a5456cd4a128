"""End to end: `alz ui` serves the app on a free port, headless Chromium opens the lineage
page of the best candidate, and the whole ancestry is on the page. The screenshot is kept
as a test artifact (``artifacts/webapp/lineage_best.png`` at the repository root, ignored by
git, or under ``ALZ_TEST_ARTIFACTS``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/test.sh`` installs them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.world import World

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("ALZ_TEST_ARTIFACTS") or
                 Path(__file__).resolve().parents[2] / "artifacts" / "webapp")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (apt-get install "
                       "chromium chromium-driver; scripts/test.sh does it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"`alz ui` exited with {proc.returncode}: {out}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                        timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the app did not answer on port {port} within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[int]:
    """`alz ui` on a free port, as a user runs it (it creates its own read-only role)."""
    port = _free_port()
    role = "alz_ui_e2e"
    env = {k: v for k, v in os.environ.items() if k != "ALZ_UI_DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alz_db.cli", "ui", "--database-url", world.owner_url,
         "--port", str(port), "--role", role],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        from alz_db import drop_role, make_engine, make_session_factory, session_scope

        engine = make_engine(world.owner_url)
        try:
            with session_scope(make_session_factory(engine)) as s:
                drop_role(s, role)
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,2200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_lineage_of_the_best_candidate_is_on_the_served_page(world: World, served: int,
                                                                 browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ids = world.ids
    browser.get(f"http://127.0.0.1:{served}/lineage?search={world.search_id}")

    def drawn(driver) -> bool:  # noqa: ANN001 - a WebDriver
        # the graph is an SVG drawn by the browser once the script has run
        svg = driver.find_elements(By.CSS_SELECTOR, "svg g.node")
        return len(svg) >= 3

    WebDriverWait(browser, 90, poll_frequency=0.5).until(drawn)
    time.sleep(1.0)  # let the layout settle for the screenshot
    page = browser.find_element(By.TAG_NAME, "body").text
    # no candidate asked for: the page opens on the best candidate of the search
    assert f"Lineage of candidate {ids['D']}" in page
    assert f"back to initial candidate {ids['B']}" in page
    nodes = " ".join(n.text for n in browser.find_elements(By.CSS_SELECTOR, "svg g.node"))
    for letter, fitness in (("B", "0.4500"), ("C", "0.6200"), ("D", "0.7100")):
        assert f"#{ids[letter]}" in nodes and f"miou {fitness}" in nodes, nodes
    assert "Traceback" not in page and "Error" not in page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "lineage_best.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot of the lineage page: {shot}")
