"""The trace viewer: the list API (sort, filter, pages), the trace page, images, and what it refuses."""

from __future__ import annotations

import http.client
import io
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from starlette.testclient import TestClient

from geodistil.images import pixel_sha256
from geodistil.replay import pixel_hashes
from geodistil.store import TraceStore, trace_name
from geodistil.trace import Message
from geodistil.viewer import TraceQuery
from geodistil.viewer.worldmap import great_circle, inset_box, land_path, map_view, project
from tests.viewer_support import make_real_store, running_viewer, synthetic_trace, viewer_client, write_synthetic

CODE, ZOOM, ROTATE = "python_code_tool", "image_zoom_in_tool", "image_rotate_tool"


@pytest.fixture()
def synthetic(tmp_path) -> TraceStore:
    """12 traces: rewards 0.0 .. 0.55, every third used the code tool, samples 9 and 10 failed."""
    store = TraceStore(str(tmp_path / "syn"))
    traces = []
    for i in range(12):
        tools = (CODE, ZOOM) if i % 3 == 0 else (ZOOM,) if i % 2 else ()
        traces.append(synthetic_trace(i, reward=round(0.05 * ((i * 7) % 12), 2), tools=tools,
                                      error="teacher gave up" if i in (9, 10) else None, turns=1 + i % 4,
                                      failed_tool=i == 3))
    write_synthetic(store, traces)
    return store


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> TraceStore:
    return make_real_store(tmp_path_factory.mktemp("viewer"))


def api(client: TestClient, query: str = "") -> dict:
    response = client.get(f"/api/traces{query}")
    assert response.status_code == 200, response.text
    return response.json()


def test_list_is_sorted_by_reward_both_ways_with_ties_in_sample_order(synthetic):
    client = viewer_client(synthetic)
    asc = [r["reward"] for r in api(client, "?sort=reward&order=asc&per_page=100")["traces"]]
    desc = [r["reward"] for r in api(client, "?sort=reward&order=desc&per_page=100")["traces"]]
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True) and len(asc) == 12


def test_list_defaults_to_sample_order(synthetic):
    rows = api(viewer_client(synthetic))["traces"]
    assert [r["sample"] for r in rows] == list(range(12))


def test_filters_combine_reward_tool_and_failure(synthetic):
    client = viewer_client(synthetic)
    low_code = api(client, f"?max_reward=0.2&tool={CODE}&per_page=100")["traces"]
    assert low_code and all(r["reward"] <= 0.2 and CODE in r["tools"] for r in low_code)
    failed = api(client, "?failed=1")
    assert [r["sample"] for r in failed["traces"]] == [9, 10] and failed["matched"] == 2
    assert api(client, "?failed=0")["matched"] == 10
    assert [r["sample"] for r in api(client, "?tool_errors=1")["traces"]] == [3]
    assert api(client, "?stop=error")["matched"] == 2 and api(client, "?q=gave+up")["matched"] == 2
    assert api(client, "?tool=no_such_tool")["matched"] == 0


def test_the_issue_example_query_is_answered(synthetic):
    body = api(viewer_client(synthetic),
               f"?sort=reward&order=asc&max_reward=0.2&tool={CODE}&failed=1&page=3")
    # sample 9 used the code tool, failed, and has reward 0.15; one match means one page
    assert body["matched"] == 1 and body["page"] == 1 and body["traces"][0]["sample"] == 9


def test_pages_partition_the_sorted_list(synthetic):
    client = viewer_client(synthetic)
    pages = [api(client, f"?sort=distance&per_page=5&page={p}") for p in (1, 2, 3)]
    names = [r["name"] for page in pages for r in page["traces"]]
    assert [len(p["traces"]) for p in pages] == [5, 5, 2] and pages[0]["pages"] == 3
    assert len(set(names)) == 12
    assert names == [r["name"] for r in api(client, "?sort=distance&per_page=12")["traces"]]
    assert api(client, "?per_page=5&page=99")["page"] == 3  # past the end: the last page


@pytest.mark.parametrize("query", ["?sort=secret", "?per_page=100000", "?max_reward=abc", "?page=0", "?nope=1"])
def test_a_bad_query_is_a_400(synthetic, query):
    client = viewer_client(synthetic)
    assert client.get(f"/api/traces{query}").status_code == 400
    assert client.get(f"/{query}").status_code == 400


def test_list_page_renders_rows_and_keeps_the_filter_in_links(synthetic):
    html = viewer_client(synthetic).get("/?sort=reward&failed=1").text
    assert html.count('<tr data-name=') == 2
    assert 'href="/trace/trace_00009.json?sort=reward&amp;failed=1"' in html


