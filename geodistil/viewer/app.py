"""The viewer's web app: a Starlette app over one trace store.

Routes:
    GET  /                          the list page (same query parameters as the API)
    GET  /api/traces                one page of index rows as JSON
    POST /refresh, /api/refresh     re-read new or changed trace files
    GET  /trace/<name>              the trace page (list parameters carried for prev/next)
    GET  /image/<name>/<ref>.png    image ``ref`` of a trace, rebuilt by replay

Only names in the index (built from the store's own listing) are ever read, so no path
from a URL reaches the filesystem: ``../`` or an encoded ``..%2f`` is simply not a name.
Only the ``Host`` names in ``allowed_hosts`` are answered (see ``hosts``); any other gets a
400 before a route runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from geodistil.errors import TraceError
from geodistil.store import TraceStore
from geodistil.trace import Trace
from geodistil.viewer.hosts import LOOPBACK, host_names
from geodistil.viewer.images import ImageCache
from geodistil.viewer.index import TraceIndex
from geodistil.viewer.numbers import json_safe
from geodistil.viewer.pages import message_html, trace_context
from geodistil.viewer.query import SORT_KEYS, QueryError, TraceQuery
from geodistil.viewer.templates import environment
from geodistil.viewer.worldmap import land_path

# everything the page loads comes from this server: offline by construction, and no exfiltration
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                               "script-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LIST_COLUMNS = [(None, "trace"), ("sample", "sample"), (None, "rollout"), ("reward", "reward"),
                ("distance", "distance km"), ("turns", "turns"), ("tools", "tools"), (None, "stop"), (None, "error")]


class Viewer:
    """The state behind the routes: the store, its index, the image cache, the templates."""

    def __init__(self, store: TraceStore, dataset: str | None = None) -> None:
        self.store = store
        self.index = TraceIndex(store)
        self.images = ImageCache(dataset=dataset)
        self.env = environment()
        self.env.globals.update(store_url=_display_url(store.url), message_html=message_html)

    # helpers -----------------------------------------------------------------------------
    def html(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(**context)
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    @staticmethod
    def json(body: Any, status: int = 200) -> JSONResponse:
        """Strict JSON: a trace's NaN or Infinity goes out as a string (see ``numbers``), never as a 500."""
        return JSONResponse(json_safe(body), status_code=status, headers=SECURITY_HEADERS)

    def not_found(self, request: Request, what: str) -> Response:
        if request.url.path.startswith("/api/"):
            return self.json({"error": what}, 404)
        return self.html("message.html", 404, title="Not found", message=what)

    def bad_request(self, request: Request, problem: str) -> Response:
        if request.url.path.startswith("/api/"):
            return self.json({"error": problem}, 400)
        return self.html("message.html", 400, title="Bad request", message=problem)

    def known_name(self, request: Request) -> str | None:
        name = request.path_params.get("name")
        return name if isinstance(name, str) and name in self.index else None

    def read(self, name: str) -> Trace:
        """The trace, or a ``TraceError`` saying why not (also for a folder or an unreadable file so named)."""
        try:
            return self.store.read_trace(name)
        except OSError as exc:
            raise TraceError(f"{name}: cannot read the file: {exc.strerror or exc}") from exc

    # routes (plain functions: Starlette runs them in its thread pool) ---------------------
    def list_page(self, request: Request) -> Response:
        try:
            q = TraceQuery.from_params(request.query_params)
        except QueryError as exc:
            return self.bad_request(request, str(exc))
        result = self.index.query(q)
        return self.html("list.html", q=q, result=result, tools=self.index.tool_names, stops=self.index.stop_reasons,
                         sorts=list(SORT_KEYS), columns=LIST_COLUMNS, view_query=q.url_query(),
                         build_seconds=self.index.build_seconds)

    def api_traces(self, request: Request) -> Response:
        try:
            q = TraceQuery.from_params(request.query_params)
        except QueryError as exc:
            return self.bad_request(request, str(exc))
        body = self.index.query(q).as_dict()
        body.update(tools=self.index.tool_names, stop_reasons=self.index.stop_reasons, query=q.params())
        return self.json(body)

    def refresh(self, request: Request) -> Response:
        outcome = self.index.refresh()
        self.images.clear()  # a rewritten trace must not show the old one's images
        if request.url.path.startswith("/api/"):
            return self.json(outcome)
        return RedirectResponse("/", status_code=303)

    def trace_page(self, request: Request) -> Response:
        name = self.known_name(request)
        if name is None:
            return self.not_found(request, "no such trace in this store (new traces appear after a refresh)")
        try:
            q = TraceQuery.from_params(request.query_params)
        except QueryError as exc:
            return self.bad_request(request, str(exc))
        try:
            trace = self.read(name)
        except TraceError as exc:
            return self.html("message.html", title=f"{name} cannot be read", message=str(exc))
        rebuilt = self.images.rebuilt(name, trace)
        prev, nxt, position, matched = self.index.neighbours(name, q)
        list_page = 1 + (position or 0) // q.per_page if position is not None else 1
        return self.html("trace.html", **trace_context(name, trace, rebuilt), land=land_path(), prev=prev,
                         next=nxt, position=position, matched=matched, view_query=q.view_query(),
                         list_query=q.url_query(page=list_page))

    def image(self, request: Request) -> Response:
        name = self.known_name(request)
        if name is None:
            return self.not_found(request, "no such trace in this store")
        ref = request.path_params["ref"]
        try:
            data = self.images.png(name, lambda: self.read(name), ref)
        except TraceError as exc:  # e.g. an unknown schema version: listed as failed, nothing to replay
            return self.not_found(request, f"no image {ref}: {exc}")
        if data is None:
            return self.not_found(request, f"{name} has no rebuilt image {ref}")
        return Response(data, media_type="image/png",
                        headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=300"})


FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#dfeaf5" '
           'stroke="#2f6fde"/><circle cx="10" cy="6" r="2" fill="#c62828"/></svg>')


