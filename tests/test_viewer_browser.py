"""The viewer in a real browser: headless Chromium (Debian's) driven by Playwright.

Opens the list, filters it, opens a trace, and checks what a person would look at: every
image decoded, the map drawn with both markers, the zoom box over the image it was cut
from, prev/next by keyboard. Screenshots go to the test's tmp folder (path printed).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator

import pytest

from geodistil.store import TraceStore, trace_name
from tests.viewer_support import make_real_store, running_viewer, synthetic_trace

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ZOOM = "image_zoom_in_tool"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium is not installed"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TraceStore:
    return make_real_store(tmp_path_factory.mktemp("browser"), samples=10)


@contextlib.contextmanager
def browsing(store: TraceStore) -> Iterator[tuple]:
    """A browser page on a running viewer of ``store``, with the URLs it requests and the errors it logs."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with running_viewer(store) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_page(viewport={"width": 1400, "height": 1000})
        requested: list[str] = []
        errors: list[str] = []
        context.on("request", lambda r: requested.append(r.url))
        context.on("pageerror", lambda e: errors.append(str(e)))
        context.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            yield context, base, requested, errors
        finally:
            browser.close()


@pytest.fixture()
def page(store):
    with browsing(store) as opened:
        yield opened


def _images_decoded(page) -> list[dict]:
    return page.eval_on_selector_all(
        "img", "els => els.map(e => ({src: e.getAttribute('src'), complete: e.complete, w: e.naturalWidth}))")


def test_list_filter_trace_images_map_and_zoom_box(page, store, tmp_path):
    pg, base, requested, errors = page
    shots = tmp_path / "screenshots"
    shots.mkdir()

    pg.goto(f"{base}/")
    assert pg.locator("#traces tbody tr").count() == len(store.trace_names())
    pg.screenshot(path=str(shots / "list.png"), full_page=True)

    # filter: traces that zoomed, best reward first
    pg.select_option("select[name=tool]", ZOOM)
    pg.select_option("select[name=sort]", "reward")
    pg.select_option("select[name=order]", "desc")
    with pg.expect_navigation():
        pg.click("#filters button[type=submit]")
    rows = pg.locator("#traces tbody tr")
    zoomers = [n for n, t in store.iter_traces() if any(c.tool_name == ZOOM for c in t.tool_calls_log)]
    assert zoomers and rows.count() == len(zoomers)
    rewards = [float(x) for x in pg.locator("#traces tbody tr td:nth-child(4)").all_inner_texts()]
    assert rewards == sorted(rewards, reverse=True)
    pg.screenshot(path=str(shots / "list-filtered.png"), full_page=True)

    # open the first trace of the filtered list
    with pg.expect_navigation():
        pg.click("#traces tbody tr:first-child td:first-child a")
    pg.wait_for_load_state("networkidle")
    name = pg.locator("h1").inner_text()
    trace = store.read_trace(name)

    images = _images_decoded(pg)
    assert images and all(i["complete"] and i["w"] > 0 for i in images), images
    assert {i["src"].rsplit("/", 1)[-1] for i in images} == {f"{r.ref}.png" for r in trace.images}

    world = pg.locator("#map-world")
    assert world.is_visible() and world.bounding_box()["width"] > 300
    for marker in ("truth-marker", "prediction-marker"):
        box = pg.locator(f"#map-world .{marker}").bounding_box()
        assert box and box["width"] > 0, marker
    land = pg.eval_on_selector("#map-world use.land", "e => e.getBBox().width")
    assert land > 300  # the countries span the map (in map units, 360 wide)
    assert "km" in pg.locator("#distance").inner_text()

    zoom_boxes = pg.locator(".zoombox")
    assert zoom_boxes.count() == sum(c.tool_name == ZOOM and c.success for c in trace.tool_calls_log)
    box = zoom_boxes.first.bounding_box()
    under = pg.locator(".zoombox").first.locator("xpath=preceding-sibling::img").bounding_box()
    assert box["width"] > 5 and box["height"] > 5
    assert under["x"] - 1 <= box["x"] and box["x"] + box["width"] <= under["x"] + under["width"] + 1
    assert under["y"] - 1 <= box["y"] and box["y"] + box["height"] <= under["y"] + under["height"] + 1
    expected = trace.tool_calls_log[0].resolved["box_px"] if trace.tool_calls_log[0].tool_name == ZOOM else None
    if expected:  # the overlay sits where the crop was taken, to a pixel or two of the displayed scale
        scale = under["width"] / trace.images[trace.tool_calls_log[0].input_ref].size[0]
        assert abs(box["x"] - under["x"] - expected[0] * scale) <= 3
    assert pg.locator(".check.bad").count() == 0 and pg.locator(".check.ok").count() >= len(trace.images)
    pg.screenshot(path=str(shots / "trace.png"), full_page=True)

    # keyboard navigation to the next trace in the filtered order
    if pg.locator("#next").count():
        with pg.expect_navigation():
            pg.keyboard.press("ArrowRight")
        assert pg.locator("h1").inner_text() != name
        assert "tool=image_zoom_in_tool" in pg.url

    assert all(u.startswith(base) for u in requested), [u for u in requested if not u.startswith(base)]
    assert not errors, errors
    print(f"screenshots in {shots}")
    assert all((shots / f).stat().st_size > 10_000 for f in ("list.png", "list-filtered.png", "trace.png"))



def test_a_trace_with_nan_and_infinity_renders(tmp_path):
    store = TraceStore(str(tmp_path / "nan"))
    doc = json.loads(synthetic_trace(0, reward=0.5).to_json())
    doc.update(reward_score=float("nan"), distance_km=float("inf"), prediction={"lat": float("nan"), "lon": 21.0})
    store.write_bytes(trace_name(0), json.dumps(doc).encode())  # bare NaN and Infinity, as Python's json writes them
    with browsing(store) as (pg, base, requested, errors):
        pg.goto(f"{base}/")
        assert pg.locator("#traces tbody tr td.num").all_inner_texts()[2:4] == ["NaN", "Infinity"]
        with pg.expect_navigation():
            pg.click("#traces tbody tr:first-child td:first-child a")
        facts = pg.locator(".facts").first.inner_text()
        assert "NaN" in facts and "Infinity km" in facts and "NaN, 21.0000" in facts
        assert pg.locator("#map-world .truth-marker").bounding_box()["width"] > 0
        assert pg.locator("#map-world .prediction-marker").count() == 0
        assert "prediction not drawn" in pg.locator(".legend").inner_text()
        pg.screenshot(path=str(tmp_path / "nan-trace.png"), full_page=True)
        assert not errors, errors
