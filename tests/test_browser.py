"""End to end: every page of the web app in headless Chromium, against a live server over small trained runs.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``)
and the ``selenium`` package. Screenshots go to ``$ORDER_EMBEDDING_SCREENSHOTS`` when set,
otherwise to the test's temporary folder.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from helpers import free_port
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_server import build_workspace, records

from order_embedding import runs
from order_embedding.data import load_split
from order_embedding.index import build_index
from order_embedding.server import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A uvicorn server on a free local port, in a thread, over freshly trained runs."""
    ws = build_workspace(tmp_path_factory.mktemp("browser"))
    index = build_index(ws["runs"] / "order", load_split(ws["data"], "test").features, ws["data"].parent / "shapes-index")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(ws["runs"], indexes=[index]), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", **ws}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven through the system chromedriver (nothing is downloaded)."""
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1100",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def screenshot_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("ORDER_EMBEDDING_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def wait(driver, condition, timeout: float = 30):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def chart_points(driver, chart: str, series: str) -> list[tuple[float, float]]:
    """The (x, y) of the markers of one series of one chart, as the page drew them (read in one step,
    since the page redraws its charts as it polls)."""
    pts = driver.execute_script(
        "const g = [...document.querySelectorAll(`svg[data-chart='${arguments[0]}'] g.series`)]"
        "  .find(e => e.dataset.series === arguments[1]);"
        "return g ? [...g.querySelectorAll('circle.pt')].map(c => [+c.dataset.x, +c.dataset.y]) : [];",
        chart, series)
    return [(float(x), float(y)) for x, y in pts]


def flat(points: list[tuple[float, float]]) -> list[float]:
    return [v for p in points for v in p]


def images_loaded(driver, selector: str) -> bool:
    return driver.execute_script(
        "const im = [...document.querySelectorAll(arguments[0])];"
        "return im.length > 0 && im.every(i => i.complete && i.naturalWidth > 0);", selector)


@pytest.mark.slow
@pytest.mark.system_packages("chromium", "chromium-driver")
def test_every_page_in_headless_chromium(server, browser, tmp_path):
    shots = screenshot_dir(tmp_path)
    url = server["url"]

    # Runs: one row per folder, the broken one as an error row.
    browser.get(url + "/#runs")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs-table tr[data-run]")) == 5)
    broken = browser.find_element(By.CSS_SELECTOR, '#runs-table tr[data-run="broken"]')
    assert "error" in broken.get_attribute("class") and "config.json" in broken.text
    assert str(server["runs"].parent) not in browser.find_element(By.TAG_NAME, "body").text  # no absolute paths
    order_row = browser.find_element(By.CSS_SELECTOR, '#runs-table tr[data-run="order"]').text
    best = max((r for r in records(server["runs"] / "order") if r["event"] == "valid"), key=lambda r: r["score"])
    shown = [float(x) for x in order_row.split()[-10:]]
    expected = [best[d][k] for d in ("t2i", "i2t") for k in ("R@1", "R@5", "R@10", "medr", "meanr")]
    assert shown == pytest.approx(expected, abs=0.051)
    browser.save_screenshot(str(shots / "runs.png"))

    # Training: the plotted markers are the logged points, and a new log line appears without reloading.
    browser.get(url + "/#training")
    wait(browser, lambda d: chart_points(d, "loss", "order") and chart_points(d, "R@1", "symmetric t2i"))
    for run in ("order", "symmetric"):
        logged = records(server["runs"] / run)
        train = [(r["examples"], r["loss"]) for r in logged if r["event"] == "train"]
        assert flat(chart_points(browser, "loss", run)) == pytest.approx(flat(train))
        for d in ("t2i", "i2t"):
            for key in ("R@1", "medr"):
                valid = [(r["examples"], r[d][key]) for r in logged if r["event"] == "valid"]
                assert flat(chart_points(browser, key, f"{run} {d}")) == pytest.approx(flat(valid))
    assert [y for _, y in chart_points(browser, "dev_accuracy", "hyper/order")] == [70.0, 85.5, 80.0]
    runs.append_metrics(server["runs"] / "order", {"event": "train", "uidx": 500, "epoch": 9, "examples": 4000,
                                                   "loss": 1.5, "time": time.time()})
    wait(browser, lambda d: (4000.0, 1.5) in chart_points(d, "loss", "order"), timeout=15)
    browser.save_screenshot(str(shots / "training.png"))

    # Recall curves: one line per model in each direction, and the summary table from the API.
    browser.get(url + "/#curves")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, 'svg[data-chart="curve-t2i"] g.series path')) == 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, 'svg[data-chart="curve-i2t"] g.series path')) == 2
    api = json.loads(browser.execute_script(
        "return await fetch('/api/curves?run=order&split=test').then(r => r.text());"))
    row = browser.find_element(By.CSS_SELECTOR, "#curves-metrics tr:nth-child(3)").text.split()
    assert row[0] == "order"
    expected = [api[d]["metrics"][k] for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10", "medr", "meanr")]
    assert [float(x) for x in row[1:]] == pytest.approx(expected, abs=0.051)
    browser.save_screenshot(str(shots / "curves.png"))

    # Browser: ten captions with their top ten thumbnails, then failures only, then images -> captions.
    browser.get(url + "/#browse")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#browse-items .item")) == 10)
    wait(browser, lambda d: images_loaded(d, "#browse-items img"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#browse-items .item")[0].find_elements(By.TAG_NAME, "img")) == 11
    browser.save_screenshot(str(shots / "browse.png"))
    browser.find_element(By.ID, "browse-failures").click()
    wait(browser, lambda d: "failures" in d.find_element(By.ID, "browse-info").text)
    assert not browser.find_elements(By.CSS_SELECTOR, "#browse-items .item.hit")
    browser.execute_script("const s = document.getElementById('browse-direction'); s.value = 'i2t';"
                           "s.dispatchEvent(new Event('change'));")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#browse-items ol.captions li"))

    # Search: a typed sentence gives image results; clicking one lists its top captions.
    browser.get(url + "/#search")
    wait(browser, lambda d: d.find_element(By.ID, "search-run").get_attribute("value"))
    box = browser.find_element(By.ID, "search-q")
    box.send_keys("a red square")
    browser.find_element(By.ID, "search-go").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-results .search-result")) == 10)
    wait(browser, lambda d: images_loaded(d, "#search-results img"))
    assert "a red square" in browser.find_element(By.ID, "search-note").text
    browser.find_elements(By.CSS_SELECTOR, "#search-results .search-result img")[0].click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#image-results ol.captions li")) == 10)
    browser.save_screenshot(str(shots / "search.png"))
    # The same sentence against the on-disk index the server was given.
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-source option")) == 2)
    browser.execute_script("const s = document.getElementById('search-source'); s.value = 'shapes-index';"
                           "s.dispatchEvent(new Event('change'));")
    assert not browser.find_element(By.ID, "image-form").is_displayed()
    browser.find_element(By.ID, "search-go").click()
    wait(browser, lambda d: d.execute_script(  # read in one step: the results are being replaced
        "const t = [...document.querySelectorAll('#search-results img')].map(i => i.title);"
        "return t.length === 10 && t.every(x => x.includes('index shapes-index'));"))
    wait(browser, lambda d: images_loaded(d, "#search-results img"))
    browser.save_screenshot(str(shots / "search-index.png"))
    for name in ("runs", "training", "curves", "browse", "search", "search-index"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
