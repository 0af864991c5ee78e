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


def pick(driver, select_id: str, value: str) -> None:
    """Choose ``value`` in a select and fire its change event, as a user's choice does."""
    driver.execute_script("const s = document.getElementById(arguments[0]); s.value = arguments[1];"
                          "s.dispatchEvent(new Event('change'));", select_id, value)


def search_shown(driver) -> dict:
    """The run the search results are for and their (image, error) pairs, read in one step."""
    return driver.execute_script(
        "const box = document.getElementById('search-results');"
        "return {run: box.dataset.run, split: box.dataset.split, note: document.getElementById('search-note').textContent,"
        "  items: [...box.querySelectorAll('.search-result')].map(t => +t.dataset.image)};")


@pytest.mark.slow
@pytest.mark.system_packages("chromium", "chromium-driver")
def test_every_page_in_headless_chromium(server, browser, tmp_path):
    shots = screenshot_dir(tmp_path)
    url = server["url"]
    figures = {"kind": "demo", "protocol": "mean over 2 folds of 8 test images",
               "order": {"t2i": {"R@1": 40.0, "R@5": 80.0}, "hierarchy_accuracy": 75.0},
               "symmetric": {"t2i": {"R@1": 35.0, "R@5": 70.0}, "hierarchy_accuracy": 50.0},
               "baselines": {"word count": {"t2i": {"R@1": 12.5}}},
               "roc": {"auc": 0.8, "fpr": [0.0, 0.2, 1.0], "tpr": [0.0, 0.7, 1.0]}}
    (server["runs"] / "order" / "results.json").write_text(json.dumps(figures))

    # Runs: one row per folder, the broken one as an error row; status, options, best dev figures.
    browser.get(url + "/#runs")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs-table tr[data-run]")) == 5)
    broken = browser.find_element(By.CSS_SELECTOR, '#runs-table tr[data-run="broken"]')
    assert "error" in broken.get_attribute("class") and "config.json" in broken.text
    assert str(server["runs"].parent) not in browser.find_element(By.TAG_NAME, "body").text  # no absolute paths
    assert "Runs folder: runs" in browser.find_element(By.ID, "runs-dir").text
    row = browser.execute_script(  # read in one step: the table is redrawn as it polls
        "const tr = document.querySelector('#runs-table tr[data-run=\"order\"]');"
        "const text = sel => tr.querySelector(sel).textContent.trim();"
        "return {metrics: [...tr.querySelectorAll('td.metric')].map(c => c.textContent), score: text('td.score'),"
        "  status: text('td.status'), kind: text('td.kind'),"
        "  options: [...tr.querySelectorAll('table.options tr')].map(r => [...r.cells].map(c => c.textContent))};")
    best = max((r for r in records(server["runs"] / "order") if r["event"] == "valid"), key=lambda r: r["score"])
    expected = [best[d][k] for d in ("t2i", "i2t") for k in ("R@1", "R@5", "R@10", "medr", "meanr")]
    assert [float(x) for x in row["metrics"]] == pytest.approx(expected, abs=0.051)
    assert float(row["score"]) == pytest.approx(best["score"], abs=0.051)
    assert row["status"] == "finished" and row["kind"].startswith("demo")  # the kind from its results.json
    options = dict(row["options"])
    config = json.loads((server["runs"] / "order" / runs.CONFIG).read_text())
    assert options["margin"] == str(config["train"]["margin"]) and options["optimizer"] == config["train"]["optimizer"]
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
    rings = browser.execute_script("return [...document.querySelectorAll(\"svg[data-chart='dev_accuracy'] g.series\")]"
                                   ".find(g => g.dataset.series === 'hyper/order').querySelectorAll('circle.best').length")
    assert rings == 1  # the best checkpoint
    runs.append_metrics(server["runs"] / "order", {"event": "train", "uidx": 500, "epoch": 9, "examples": 4000,
                                                   "loss": 1.5, "time": time.time()})
    wait(browser, lambda d: (4000.0, 1.5) in chart_points(d, "loss", "order"), timeout=15)
    # x axis by update, log scale, smoothing: markers stay the logged values, the drawn line is their moving average
    pick(browser, "training-x", "uidx")
    logged = [r for r in records(server["runs"] / "order") if r["event"] == "train"]
    wait(browser, lambda d: flat(chart_points(d, "loss", "order")) == pytest.approx(flat([(r["uidx"], r["loss"]) for r in logged])))
    browser.execute_script("const s = document.getElementById('training-smooth'); s.value = '0.5';"
                           "s.dispatchEvent(new Event('input'));")
    browser.find_element(By.ID, "training-logy").click()
    wait(browser, lambda d: d.execute_script("return chartCSV('loss')").count("\n") > 1)
    csv = browser.execute_script("return chartCSV('loss')").strip().splitlines()
    assert csv[0] == "series,update,value,drawn"
    rows = [line.split(",") for line in csv[1:] if line.startswith("order,")]
    ema, n, smoothed = 0.0, 0, []
    for r in logged:  # TensorBoard's debiased moving average, recomputed here
        ema, n = 0.5 * ema + 0.5 * r["loss"], n + 1
        smoothed.append(ema / (1 - 0.5 ** n))
    assert [float(v) for _, a, b, _ in rows for v in (a, b)] == pytest.approx(flat([(r["uidx"], r["loss"]) for r in logged]))
    assert [float(r[3]) for r in rows] == pytest.approx(smoothed, rel=1e-6)
    browser.save_screenshot(str(shots / "training.png"))

    # Results: every figure of results.json, with its protocol, the baseline beside the models, the ROC curve.
    browser.get(url + "/#results")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results-body table.figures"))
    body = browser.find_element(By.ID, "results-body").text
    assert "protocol: mean over 2 folds of 8 test images" in body
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#results-body table.by-column th")]
    assert {"order", "symmetric", "baseline: word count"} <= set(header)
    cells = {tr.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in tr.find_elements(By.TAG_NAME, "td")[1:]]
             for tr in browser.find_elements(By.CSS_SELECTOR, "#results-body table.by-column tr")[1:]}
    assert cells["t2i.R@1"] == ["40", "35", "12.5"] and cells["hierarchy_accuracy"] == ["75", "50", "–"]
    roc = chart_points(browser, "roc", "roc (AUC 0.8)")
    assert roc == [] or flat(roc) == pytest.approx([0, 0, 0.2, 0.7, 1, 1])
    assert browser.find_elements(By.CSS_SELECTOR, "svg[data-chart='roc'] g.series path")
    browser.save_screenshot(str(shots / "results.png"))

    # Compare: the options of the ticked runs side by side, differences marked; one search, both models.
    browser.get(url + "/#compare")
    for other in ("halfway", "hyper"):  # compare the two trained models only
        wait(browser, lambda d, other=other: d.find_elements(By.CSS_SELECTOR, f'.compare-check[data-run="{other}"]'))
        browser.find_element(By.CSS_SELECTOR, f'.compare-check[data-run="{other}"]').click()
    wait(browser, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#compare-options th')].map(t => t.textContent).join(',')") == "option,order,symmetric")
    diff = {tr.get_attribute("data-option") for tr in browser.find_elements(By.CSS_SELECTOR, "#compare-options tr.diff")}
    configs = {r: json.loads((server["runs"] / r / runs.CONFIG).read_text()) for r in ("order", "symmetric")}
    merged = {r: {**c["model"], **c["train"]} for r, c in configs.items()}
    assert diff == {k for k in merged["order"].keys() | merged["symmetric"].keys()
                    if merged["order"].get(k, "absent") != merged["symmetric"].get(k, "absent")}
    assert "method" in diff
    browser.find_element(By.ID, "compare-q").send_keys("a red square")
    browser.find_element(By.ID, "compare-go").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#compare-results .compare-col .thumb")) == 20)
    cols = [c.get_attribute("data-run") for c in browser.find_elements(By.CSS_SELECTOR, "#compare-results .compare-col")]
    assert cols == ["order", "symmetric"] and configs["order"]["train"]["method"] != configs["symmetric"]["train"]["method"]
    wait(browser, lambda d: images_loaded(d, "#compare-results img"))
    browser.save_screenshot(str(shots / "compare.png"))

    # Recall curves: one line per model in each direction, the summary table from the API, the protocol named.
    browser.get(url + "/#curves")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, 'svg[data-chart="curve-t2i"] g.series path')) == 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, 'svg[data-chart="curve-i2t"] g.series path')) == 2
    api = json.loads(browser.execute_script(
        "return await fetch('/api/curves?run=order&split=test').then(r => r.text());"))
    row = browser.find_element(By.CSS_SELECTOR, "#curves-metrics tr:nth-child(3)").text.split()
    assert row[0] == "order"
    expected = [api[d]["metrics"][k] for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10", "medr", "meanr")]
    assert [float(x) for x in row[1:]] == pytest.approx(expected, abs=0.051)
    assert "test split: all 16 images ranked at once" in browser.find_element(By.ID, "curves-protocol").text
    # the ROC the order run recorded in results.json, drawn beside the curves (the symmetric run records none)
    wait(browser, lambda d: d.execute_script("return chartCSV('curves-roc')").count("\n") > 1)
    csv = browser.execute_script("return chartCSV('curves-roc')").strip().splitlines()
    assert csv[0] == "series,false positive rate,value,drawn"
    assert [[float(v) for v in line.split(",")[1:3]] for line in csv[1:]] == [[0, 0], [0.2, 0.7], [1, 1]]
    assert {line.split(",")[0] for line in csv[1:]} == {"order (AUC 0.8)"}
    assert "mean over 2 folds of 8 test images" in browser.find_element(By.ID, "curves-roc-protocol").text
    browser.save_screenshot(str(shots / "curves.png"))

    # Browser: ten captions with their top ten thumbnails, each image the caption truly describes marked.
    browser.get(url + "/#browse")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#browse-items .item")) == 10)
    wait(browser, lambda d: images_loaded(d, "#browse-items img"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#browse-items .item")[0].find_elements(By.TAG_NAME, "img")) == 11
    page = json.loads(browser.execute_script(
        "return await fetch('/api/browse?run=order&split=test&direction=t2i&limit=10').then(r => r.text());"))
    marked = [len(item.find_elements(By.CSS_SELECTOR, ".thumbs .thumb.true")) for item in
              browser.find_elements(By.CSS_SELECTOR, "#browse-items .item")]
    assert marked == [sum(bool(t["true"]) for t in it["top"]) for it in page["items"]] and sum(marked) > 10
    assert "test split" in browser.find_element(By.ID, "browse-protocol").text
    browser.save_screenshot(str(shots / "browse.png"))
    browser.find_element(By.ID, "browse-failures").click()
    wait(browser, lambda d: "failures" in d.find_element(By.ID, "browse-info").text)
    assert not browser.find_elements(By.CSS_SELECTOR, "#browse-items .item.hit")
    pick(browser, "browse-direction", "i2t")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#browse-items ol.captions li"))

    # Search: a typed sentence gives image results; switching run or split asks again (never the old model's list).
    browser.get(url + "/#search")
    wait(browser, lambda d: d.find_element(By.ID, "search-run").get_attribute("value"))
    pick(browser, "search-run", "order")
    browser.find_element(By.ID, "search-q").send_keys("a red square")
    browser.find_element(By.ID, "search-go").click()
    wait(browser, lambda d: len(search_shown(d)["items"]) == 10)
    wait(browser, lambda d: images_loaded(d, "#search-results img"))
    assert "a red square" in browser.find_element(By.ID, "search-note").text
    for run, split in (("symmetric", "test"), ("symmetric", "dev"), ("order", "dev")):
        want = json.loads(browser.execute_script(
            f"return await fetch('/api/search?run={run}&split={split}&q=a+red+square&k=10').then(r => r.text());"))
        if split != browser.find_element(By.ID, "search-split").get_attribute("value"):
            pick(browser, "search-split", split)
        else:
            pick(browser, "search-run", run)
        wait(browser, lambda d, run=run, split=split: (lambda s: s["run"] == run and s["split"] == split
                                                               and len(s["items"]) == 10)(search_shown(d)))
        shown = search_shown(browser)
        assert shown["items"] == [r["image"] for r in want["results"]]
        assert f"run {run}, {split} split" in shown["note"]
    pick(browser, "search-split", "test")
    wait(browser, lambda d: search_shown(d)["split"] == "test" and len(search_shown(d)["items"]) == 10)
    browser.find_elements(By.CSS_SELECTOR, "#search-results .search-result img")[0].click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#image-results ol.captions li")) == 10)
    browser.save_screenshot(str(shots / "search.png"))
    # The same sentence against the on-disk index the server was given.
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-source option")) == 2)
    pick(browser, "search-source", "shapes-index")
    assert not browser.find_element(By.ID, "image-form").is_displayed()
    wait(browser, lambda d: d.execute_script(  # read in one step: the results are being replaced
        "const t = [...document.querySelectorAll('#search-results img')].map(i => i.title);"
        "return t.length === 10 && t.every(x => x.includes('index shapes-index'));"), timeout=60)
    wait(browser, lambda d: images_loaded(d, "#search-results img"))
    browser.save_screenshot(str(shots / "search-index.png"))

    # Probe: E(a, b) and E(b, a) of two typed sentences, unknown words listed, and a caption against an image.
    browser.get(url + "/#probe")
    wait(browser, lambda d: d.find_element(By.ID, "probe-run").get_attribute("value"))
    pick(browser, "probe-run", "order")
    browser.find_element(By.ID, "probe-a").send_keys("a red shape")
    browser.find_element(By.ID, "probe-b").send_keys("a red square qqq")
    browser.find_element(By.ID, "probe-go").click()
    wait(browser, lambda d: d.find_elements(By.ID, "probe-eab"))
    want = json.loads(browser.execute_script(
        "return await fetch('/api/probe?run=order&a=a+red+shape&b=a+red+square+qqq').then(r => r.text());"))
    assert float(browser.find_element(By.ID, "probe-eab").text) == pytest.approx(want["E_ab"], abs=6e-6)
    assert float(browser.find_element(By.ID, "probe-eba").text) == pytest.approx(want["E_ba"], abs=6e-6)
    assert "not in the vocabulary: qqq" in browser.find_element(By.ID, "probe-pair").text
    browser.find_element(By.ID, "probe-caption").send_keys("a red square")
    browser.find_element(By.ID, "probe-image-go").click()
    wait(browser, lambda d: d.find_elements(By.ID, "probe-eai"))
    wait(browser, lambda d: images_loaded(d, "#probe-image-result img"))
    browser.save_screenshot(str(shots / "probe.png"))
    for name in ("runs", "training", "results", "compare", "curves", "browse", "search", "search-index", "probe"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
