"""The viewer's index: one small row per trace, held as numpy columns.

Why columns: the list page sorts, filters and pages 100000 traces on every request; a
vectorised mask and a cached argsort answer that in milliseconds, where Python over row
objects would take tens. The index is built once per server from the trace files (read in
batches: on s3 each read is a round trip) and refreshed incrementally: only files whose
size or modification stamp changed are read again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fsspec.implementations.local import LocalFileSystem

from geodistil.store import TraceStore, parse_trace_name
from geodistil.trace import READABLE_SCHEMA_VERSIONS
from geodistil.viewer.query import SORT_KEYS, TraceQuery

ERROR_CHARS = 300  # an error message is cut to this in the index (the trace page shows it whole)
READ_CHUNK = 256  # remote files fetched per batch: concurrency without holding every file in memory


@dataclass(frozen=True, slots=True)
class TraceRow:
    """What the list shows of one trace."""

    name: str
    sample: int
    rollout: int
    reward: float
    distance: float
    turns: int
    tools: tuple[str, ...]  # distinct tool names, sorted
    tool_calls: int
    tool_errors: int
    stop: str
    error: str | None
    error_kind: str | None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sample": self.sample, "rollout": self.rollout, "reward": self.reward,
                "distance": self.distance, "turns": self.turns, "tools": list(self.tools),
                "tool_calls": self.tool_calls, "tool_errors": self.tool_errors, "stop": self.stop,
                "failed": self.failed, "error": self.error, "error_kind": self.error_kind}


def failed_row(name: str, reason: str) -> TraceRow:
    """The row of a file that cannot be read as a trace: listed, failed, with the reason as its error."""
    sample, rollout = parse_trace_name(name) or (-1, 0)
    return TraceRow(name=name, sample=sample, rollout=rollout, reward=0.0, distance=20000.0, turns=0, tools=(),
                    tool_calls=0, tool_errors=0, stop="error", error=reason[:ERROR_CHARS], error_kind="unreadable")


def row_of(name: str, data: bytes | Exception) -> TraceRow:
    """A row from a trace file's bytes (or the error reading it); an unreadable file is a failed row, never a raise."""
    if isinstance(data, Exception):
        return failed_row(name, f"cannot read the file: {type(data).__name__}: {data}")
    sample, rollout = parse_trace_name(name) or (-1, 0)
    try:
        doc = json.loads(data)
    except ValueError as exc:
        return failed_row(name, f"unreadable trace file: {exc}")
    if not isinstance(doc, dict):
        return failed_row(name, "unreadable trace file: not a JSON object")
    version = doc.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:  # the trace page and replay would refuse it: say so here, not later
        return failed_row(name, f"unknown schema_version {version!r}: this viewer reads versions "
                                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}")
    try:
        calls = doc.get("tool_calls_log") or []
        error = doc.get("error")
        return TraceRow(
            name=name, sample=int(doc.get("sample_index", sample)), rollout=int(doc.get("rollout_index", rollout)),
            reward=float(doc.get("reward_score", 0.0)), distance=float(doc.get("distance_km", 20000.0)),
            turns=int(doc.get("num_turns", 0)), tools=tuple(sorted({str(c.get("tool_name")) for c in calls})),
            tool_calls=len(calls), tool_errors=sum(not c.get("success") for c in calls),
            stop=str(doc.get("stop_reason", "error")), error=None if error is None else str(error)[:ERROR_CHARS],
            error_kind=doc.get("error_kind"),
        )
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # OverflowError: int(Infinity)
        return failed_row(name, f"unreadable trace file: {exc}")


