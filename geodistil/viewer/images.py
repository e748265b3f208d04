"""Rebuilt images for the viewer: replayed on demand by ``geodistil.replay``, kept in small caches.

A trace page needs every image of one conversation, and the browser asks for them a few at
a time; rebuilding is done once per trace (the cache's per-key lock stops parallel requests
from replaying the same trace twice) and the PNG bytes are cached apart, by pixel hash, since
encoding costs as much as replaying.
"""

from __future__ import annotations

from collections.abc import Callable

from geodistil.replay import LRU, PngCache, Rebuilt, rebuild
from geodistil.trace import Trace

__all__ = ["ImageCache"]


class ImageCache:
    """Replays traces by name and serves their images as PNG bytes."""

    def __init__(self, dataset: str | None = None, traces: int = 32, pngs: int = 256) -> None:
        self.dataset = dataset  # overrides the traces' dataset_path (e.g. a copy moved elsewhere)
        self._rebuilt: LRU[str, Rebuilt] = LRU(traces)
        self._pngs = PngCache(pngs)

    def rebuilt(self, name: str, trace: Trace | Callable[[], Trace]) -> Rebuilt:
        """The trace's rebuilt images; ``trace`` may be a loader, called only when they are not cached."""
        def make() -> Rebuilt:
            rebuilt = rebuild(trace() if callable(trace) else trace, self.dataset)
            if rebuilt.skipped is not None:
                rebuilt.error = f"no image to replay: {rebuilt.skipped}"
            elif rebuilt.error is not None:
                rebuilt.error = f"replay failed: {rebuilt.error}"
            return rebuilt
        return self._rebuilt.get_or_make(name, make)

    def png(self, name: str, trace_loader: Callable[[], Trace], ref: int) -> bytes | None:
        """PNG bytes of image ``ref`` of a trace, or None if it has no such image."""
        rebuilt = self.rebuilt(name, trace_loader)
        if not 0 <= ref < len(rebuilt.images):
            return None
        return self._pngs.png(rebuilt.images[ref], rebuilt.checks[ref].actual or "")

    def clear(self) -> None:
        self._rebuilt.clear()
        self._pngs.clear()
