"""Benchmark: the viewer's list page on a store of 10000 traces, against a naive baseline.

The store is made from real traces (the demo dataset rolled out by the simulated teacher),
copied under 10000 sample indices with varied rewards, distances, turns and tools. Both
pages are served over HTTP by uvicorn in this process and timed the same way:

- the viewer: an index built once (its build time is printed), then sort / filter / page
  on numpy columns per request;
- the baseline: what a viewer without an index does, reading and parsing every trace file
  on each request, then filtering, sorting and rendering the same template.

Run: python bench/bench_viewer.py [--traces 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geodistil.store import TraceStore, trace_name  # noqa: E402
from geodistil.viewer import TraceIndex, TracePage, TraceQuery, create_app  # noqa: E402
from geodistil.viewer.app import LIST_COLUMNS  # noqa: E402
from geodistil.viewer.index import row_of  # noqa: E402
from geodistil.viewer.query import SORT_KEYS  # noqa: E402
from geodistil.viewer.templates import environment  # noqa: E402

TOOLSETS = [[], ["image_zoom_in_tool"], ["image_rotate_tool"], ["image_zoom_in_tool", "image_rotate_tool"],
            ["python_code_tool"], ["image_zoom_in_tool", "python_code_tool"]]


def real_traces(root: Path, samples: int = 4) -> list[dict]:
    from geodistil.config import RolloutSettings, TeacherConfig
    from geodistil.data import DatasetSpec
    from geodistil.generate import generate
    from geodistil.store import SampleRange, StorageSpec
    from geodistil.sim.demo_data import make_demo_dataset
    from geodistil.sim.server import SimConfig, SimServer

    data = make_demo_dataset(str(root / "data"), n=samples, seed=0)
    with SimServer(SimConfig(seed=0)) as sim:
        asyncio.run(generate(DatasetSpec(path=data), StorageSpec(url=str(root / "seed")),
                             RolloutSettings(teacher=TeacherConfig(base_url=sim.base_url)),
                             SampleRange(num_samples=samples)))
    seed = TraceStore(str(root / "seed"))
    return [json.loads(seed.read_bytes(n)) for n in seed.trace_names()]


def fill_store(store: TraceStore, templates: list[dict], count: int) -> None:
    rng = random.Random(0)
    for i in range(count):
        doc = dict(templates[i % len(templates)])
        tools = TOOLSETS[rng.randrange(len(TOOLSETS))]
        failed = rng.random() < 0.05
        reward = 0.0 if failed else rng.random()
        calls = [dict(doc["tool_calls_log"][0] if doc["tool_calls_log"] else {"index": 0, "turn": 1, "success": True},
                      tool_name=t, index=k) for k, t in enumerate(tools)]
        doc.update(sample_index=i, reward_score=reward, distance_km=20000.0 if failed else -1492.7 * math.log(max(reward, 1e-9)),
                   num_turns=1 + len(tools), tool_calls_log=calls, error="teacher_error: timeout" if failed else None,
                   error_kind="teacher_error:timeout" if failed else None, stop_reason="error" if failed else "answered",
                   trace_id=f"bench{i}")
        Path(store.path(trace_name(i))).write_text(json.dumps(doc))  # no fsync per file: a benchmark fixture


def naive_app(store: TraceStore) -> Starlette:
    """The baseline: no index; every request reads and parses every trace, then sorts and pages."""
    env = environment()
    env.globals.update(store_url=store.url, message_html=str)

    def page(request: Request) -> HTMLResponse:
        q = TraceQuery.from_params(request.query_params)
        rows = [row_of(name, store.read_bytes(name)) for name in store.trace_names()]
        keep = [r for r in rows
                if (q.max_reward is None or r.reward <= q.max_reward) and (q.min_reward is None or r.reward >= q.min_reward)
                and (q.tool is None or q.tool in r.tools) and (q.failed is None or r.failed == q.failed)]
        key = {"sample": lambda r: r.sample, "reward": lambda r: r.reward, "distance": lambda r: r.distance,
               "turns": lambda r: r.turns, "tools": lambda r: r.tool_calls, "tool_errors": lambda r: r.tool_errors}[q.sort]
        keep.sort(key=lambda r: (key(r), r.sample, r.rollout), reverse=q.order == "desc")
        pages = max(1, -(-len(keep) // q.per_page))
        p = min(q.page, pages)
        result = TracePage(rows=keep[(p - 1) * q.per_page: p * q.per_page], total=len(rows), matched=len(keep), page=p,
                           pages=pages, per_page=q.per_page)
        body = env.get_template("list.html").render(q=q, result=result, tools=[], stops=[], sorts=list(SORT_KEYS),
                                                    columns=LIST_COLUMNS, view_query=q.url_query(), build_seconds=0.0)
        return HTMLResponse(body)

    return Starlette(routes=[Route("/", page)])


def serve_in_thread(app: Starlette) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def timed(client: httpx.Client, url: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        templates = real_traces(root)
        store = TraceStore(str(root / "traces"))
        start = time.perf_counter()
        fill_store(store, templates, args.traces)
        size = sum(p.stat().st_size for p in (root / "traces").iterdir())
        print(f"store: {args.traces} traces, {size / 1e6:.1f} MB, written in {time.perf_counter() - start:.1f}s")

        start = time.perf_counter()
        outcome = TraceIndex(store).refresh()
        print(f"index build (cold, standalone): {time.perf_counter() - start:.2f}s for {outcome['traces']} traces")

        app = Starlette(routes=[Mount("/naive", naive_app(store)), Mount("/", create_app(store))])
        viewer = app.routes[1].app.state.viewer  # type: ignore[attr-defined]
        start = time.perf_counter()
        viewer.index.refresh()
        build = time.perf_counter() - start
        start = time.perf_counter()
        unchanged = viewer.index.refresh()
        relist = time.perf_counter() - start
        print(f"server index build: {build:.2f}s; refresh with nothing changed: {relist * 1000:.0f} ms "
              f"(read {unchanged['read']} files)")

        server, base = serve_in_thread(app)
        pages = {
            "first page": "/",
            "filtered + sorted": "/?sort=reward&order=asc&max_reward=0.2&tool=image_zoom_in_tool&failed=0",
            "deep page, by distance": "/?sort=distance&order=desc&page=150",
        }
        try:
            with httpx.Client(timeout=600) as client:
                client.get(f"{base}/")  # warm: templates compiled, sort orders cached as after first use
                print(f"\n{'list page':<24}{'viewer':>12}{'baseline':>14}{'ratio':>10}")
                for label, path in pages.items():
                    fast = timed(client, f"{base}{path}", args.repeats)
                    slow = timed(client, f"{base}/naive{path}", max(1, args.repeats // 2))
                    print(f"{label:<24}{fast * 1000:>9.1f} ms{slow * 1000:>11.0f} ms{slow / fast:>9.0f}x")
                api = timed(client, f"{base}/api/traces?sort=reward&order=asc&max_reward=0.2&tool=python_code_tool"
                                    f"&failed=1&page=1", args.repeats)
                print(f"{'JSON API (issue query)':<24}{api * 1000:>9.1f} ms")
        finally:
            server.should_exit = True

    query_at_scale(100_000, args.repeats)


def query_at_scale(count: int, repeats: int) -> None:
    """Sort + filter + page on an in-memory index of ``count`` rows (no files: the query cost alone)."""
    from geodistil.viewer.index import TraceRow, _Columns

    rng = random.Random(1)
    rows = [TraceRow(trace_name(i), i, 0, rng.random(), rng.random() * 20000, rng.randint(1, 6),
                     tuple(TOOLSETS[i % len(TOOLSETS)]), len(TOOLSETS[i % len(TOOLSETS)]), 0, "answered",
                     "teacher_error" if i % 20 == 0 else None, None) for i in range(count)]
    start = time.perf_counter()
    columns = _Columns(rows)
    print(f"\nin-memory index of {count} rows: columns in {(time.perf_counter() - start) * 1000:.0f} ms")
    for label, params in [("first page", {}), ("issue query", {"sort": "reward", "max_reward": "0.2",
                                                              "tool": "python_code_tool", "failed": "1"}),
                          ("page 1000 by distance", {"sort": "distance", "order": "desc", "page": "1000"})]:
        q = TraceQuery.from_params(params)
        start = time.perf_counter()
        columns.matching(q)
        first = time.perf_counter() - start
        again = statistics.median(_timed_call(lambda: columns.matching(q)) for _ in range(repeats))
        print(f"  {label:<24} first {first * 1000:6.1f} ms, then {again * 1000:5.1f} ms (sort order cached)")


def _timed_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