def _favicon(request: Request) -> Response:
    return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


def _display_url(url: str) -> str:
    """The store URL as shown on the page: without any user:password@ part."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def create_app(store: TraceStore, dataset: str | None = None, allowed_hosts: Sequence[str] = LOOPBACK) -> Starlette:
    """The viewer app over a store; ``dataset`` overrides where the traces' dataset is read from.

    ``allowed_hosts`` are the ``Host`` names answered, as ``hosts.host_names`` spells them.
    """
    viewer = Viewer(store, dataset)
    routes = [
        Route("/", viewer.list_page),
        Route("/api/traces", viewer.api_traces),
        Route("/refresh", viewer.refresh, methods=["POST"]),
        Route("/api/refresh", viewer.refresh, methods=["POST"]),
        Route("/trace/{name}", viewer.trace_page),
        Route("/image/{name}/{ref:int}.png", viewer.image),
        Route("/favicon.svg", _favicon),
        Route("/favicon.ico", _favicon),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts), www_redirect=False),
                  Middleware(GZipMiddleware, minimum_size=2048)]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.viewer = viewer
    return app


def serve(url: str, host: str = "127.0.0.1", port: int = 8765, dataset: str | None = None,
          storage_options: dict[str, Any] | None = None, log_level: str = "warning",
          allowed_hosts: Iterable[str] = ()) -> None:
    """Index a store and serve the viewer until interrupted; ``allowed_hosts`` adds names it answers to."""
    import uvicorn

    names = host_names(host, allowed_hosts)
    app = create_app(TraceStore(url, storage_options), dataset, names)
    viewer: Viewer = app.state.viewer
    threading.Thread(target=land_path, daemon=True).start()  # the map's outlines, ready by the first trace page
    start = time.perf_counter()
    outcome = viewer.index.refresh()
    print(f"indexed {outcome['traces']} traces of {_display_url(url)} in {time.perf_counter() - start:.2f}s")
    print(f"geodistil viewer on http://{names[0]}:{port}/  (Ctrl+C to stop)")
    print(f"answering Host names {', '.join(names)} (more with --allowed-host NAME)")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