class _Columns:
    """An immutable snapshot of the rows as arrays; replaced whole on refresh."""

    def __init__(self, rows: list[TraceRow]) -> None:
        self.rows = rows
        self.position = {r.name: i for i, r in enumerate(rows)}
        self.tool_names = sorted({t for r in rows for t in r.tools})
        bit = {t: 1 << i for i, t in enumerate(self.tool_names)}
        n = len(rows)
        self.columns: dict[str, np.ndarray] = {
            "sample": np.fromiter((r.sample for r in rows), np.int64, n),
            "rollout": np.fromiter((r.rollout for r in rows), np.int64, n),
            "reward": np.fromiter((r.reward for r in rows), np.float64, n),
            "distance": np.fromiter((r.distance for r in rows), np.float64, n),
            "turns": np.fromiter((r.turns for r in rows), np.int64, n),
            "tool_calls": np.fromiter((r.tool_calls for r in rows), np.int64, n),
            "tool_errors": np.fromiter((r.tool_errors for r in rows), np.int64, n),
        }
        # python ints: more than 63 distinct tool names would overflow int64, an object array does not
        self.tool_mask = np.array([sum(bit[t] for t in r.tools) for r in rows], dtype=object) \
            if len(self.tool_names) > 62 else np.fromiter((sum(bit[t] for t in r.tools) for r in rows), np.int64, n)
        self.tool_bit = bit
        self.failed = np.fromiter((r.failed for r in rows), bool, n)
        self.stop = np.array([r.stop for r in rows], dtype=object)
        self.stop_reasons = sorted(set(self.stop.tolist()))
        self.search_text = [f"{r.name} {r.error or ''} {r.error_kind or ''}".lower() for r in rows]
        self._orders: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def order(self, sort: str, descending: bool) -> np.ndarray:
        """Row positions sorted by a key, ties by (sample, rollout); cached per key."""
        with self._lock:
            cached = self._orders.get((sort, "desc" if descending else "asc"))
        if cached is not None:
            return cached
        c = self.columns
        sign = -1 if descending else 1  # every sort key is numeric: negating it reverses the order
        if sort == "sample":
            keys: tuple[np.ndarray, ...] = (sign * c["rollout"], sign * c["sample"])
        else:  # ties stay in sample order whichever way the key goes
            keys = (c["rollout"], c["sample"], sign * c[SORT_KEYS[sort]])
        order = np.lexsort(keys)
        with self._lock:
            self._orders[(sort, "desc" if descending else "asc")] = order
        return order

    def mask(self, q: TraceQuery) -> np.ndarray:
        c = self.columns
        keep = np.ones(len(self.rows), dtype=bool)
        if q.min_reward is not None:
            keep &= c["reward"] >= q.min_reward
        if q.max_reward is not None:
            keep &= c["reward"] <= q.max_reward
        if q.min_distance is not None:
            keep &= c["distance"] >= q.min_distance
        if q.max_distance is not None:
            keep &= c["distance"] <= q.max_distance
        if q.min_turns is not None:
            keep &= c["turns"] >= q.min_turns
        if q.tool:
            bit = self.tool_bit.get(q.tool)
            if bit is None:
                keep[:] = False
            else:
                keep &= (self.tool_mask & bit) != 0
        if q.tool_errors is not None:
            keep &= (c["tool_errors"] > 0) == q.tool_errors
        if q.failed is not None:
            keep &= self.failed == q.failed
        if q.stop:
            keep &= self.stop == q.stop
        if q.q:
            needle = q.q.lower()
            keep &= np.fromiter((needle in t for t in self.search_text), bool, len(self.rows))
        return keep

    def matching(self, q: TraceQuery) -> np.ndarray:
        order = self.order(q.sort, q.order == "desc")
        return order[self.mask(q)[order]]


@dataclass(frozen=True)
class TracePage:
    """One page of a query's answer."""

    rows: list[TraceRow]
    total: int  # traces in the index
    matched: int  # traces the filters keep
    page: int
    pages: int
    per_page: int

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "matched": self.matched, "page": self.page, "pages": self.pages,
                "per_page": self.per_page, "traces": [r.as_dict() for r in self.rows]}


def _signature(entry: dict[str, Any]) -> str | None:
    """What tells that a file changed: size plus whatever stamp the filesystem gives; None when not a file."""
    if entry.get("type") != "file":
        return None
    stamp = entry.get("mtime") or entry.get("LastModified") or entry.get("ETag") or entry.get("last_modified")
    return f"{entry.get('size')}:{stamp}"


def _local_listing(root: str) -> dict[str, str | None]:
    """Trace name -> signature (None: not a regular file) of a local folder.

    os.scandir brings the stats with the listing: about twice as fast as fsspec's ``ls``.
    """
    listing: dict[str, str | None] = {}
    for entry in os.scandir(root):
        if ".tmp-" in entry.name or parse_trace_name(entry.name) is None:
            continue
        try:
            if entry.is_file():  # follows links; a folder, a dangling link or a pipe is not a file
                st = entry.stat()
                listing[entry.name] = f"{st.st_size}:{st.st_mtime_ns}"
            else:
                listing[entry.name] = None
        except FileNotFoundError:
            continue  # removed since the folder was listed
    return listing


def _read_local(path: str) -> bytes | OSError:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:  # vanished since the listing, or not readable: a failed row until the next refresh
        return exc


