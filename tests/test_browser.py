"""report.html in a real headless Chromium: every figure loads, no console errors, the key tables are there.

Driver: Selenium with Debian's chromedriver (apt: chromium chromium-driver, versions matched by the distribution;
pip: selenium). Nothing is downloaded: the browser and the driver are given by path. Skips, saying why, where
either is missing; under CI=true that skip is a failure (tests/conftest.py), and .ci/run installs each piece.
Saves a full-page screenshot to the test's tmp dir and to $SOFTMAXLAB_SCREENSHOT if set.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import TABLE_IDS, make_study  # noqa: E402

from softmaxlab import report  # noqa: E402

CHROMIUM = os.environ.get("SOFTMAXLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("SOFTMAXLAB_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900", "--force-device-scale-factor=1"]


@pytest.fixture
def browser(tmp_path):
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.skip(f"{path} not found: apt-get install {pkg} (Debian) to run the browser test")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium to run the browser test")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # with both paths given, Selenium Manager downloads nothing
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_report_renders_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    out = tmp_path / "study"
    summary, images = make_study()
    report.write_report(out, summary, images)
    browser.get((out / "report.html").resolve().as_uri())

    assert browser.title == report.TITLE
    imgs = browser.execute_script(
        "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])")
    assert len(imgs) == len(report.FIGURES)
    for complete, w, h, alt in imgs:
        assert complete and w > 0 and h > 0, f"figure not loaded: {alt}"
    for tid in TABLE_IDS:
        table = browser.find_element(By.ID, tid)
        assert table.is_displayed() and len(table.find_elements(By.TAG_NAME, "tr")) > 1, tid
    # The markup planted in the summary stayed text: no script element, and it reads as typed.
    assert browser.execute_script("return document.scripts.length") == 0
    assert "<script>alert(1)</script>" in browser.find_element(By.ID, "provenance-summary").text
    # The page fits the window's width (wide tables scroll inside their own box).
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")

    shot = _full_page_png(browser)
    (tmp_path / "report.png").write_bytes(shot)
    if os.environ.get("SOFTMAXLAB_SCREENSHOT"):
        Path(os.environ["SOFTMAXLAB_SCREENSHOT"]).write_bytes(shot)
    assert shot.startswith(b"\x89PNG")

    # Every formula is rendered MathML with a size, and nothing was fetched from the network.
    maths = browser.execute_script("return Array.from(document.querySelectorAll('math'), m => { "
                                   "const r = m.getBoundingClientRect(); return [r.width, r.height, m.textContent]; })")
    assert len(maths) >= 12
    for w, h, text in maths:
        assert w > 0 and h > 0, f"formula not rendered: {text[:60]}"
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [u for u in fetched if not u.startswith("data:")] == []
    answers = browser.execute_script("return Array.from(document.querySelectorAll('div.answer'), d => d.id)")
    assert answers == ["answer-p1-q1", "answer-p1-q2", "answer-p2-q1", "answer-p2-q2", "answer-p2-q3",
                       "answer-p2-q4"]

    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, f"console errors: {errors}"


def _full_page_png(driver) -> bytes:
    """The whole page, not just the window (Chromium's DevTools protocol, through chromedriver)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = dict(x=0, y=0, width=size["width"], height=size["height"], scale=1)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})
    return base64.b64decode(shot["data"])
