"""The web trace viewer: a list of every trace (sorted, filtered, paged on the server) and a
page per trace with its conversation, replayed images, tool calls and a world map.

``create_app(store)`` builds the Starlette app; ``serve(url)`` runs it with uvicorn. The app
answers only the ``Host`` names it is given (``host_names(bound, extra)`` spells them).
"""

from geodistil.viewer.app import create_app, serve
from geodistil.viewer.hosts import host_names
from geodistil.viewer.index import TraceIndex, TracePage, TraceRow
from geodistil.viewer.query import QueryError, TraceQuery

__all__ = ["create_app", "serve", "host_names", "TraceIndex", "TracePage", "TraceRow", "TraceQuery", "QueryError"]