def test_an_unreadable_trace_file_is_a_failed_row(synthetic):
    synthetic.write_bytes("trace_00050.json", b"{torn")
    rows = api(viewer_client(synthetic), "?q=unreadable")["traces"]
    assert [r["name"] for r in rows] == ["trace_00050.json"] and rows[0]["failed"]


def test_refresh_reads_new_and_changed_traces_only(synthetic):
    client = viewer_client(synthetic)
    assert api(client)["total"] == 12
    write_synthetic(synthetic, [synthetic_trace(40, 0.9), synthetic_trace(0, 0.99, turns=7)])
    assert api(client)["total"] == 12  # the index is built once, until refreshed
    outcome = client.post("/api/refresh").json()
    assert outcome["traces"] == 13 and outcome["read"] == 2
    body = api(client, "?sort=turns&order=desc&per_page=1")
    assert body["total"] == 13 and body["traces"][0]["sample"] == 0 and body["traces"][0]["turns"] == 7


def test_trace_query_links_keep_only_what_differs_from_the_defaults():
    q = TraceQuery.from_params({"sort": "reward", "max_reward": "0.2", "failed": "1", "page": "3", "tool": ""})
    assert q.url_query(page=4) == "?sort=reward&max_reward=0.2&failed=1&page=4"
    assert q.view_query() == "?sort=reward&max_reward=0.2&failed=1"


# what a trace file can hold: NaN and Infinity, an unknown schema, not a file at all ---------------

NAN, INF = float("nan"), float("inf")


def write_doc(store: TraceStore, sample: int, **fields: object) -> str:
    """A synthetic trace with some fields replaced, written as Python's json writes NaN and Infinity."""
    doc = json.loads(synthetic_trace(sample, reward=0.5).to_json())
    doc.update(fields)
    name = trace_name(sample)
    store.write_bytes(name, json.dumps(doc).encode())
    return name


def test_the_api_spells_nan_and_infinity_as_strings(tmp_path):
    store = TraceStore(str(tmp_path / "s"))
    write_doc(store, 0, reward_score=NAN, distance_km=INF)
    write_doc(store, 1, distance_km=-INF)
    rows = api(viewer_client(store))["traces"]
    assert [(r["reward"], r["distance"]) for r in rows] == [("NaN", "Infinity"), (0.5, "-Infinity")]


def test_the_list_page_shows_nan_and_infinity_as_words(tmp_path):
    store = TraceStore(str(tmp_path / "s"))
    write_doc(store, 0, reward_score=NAN, distance_km=INF)
    html = viewer_client(store).get("/").text
    assert '<td class="num">NaN</td>' in html and '<td class="num">Infinity</td>' in html
    assert "nanpx" not in html  # no reward bar for a reward that is not a number


def test_the_trace_page_shows_nan_and_infinity_as_words(tmp_path):
    store = TraceStore(str(tmp_path / "s"))
    name = write_doc(store, 0, reward_score=NAN, distance_km=INF, latency_s=NAN)
    html = viewer_client(store).get(f"/trace/{name}").text
    assert "<b>NaN</b>" in html and "Infinity km" in html and "NaN s" in html


def test_a_point_with_an_infinite_coordinate_is_left_off_the_map(tmp_path):
    store = TraceStore(str(tmp_path / "s"))
    name = write_doc(store, 0, ground_truth={"lat": INF, "lon": 20.0})
    html = viewer_client(store).get(f"/trace/{name}").text
    assert "Infinity, 20.0000" in html and "truth not drawn" in html
    assert 'class="truth-marker"' not in html and 'class="prediction-marker"' in html


def test_an_infinite_turn_count_is_a_failed_row(tmp_path):
    store = TraceStore(str(tmp_path / "s"))
    write_doc(store, 0, num_turns=INF)
    [row] = api(viewer_client(store))["traces"]
    assert row["failed"] and "infinity" in row["error"].lower()


def test_an_unknown_schema_version_is_a_failed_row_with_the_reason(tmp_path):
    store = TraceStore(str(tmp_path / "s"))
    write_doc(store, 0, schema_version=99)
    [row] = api(viewer_client(store))["traces"]
    assert row["failed"] and "schema_version 99" in row["error"]


def test_an_image_of_a_trace_of_unknown_schema_is_a_404_with_the_reason(tmp_path):
    store = TraceStore(str(tmp_path / "s"))
    name = write_doc(store, 0, schema_version=99)
    response = viewer_client(store).get(f"/image/{name}/0.png")
    assert response.status_code == 404 and "schema_version 99" in response.text