class TraceIndex:
    """The rows of every trace in a store; build once, refresh when the store changed."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self._local = isinstance(store.fs, LocalFileSystem)
        self._cols = _Columns([])
        self._signatures: dict[str, tuple[str | None, TraceRow]] = {}
        self._refresh_lock = threading.Lock()
        self._built = False
        self.build_seconds = 0.0

    def _listing(self) -> dict[str, str | None]:
        """Trace file name -> change signature (None: not a regular file), from the store's folder listing."""
        try:
            if self._local:
                return _local_listing(self.store.root)
            entries = self.store.fs.ls(self.store.root, detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        listing: dict[str, str | None] = {}
        for entry in entries:
            name = str(entry["name"]).rsplit("/", 1)[-1]
            if ".tmp-" not in name and parse_trace_name(name) is not None:
                listing[name] = _signature(entry)
        return listing

    def _read_rows(self, names: list[str]) -> list[TraceRow]:
        if self._local:  # parsing, not I/O, is the cost here: threads would only contend for the GIL
            return [row_of(name, _read_local(self.store.path(name))) for name in names]
        rows: list[TraceRow] = []
        for start in range(0, len(names), READ_CHUNK):  # fsspec fetches a chunk concurrently (s3: async)
            chunk = names[start:start + READ_CHUNK]
            paths = [self.store.path(n) for n in chunk]
            blobs = self.store.fs.cat(paths, on_error="return")
            for name, path in zip(chunk, paths):
                blob = blobs.get(path, b"") if isinstance(blobs, dict) else blobs
                rows.append(row_of(name, blob if isinstance(blob, (bytes, Exception)) else b""))
        return rows

    def _rows(self, names: list[str], listing: dict[str, str | None]) -> dict[str, TraceRow]:
        """Rows of the named entries: files are read, anything else is a failed row."""
        files = [n for n in names if listing[n] is not None]
        rows = dict(zip(files, self._read_rows(files)))
        rows.update((n, failed_row(n, "not a file")) for n in names if listing[n] is None)
        return rows

    def refresh(self) -> dict[str, Any]:
        """Re-list the store and read only new or changed trace files; returns what changed."""
        with self._refresh_lock:
            start = time.perf_counter()
            listing = self._listing()
            changed = [n for n, sig in listing.items() if n not in self._signatures or self._signatures[n][0] != sig]
            removed = [n for n in self._signatures if n not in listing]
            for name, row in self._rows(changed, listing).items():
                self._signatures[name] = (listing[name], row)
            for name in removed:
                del self._signatures[name]
            if changed or removed or not self._built:
                rows = sorted((row for _, row in self._signatures.values()), key=lambda r: (r.sample, r.rollout, r.name))
                self._cols = _Columns(rows)
            self._built = True
            self.build_seconds = time.perf_counter() - start
            return {"traces": len(listing), "read": len(changed), "removed": len(removed),
                    "seconds": round(self.build_seconds, 3)}

    def ensure_built(self) -> None:
        if not self._built:
            self.refresh()

    def __len__(self) -> int:
        self.ensure_built()
        return len(self._cols.rows)

    def __contains__(self, name: object) -> bool:
        self.ensure_built()
        return isinstance(name, str) and name in self._cols.position

    @property
    def tool_names(self) -> list[str]:
        self.ensure_built()
        return self._cols.tool_names

    @property
    def stop_reasons(self) -> list[str]:
        self.ensure_built()
        return self._cols.stop_reasons

    def row(self, name: str) -> TraceRow | None:
        self.ensure_built()
        cols = self._cols
        i = cols.position.get(name)
        return None if i is None else cols.rows[i]

    def query(self, q: TraceQuery) -> TracePage:
        self.ensure_built()
        cols = self._cols
        hits = cols.matching(q)
        pages = max(1, -(-len(hits) // q.per_page))
        page = min(q.page, pages)
        chosen = hits[(page - 1) * q.per_page: page * q.per_page]
        return TracePage(rows=[cols.rows[i] for i in chosen], total=len(cols.rows), matched=len(hits), page=page,
                         pages=pages, per_page=q.per_page)

    def neighbours(self, name: str, q: TraceQuery) -> tuple[str | None, str | None, int | None, int]:
        """(previous, next, position, matched) of a trace within a query's order.

        A trace the filters drop (e.g. opened by a direct link) gets its neighbours in the
        unfiltered order instead, so prev/next always lead somewhere.
        """
        self.ensure_built()
        cols = self._cols
        i = cols.position.get(name)
        if i is None:
            return None, None, None, 0
        hits = cols.matching(q)
        where = np.flatnonzero(hits == i)
        if not len(where):
            hits = cols.order(q.sort, q.order == "desc")
            where = np.flatnonzero(hits == i)
        k = int(where[0])
        prev = cols.rows[hits[k - 1]].name if k > 0 else None
        nxt = cols.rows[hits[k + 1]].name if k + 1 < len(hits) else None
        return prev, nxt, k, len(hits)
