"""Rebuilt images for the viewer: replayed on demand, hash-checked, kept in small LRU caches.

A trace page needs every image of one conversation, and the browser asks for them a few at
a time; rebuilding is done once per trace (a per-trace lock stops parallel requests from
replaying the same trace twice) and the PNG bytes are cached apart, since encoding costs
as much as replaying.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from PIL import Image

from geodistil.data import DatasetSpec, GeoDataset, open_dataset
from geodistil.errors import GeodistilError
from geodistil.images import encode, pixel_sha256
from geodistil.replay import rebuild_images
from geodistil.trace import Trace

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A thread-safe least-recently-used map that computes a missing value once per key."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[K, threading.Lock] = {}

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:  # made by the request we waited for
                    self._items.move_to_end(key)
                    return self._items[key]
            value = make()
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
                self._key_locks.pop(key, None)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class HashCheck:
    ref: int
    expected: str | None  # images[ref].sha256 (and the tool call's output_sha256, which must agree)
    actual: str | None
    size: tuple[int, int] | None

    @property
    def ok(self) -> bool:
        return self.expected is not None and self.expected == self.actual


@dataclass
class Rebuilt:
    """One trace's images as replay rebuilt them, with each one's hash check."""

    images: list[Image.Image] = field(default_factory=list)
    checks: list[HashCheck] = field(default_factory=list)
    error: str | None = None  # why replay failed (the page says so instead of showing images)


def check_hashes(trace: Trace, images: list[Image.Image]) -> list[HashCheck]:
    """Compare every rebuilt image with ``images[k].sha256`` and the producing call's ``output_sha256``."""
    recorded = {r.ref: r.sha256 for r in trace.images}
    by_output = {c.output_ref: c.output_sha256 for c in trace.tool_calls_log if c.output_ref is not None}
    checks = []
    for ref in range(max(len(images), len(trace.images))):
        expected = recorded.get(ref)
        if ref in by_output and by_output[ref] != expected:
            expected = None  # the trace contradicts itself: no image can pass
        actual = pixel_sha256(images[ref]) if ref < len(images) else None
        checks.append(HashCheck(ref, expected, actual, images[ref].size if ref < len(images) else None))
    return checks


class ImageCache:
    """Replays traces by name and serves their images as PNG bytes."""

    def __init__(self, dataset: str | None = None, traces: int = 32, pngs: int = 256) -> None:
        self.dataset = dataset  # overrides the traces' dataset_path (e.g. a copy moved elsewhere)
        self._rebuilt: LRU[str, Rebuilt] = LRU(traces)
        self._pngs: LRU[tuple[str, int], bytes] = LRU(pngs)

    def _dataset_for(self, trace: Trace) -> GeoDataset:
        return open_dataset(DatasetSpec(path=self.dataset or trace.dataset_path, split=trace.dataset_split))

    def rebuilt(self, name: str, trace: Trace) -> Rebuilt:
        def make() -> Rebuilt:
            if trace.preprocess is None:
                return Rebuilt(error=f"no image to replay: {trace.error or 'the trace records none'}")
            try:
                images = rebuild_images(trace, self._dataset_for(trace))
            except GeodistilError as exc:
                return Rebuilt(error=f"replay failed: {exc}")
            except Exception as exc:  # a dataset that cannot be opened: the page says so, the server goes on
                return Rebuilt(error=f"replay failed: {type(exc).__name__}: {exc}")
            return Rebuilt(images=images, checks=check_hashes(trace, images))
        return self._rebuilt.get_or_make(name, make)

    def png(self, name: str, trace_loader: Callable[[], Trace], ref: int) -> bytes | None:
        """PNG bytes of image ``ref`` of a trace, or None if it has no such image."""
        def make() -> bytes:
            rebuilt = self.rebuilt(name, trace_loader())
            if not 0 <= ref < len(rebuilt.images):
                return b""
            return encode(rebuilt.images[ref], "PNG", compress_level=3)
        data = self._pngs.get_or_make((name, ref), make)
        return data or None

    def clear(self) -> None:
        self._rebuilt.clear()
        self._pngs.clear()