def test_a_folder_named_like_a_trace_is_a_failed_row(synthetic):
    (Path(synthetic.root) / "trace_00050.json").mkdir()
    rows = api(viewer_client(synthetic), "?failed=1")["traces"]
    assert {r["name"]: r["error"] for r in rows}["trace_00050.json"] == "not a file"


def test_opening_a_folder_named_like_a_trace_says_why_it_cannot_be_read(synthetic):
    (Path(synthetic.root) / "trace_00050.json").mkdir()
    html = viewer_client(synthetic).get("/trace/trace_00050.json").text
    assert "trace_00050.json cannot be read" in html and "Is a directory" in html


def test_a_dangling_link_named_like_a_trace_is_a_failed_row_beside_the_others(synthetic):
    (Path(synthetic.root) / "trace_00050.json").symlink_to(Path(synthetic.root) / "gone")
    body = api(viewer_client(synthetic), "?per_page=100")
    assert body["total"] == 13 and body["traces"][-1]["name"] == "trace_00050.json" and body["traces"][-1]["failed"]


# the trace page and its images -----------------------------------------------------------------

def _names_with_tool(store: TraceStore, tool: str) -> list[str]:
    return [n for n, t in store.iter_traces() if any(c.tool_name == tool and c.success for c in t.tool_calls_log)]


def test_every_image_is_served_and_is_the_recorded_pixels(real):
    client = viewer_client(real)
    checked = 0
    for name, trace in real.iter_traces():
        for record in trace.images:
            response = client.get(f"/image/{name}/{record.ref}.png")
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            image = Image.open(io.BytesIO(response.content))
            assert pixel_sha256(image.convert(trace.preprocess.mode)) == pixel_hashes(trace)[record.ref]
            checked += 1
    assert checked > len(real.trace_names())  # tool outputs too, not just the dataset images


def test_trace_page_draws_zoom_box_hash_checks_map_and_answer(real):
    name = _names_with_tool(real, ZOOM)[0]
    trace = real.read_trace(name)
    html = viewer_client(real).get(f"/trace/{name}").text
    assert html.count('class="zoombox"') == sum(c.tool_name == ZOOM and c.success for c in trace.tool_calls_log)
    assert html.count("✓ hash matches") >= len(trace.images) and "✗" not in html
    assert 'class="truth-marker"' in html and 'class="prediction-marker"' in html
    assert f"{trace.distance_km:.1f} km" in html
    assert 'id="final-answer"' in html and "\\boxed{" in html


def test_tool_cards_name_the_dialect_each_call_was_read_as(real):
    name = _names_with_tool(real, ZOOM)[0]
    html = viewer_client(real).get(f"/trace/{name}").text
    assert html.count('<span class="dialect">hermes</span>') == len(real.read_trace(name).tool_calls_log)
    assert '<span class="tc" data-dialect="hermes">' in html


def test_rotation_angle_is_shown(real):
    name = _names_with_tool(real, ROTATE)[0]
    call = next(c for c in real.read_trace(name).tool_calls_log if c.tool_name == ROTATE)
    html = viewer_client(real).get(f"/trace/{name}").text
    assert f"rotation <b>{call.resolved['angle_deg']:g}°</b>" in html


def test_a_code_call_shows_its_code_and_error(tmp_path, real):
    store = TraceStore(str(tmp_path / "code"))
    trace = real.read_trace(real.trace_names()[0])
    call = trace.tool_calls_log[0].model_copy(update={
        "index": len(trace.tool_calls_log), "tool_name": CODE, "success": False, "output_ref": None,
        "tool_arguments": {"code": "img = image.rotate(90)\nprint(img.size)"}, "error": "NameError: image"})
    store.write_trace(trace.model_copy(update={"tool_calls_log": [*trace.tool_calls_log, call]}))
    html = viewer_client(store).get(f"/trace/{store.trace_names()[0]}").text
    assert "img = image.rotate(90)" in html and "NameError: image" in html


def test_a_tampered_hash_shows_a_cross(tmp_path, real):
    store = TraceStore(str(tmp_path / "tampered"))
    trace = real.read_trace(_names_with_tool(real, ZOOM)[0])
    images = [r.model_copy(update={"sha256": "0" * 64}) if r.ref == 1 else r for r in trace.images]
    name = store.write_trace(trace.model_copy(update={"images": images}))
    html = viewer_client(store).get(f"/trace/{name}").text
    assert "✗ hash differs" in html


def test_teacher_text_is_escaped(tmp_path, real):
    store = TraceStore(str(tmp_path / "xss"))
    trace = real.read_trace(real.trace_names()[0])
    evil = Message(role="assistant", content="<script>alert(1)</script><img src=x onerror=alert(2)> \\boxed{1, 2}")
    name = store.write_trace(trace.model_copy(update={"messages": [*trace.messages, evil]}))
    html = viewer_client(store).get(f"/trace/{name}").text
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "&lt;script&gt;alert(1)" in html


