"""The HTML report in a real browser: Debian's headless Chromium driven by Playwright.

The page is opened from disk with every network request refused, so a plot that needed the
network would not show. The full-page screenshot is saved in the test's tmp folder (its
path is printed; run with ``-s`` to see it).
"""

from __future__ import annotations

import re
import shutil

import pytest

from geodistil.curate import run_split
from geodistil.report import PLOTS, render_report
from geodistil.stats import aggregate_store, run_aggregate
from geodistil.store import TraceStore
from tests.trace_sets import copy_store, damage

# the trace-set fixtures, shared by every module in the session (an import would make one per module)
pytest_plugins = ["tests.fixtures_traces"]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report_path(small_set, tmp_path_factory):
    """A split of the small set, aggregated: the report has every section, by-difficulty included."""
    split = TraceStore(str(tmp_path_factory.mktemp("report") / "split"))
    run_split(small_set.store, split)
    run_aggregate(split)
    return split.root + "/report.html"


def test_the_report_is_one_offline_file(report_path):
    html = open(report_path).read()
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing to fetch
    assert all(f'id="plot-{name}"' in html for name in PLOTS)
    assert 'id="by-difficulty"' in html


def test_unreadable_files_are_listed_in_the_report(small_set, tmp_path):
    store = copy_store(small_set, tmp_path / "damaged")
    broken = damage(store)
    html = render_report(aggregate_store(store))
    assert "3 file(s) could not be read" in html
    assert all(name in html for name in broken)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium is not installed")
def test_report_renders_in_headless_chromium_with_every_plot(report_path, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    refused: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route(re.compile(r"^(?!file:|data:)"), lambda route: (refused.append(route.request.url),
                                                                       route.abort()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"file://{report_path}")
            page.wait_for_load_state("load")
            plots = page.eval_on_selector_all("img[id^='plot-']", """els => els.map(e => {
                const box = e.getBoundingClientRect();
                return {id: e.id, complete: e.complete, natural: e.naturalWidth, w: box.width, h: box.height};
            })""")
            headline = page.inner_text("#headline")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"\nreport screenshot: {shot}")
    assert [p["id"] for p in plots] == [f"plot-{name}" for name in PLOTS]
    for plot in plots:  # decoded (a broken image has no natural width) and laid out at a readable size
        assert plot["complete"] and plot["natural"] > 0, plot
        assert plot["w"] > 300 and plot["h"] > 150, plot
    assert "TRACES" in headline.upper() and "GEOSCORE" in headline.upper()
    assert not refused and not errors
    assert shot.stat().st_size > 50_000
