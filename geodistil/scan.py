"""Reading every trace of a store in order, with bounded read-ahead.

Aggregation, filtering, splitting and export all walk a whole store. On an object store one
read costs a round trip, so ``scan`` reads a window of files on a few threads while keeping
sample order and never holding more than ``window`` files in memory. A file that cannot be
read or parsed comes out as a ``TraceError`` naming it, so a caller reports it and goes on.

A file missing from a range is reported the same way. The expected names come from the
store's ``manifest.json`` when it lists its traces (generation, filter and split all write
one), else from the range the names span: every (sample, rollout) from the first sample to
the last, with as many rollouts as the most any sample has.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from geodistil.errors import TraceError
from geodistil.store import TraceStore, parse_trace_name, trace_name, trace_sort_key
from geodistil.trace import Trace


@dataclass(frozen=True, slots=True)
class ScannedTrace:
    """One file of a store: its name, its exact bytes, and the trace or why there is none."""

    name: str
    raw: bytes | None
    trace: Trace | None
    error: TraceError | None = None

    @property
    def ok(self) -> bool:
        return self.trace is not None


def _read(store: TraceStore, name: str) -> ScannedTrace:
    try:
        raw = store.read_bytes(name)
    except FileNotFoundError:
        return ScannedTrace(name, None, None, TraceError(f"{name}: missing"))
    except OSError as exc:
        return ScannedTrace(name, None, None, TraceError(f"{name}: unreadable: {exc}"))
    try:
        return ScannedTrace(name, raw, Trace.from_json(raw))
    except TraceError as exc:
        return ScannedTrace(name, raw, None, TraceError(f"{name}: {exc}"))


def expected_names(store: TraceStore, present: Sequence[str] | None = None) -> list[str]:
    """The trace names a store should hold, in order: present ones and missing ones."""
    present = list(store.trace_names() if present is None else present)
    manifest = store.read_manifest()  # None also for one of another shape: it says nothing about the traces
    if manifest is not None:
        return sorted({row.name for row in manifest.traces} | set(present), key=trace_sort_key)
    keys = [k for k in (parse_trace_name(n) for n in present) if k is not None]
    if not keys:
        return present
    multi = any("_r" in n for n in present)  # named for several rollouts, even if only r00 is left
    rollouts = max(r for _, r in keys) + 1
    first, last = min(i for i, _ in keys), max(i for i, _ in keys)
    per_sample = max(rollouts, 2) if multi else 1
    wanted = {trace_name(i, r, per_sample) for i in range(first, last + 1) for r in range(rollouts)}
    return sorted(wanted | set(present), key=trace_sort_key)


def scan(store: TraceStore, names: Sequence[str] | None = None, workers: int = 8,
         window: int = 256) -> Iterator[ScannedTrace]:
    """Every trace of ``store`` (or of ``names``) in order, read ``workers`` at a time.

    Without ``names`` it walks ``expected_names``, so a file missing from the range comes
    out as an error naming it instead of going unnoticed.
    """
    names = expected_names(store) if names is None else list(names)
    if workers <= 1:
        for name in names:
            yield _read(store, name)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geodistil-scan") as pool:
        for start in range(0, len(names), window):
            yield from pool.map(lambda n: _read(store, n), names[start:start + window])