def test_pages_load_nothing_from_outside_and_say_so_in_their_policy(real):
    client = viewer_client(real)
    for path in ("/", f"/trace/{real.trace_names()[0]}"):
        response = client.get(path)
        assert "default-src 'none'" in response.headers["content-security-policy"]
        urls = re.findall(r'(?:src|href|action)="([^"]*)"', response.text)
        assert urls and all(not urlsplit(u).netloc for u in urls), urls


def test_prev_and_next_follow_the_filtered_order(synthetic):
    client = viewer_client(synthetic)
    order = [r["name"] for r in api(client, "?sort=reward&order=desc&failed=0&per_page=100")["traces"]]
    html = client.get(f"/trace/{order[1]}?sort=reward&order=desc&failed=0").text
    assert f'id="prev" rel="prev" href="/trace/{order[0]}?sort=reward&amp;order=desc&amp;failed=0"' in html
    assert f'id="next" rel="next" href="/trace/{order[2]}?sort=reward&amp;order=desc&amp;failed=0"' in html


def test_a_trace_without_images_says_why(synthetic):
    html = viewer_client(synthetic).get("/trace/trace_00009.json").text
    assert "teacher gave up" in html and "images not rebuilt" in html


# what the server refuses ----------------------------------------------------------------------

TRAVERSALS = [
    "/trace/../../../../etc/passwd", "/trace/..%2f..%2f..%2fetc%2fpasswd", "/trace/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/trace/..%252f..%252fetc%252fpasswd", "/trace/manifest.json", "/trace/summary.json", "/trace/%2fetc%2fpasswd",
    "/image/..%2fmanifest.json/0.png", "/image/../../etc/passwd/0.png", "/image/trace_00000.json/99.png",
    "/image/trace_00000.json/-1.png", "/image/trace_00000.json/..%2f..%2fetc%2fpasswd",
    "/trace/trace_00000.json%00.txt", "/trace/trace_00000.json.bak", "/trace/%2e%2e", "/etc/passwd", "/../../etc/passwd",
]


def test_no_file_outside_the_traces_is_served(real):
    """Raw request lines (no client-side normalisation of ``..``) against a real server."""
    secret = "root:x:0:0"
    real.write_bytes("trace_00000.json.bak", b"not a trace")  # in the folder, but not a trace
    with running_viewer(real) as base:
        host, port = urlsplit(base).hostname, urlsplit(base).port
        for path in TRAVERSALS:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode(errors="replace")
            conn.close()
            assert response.status in (400, 404), (path, response.status)
            assert secret not in body and '"images"' not in body, path


def test_world_map_projection_and_arc():
    assert project(0, 0) == (180, 90) and project(90, -180) == (0, 0)
    across = great_circle(0, 179, 0, -179)
    assert len(across) == 2  # split at the antimeridian instead of a line across the map
    view = map_view((48.85, 2.35), (40.71, -74.0))
    assert 5800 < view["distance_km"] < 5900 and view["arcs"]
    assert inset_box([(0, 0), (300, 100)]) is None and inset_box([(180, 90)]) is not None
    assert land_path().count("M") > 300  # the countries are there


def test_json_api_is_plain_json(synthetic):
    response = viewer_client(synthetic).get("/api/traces?per_page=2")
    assert response.headers["content-type"].startswith("application/json")
    assert set(json.loads(response.text)) >= {"total", "matched", "page", "pages", "traces", "tools"}


@pytest.mark.slow
def test_an_s3_store_is_listed_paged_and_replayed(real):
    from moto.server import ThreadedMotoServer

    from tests.helpers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
        remote = TraceStore("s3://viewer-bucket/run", options)
        remote.fs.mkdir("viewer-bucket")
        names = real.trace_names()
        for name in names[:-1]:
            remote.write_bytes(name, real.read_bytes(name))
        client = viewer_client(remote)
        assert api(client, "?per_page=3")["total"] == len(names) - 1
        name = next(n for n in _names_with_tool(real, ZOOM) if n != names[-1])
        page = client.get(f"/trace/{name}").text
        assert "✓ hash matches" in page and "✗" not in page and 'class="zoombox"' in page
        assert client.get(f"/image/{name}/1.png").status_code == 200
        remote.write_bytes(names[-1], real.read_bytes(names[-1]))
        assert client.post("/api/refresh").json()["read"] == 1 and api(client)["total"] == len(names)
        assert "testing" not in page  # the storage options' secret never reaches a page
    finally:
        server.stop()
