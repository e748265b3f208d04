"""The one replay core: rebuild every image of a trace from the dataset and the tool log, and prove it.

``rebuild`` opens the dataset at ``dataset_path`` (or the one a caller names instead), takes
``sample_index``, decodes and preprocesses as recorded, re-applies each successful tool call
with the settings the trace recorded, and checks every image's pixel hash against both
``images[k].sha256`` and the producing call's ``output_sha256``. The replay CLI
(``verify_trace``), the export and the viewer all read its ``Rebuilt``, so they agree on what
is bad. A trace that cannot be rebuilt (its dataset moved, a file that is no trace) is that
trace's failure, named, and never stops the others.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from PIL import Image

from geodistil.config import BoxConvention, ToolsConfig
from geodistil.data import DatasetSpec, Decoding, GeoDataset, open_dataset
from geodistil.errors import GeodistilError, ReplayError, SampleError
from geodistil.images import encode, pixel_sha256, preprocess
from geodistil.scan import scan
from geodistil.store import TraceStore
from geodistil.tools import TOOL_NAMES, TOOLS_VERSION, Tool, build_tools, tool_from_settings
from geodistil.trace import Preprocess, Trace

# where to replay from: the trace's own dataset (None), an open one, a spec, or a path that
# stands in for the trace's dataset_path (a copy moved elsewhere; the trace's split is kept)
DatasetChoice = GeoDataset | DatasetSpec | str | None

K = TypeVar("K")
V = TypeVar("V")


# -- the checks -----------------------------------------------------------------------------

@dataclass
class ImageCheck:
    """One image of a trace: what the trace records and what replay rebuilt."""

    ref: int
    expected: str | None  # images[ref].sha256; None when missing or the producing call's output_sha256 disagrees
    actual: str | None  # pixel sha256 of the rebuilt image; None when not rebuilt
    size: tuple[int, int] | None  # of the rebuilt image
    problem: str | None = None  # why the check fails, one line

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class Rebuilt:
    """One trace's images as replay rebuilt them, with each one's check, or why nothing was rebuilt."""

    images: list[Image.Image] = field(default_factory=list)  # ref-indexed: ref 0 is the dataset image as sent
    checks: list[ImageCheck] = field(default_factory=list)
    error: str | None = None  # why replay failed (nothing was rebuilt)
    skipped: str | None = None  # why there is nothing to replay (an error trace without image)
    dataset_error: bool = False  # the error is the dataset's, which could not be opened (it names no sample)

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None and all(c.ok for c in self.checks)

    def problems(self, refs: Iterable[int] | None = None) -> list[str]:
        """One line per problem (for the images ``refs`` only, if given), each naming its image."""
        if self.error is not None:
            return [self.error]
        wanted = None if refs is None else set(refs)
        return [c.problem for c in self.checks if c.problem is not None and (wanted is None or c.ref in wanted)]


def check_images(trace: Trace, images: list[Image.Image], file_sha256: str | None = None) -> list[ImageCheck]:
    """Check every rebuilt image against ``images[k]`` (size, sha256) and the call's ``output_sha256``;
    an image recorded by its file's hash (sent as the dataset's file) against ``file_sha256``, the
    hash of the file replay read. Such an image's ``expected`` is its rebuilt pixels' hash once the file matches."""
    recorded = {r.ref: r for r in trace.images}
    by_output = {c.output_ref: c.output_sha256 for c in trace.tool_calls_log
                 if c.success and c.output_ref is not None and c.output_sha256 is not None}
    made_with = trace.teacher.tools_version if trace.teacher else ""
    why = f" (the trace was made with tools version {made_with or '1'}, this is {TOOLS_VERSION})" \
        if made_with != TOOLS_VERSION else ""
    checks = []
    for ref in range(max(len(images), len(trace.images))):
        record = recorded.get(ref)
        image = images[ref] if ref < len(images) else None
        actual = pixel_sha256(image) if image is not None else None
        file_matches = record is not None and record.file_sha256 is not None and record.file_sha256 == file_sha256
        expected = (actual if file_matches else None) if record is None or record.sha256 is None else record.sha256
        check = ImageCheck(ref, expected, actual, image.size if image else None)
        if image is None:
            check.problem = f"image {ref}: the trace records it but replay did not rebuild it"
        elif record is None:
            check.problem = f"image {ref}: rebuilt, but the trace records no hash for it"
        elif record.file_sha256 is not None and not file_matches:
            check.problem = f"image {ref}: the dataset's file differs from the recorded file_sha256"
        elif image.size != tuple(record.size) or (record.sha256 is not None and actual != record.sha256):
            check.problem = f"image {ref}: pixels differ from the recorded sha256{why}"
        elif ref in by_output and by_output[ref] != record.sha256:
            check.expected = None  # the trace contradicts itself: no image can pass
            check.problem = f"image {ref}: its tool call's output_sha256 {by_output[ref]} is not the recorded sha256"
        checks.append(check)
    return checks


# -- rebuilding -----------------------------------------------------------------------------

def dataset_for(trace: Trace, dataset: DatasetChoice = None) -> GeoDataset:
    """The dataset a trace replays from: its own, or the one the caller names instead."""
    if isinstance(dataset, GeoDataset):
        return dataset
    if isinstance(dataset, DatasetSpec):
        return open_dataset(dataset)
    return open_dataset(DatasetSpec(path=dataset or trace.dataset_path, split=trace.dataset_split))


def rebuild_images(trace: Trace, dataset: DatasetChoice = None) -> list[Image.Image]:
    """Every image of the conversation, ref-indexed (ref 0 = the dataset image as sent), unchecked.

    Whatever goes wrong is a ``ReplayError`` naming the sample: a dataset that cannot be opened,
    a row that no longer decodes, a tool that fails on its recorded arguments.
    """
    return _rebuilt_or_raise(trace, dataset)[0]


def _rebuilt_or_raise(trace: Trace, dataset: DatasetChoice) -> tuple[list[Image.Image], str | None]:
    """``rebuild_images`` and the sha256 of the dataset file it read (None for a row of pixels)."""
    if trace.preprocess is None:
        raise ReplayError(f"sample {trace.sample_index}: the trace has no image to replay ({trace.error})")
    try:
        return _rebuild(trace, trace.preprocess, dataset)
    except ReplayError:
        raise
    except GeodistilError as exc:  # a SampleError names the sample already
        raise ReplayError(str(exc) if isinstance(exc, SampleError) else f"sample {trace.sample_index}: {exc}") from exc
    except Exception as exc:  # a trace is data: one that breaks a tool is its own failure
        raise ReplayError(f"sample {trace.sample_index}: {type(exc).__name__}: {exc}") from exc


def tools_for(trace: Trace) -> dict[str, Tool]:
    """The tools a trace's successful calls used, built with the settings the trace recorded.

    Traces from before ``tool_settings`` get today's defaults except the recorded box convention.
    """
    names = sorted({c.tool_name for c in trace.tool_calls_log if c.success})
    recorded = trace.teacher.tool_settings if trace.teacher else None
    if recorded is None:
        convention = BoxConvention(trace.teacher.box_convention) if trace.teacher else BoxConvention.ABSOLUTE
        known = tuple(n for n in names if n in TOOL_NAMES)  # an unknown one fails at its call, by name
        return build_tools(ToolsConfig(enabled=known, box_convention=convention))
    missing = [n for n in names if n not in recorded]
    if missing:
        raise ReplayError(f"sample {trace.sample_index}: the trace records no settings for tools {missing}")
    return {name: tool_from_settings(name, recorded[name]) for name in names}


def _source(trace: Trace, recorded: Preprocess, choice: DatasetChoice) -> tuple[Image.Image, str | None]:
    """Image ref 0 as the rollout prepared it, and the sha256 of the dataset file it was decoded
    from (None for a row that holds pixels)."""
    dataset = dataset_for(trace, choice)
    if dataset.fingerprint != trace.dataset_fingerprint:
        raise ReplayError(f"sample {trace.sample_index}: dataset fingerprint {dataset.fingerprint} differs "
                          f"from the trace's {trace.dataset_fingerprint}: the data changed")
    sample = dataset.sample(trace.sample_index, Decoding(scale=recorded.decode_scale))
    file_sha256 = hashlib.sha256(sample.encoded).hexdigest() if sample.encoded is not None else None
    return preprocess(sample.image, recorded.max_pixels), file_sha256


def _rebuild(trace: Trace, recorded: Preprocess, choice: DatasetChoice) -> tuple[list[Image.Image], str | None]:
    source, file_sha256 = _source(trace, recorded, choice)
    images = [source]
    tools = tools_for(trace)
    for call in trace.tool_calls_log:
        if not call.success:
            continue
        if call.output_ref != len(images) or call.input_ref is None or call.input_ref >= len(images):
            raise ReplayError(f"sample {trace.sample_index}: tool call {call.index} has refs "
                              f"{call.input_ref}->{call.output_ref} out of order")
        if call.tool_name not in tools:
            raise ReplayError(f"sample {trace.sample_index}: tool call {call.index} used {call.tool_name!r}, "
                              "which this geodistil does not know")
        images.append(tools[call.tool_name].apply(images[call.input_ref], call.tool_arguments).image)
    return images, file_sha256


def rebuild(trace: Trace, dataset: DatasetChoice = None) -> Rebuilt:
    """Rebuild a trace's images and check each one; never raises for a bad trace (``error`` says why)."""
    if trace.preprocess is None:
        return Rebuilt(skipped=trace.error or "the trace records no image")
    try:
        source = dataset_for(trace, dataset)
    except Exception as exc:  # a dataset that cannot be opened: this trace's failure, the caller goes on
        why = str(exc) if isinstance(exc, GeodistilError) else f"{type(exc).__name__}: {exc}"
        return Rebuilt(error=why, dataset_error=True)
    try:
        images, file_sha256 = _rebuilt_or_raise(trace, source)
    except ReplayError as exc:
        return Rebuilt(error=str(exc))
    return Rebuilt(images=images, checks=check_images(trace, images, file_sha256))


def pixel_hashes(trace: Trace, dataset: DatasetChoice = None) -> dict[int, str | None]:
    """Each image's pixel sha256, ref-indexed: as recorded, or for the dataset image recorded by
    its file's hash, that of the pixels its file decodes to once the file matches (else None)."""
    hashes = {r.ref: r.sha256 for r in trace.images}
    by_file = next((r for r in trace.images if r.sha256 is None), None)
    if by_file is None:
        return hashes
    try:
        if by_file.ref != 0 or trace.preprocess is None:
            raise ReplayError("only the dataset image is sent as its file")
        image, file_sha256 = _source(trace, trace.preprocess, dataset)
        hashes[0] = pixel_sha256(image) if file_sha256 == by_file.file_sha256 else None
    except Exception:  # a dataset that moved or changed, a file that no longer decodes: nothing to match
        pass
    return hashes


# -- the one bounded cache ------------------------------------------------------------------

class LRU(Generic[K, V]):
    """A bounded, thread-safe least-recently-used map that computes a missing value once per key."""

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
                if key in self._items:  # made by the caller we waited for
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


def png_bytes(image: Image.Image) -> bytes:
    """PNG because it is lossless (the loaded pixels hash like the rebuilt ones); compression
    level 3 because it is about four times faster than the default for ten percent more bytes."""
    return encode(image, "PNG", compress_level=3)


class PngCache:
    """PNG bytes by pixel hash for the last few images: a sample's rollouts share their photo."""

    def __init__(self, size: int = 64) -> None:
        self._cache: LRU[str, bytes] = LRU(size)

    def png(self, image: Image.Image, sha256: str) -> bytes:
        return self._cache.get_or_make(sha256, lambda: png_bytes(image))

    def clear(self) -> None:
        self._cache.clear()


# -- the replay command ---------------------------------------------------------------------

@dataclass
class ReplayResult:
    name: str
    images: int = 0  # images rebuilt and verified
    mismatches: list[str] = field(default_factory=list)
    skipped: str | None = None  # why nothing could be replayed (e.g. an error trace without image)

    @property
    def ok(self) -> bool:
        return not self.mismatches


@dataclass
class ReplaySummary:
    traces: int = 0  # traces read: verified, skipped or failed
    images: int = 0  # images rebuilt and verified
    skipped: int = 0  # error traces without an image to replay
    failed: int = 0  # traces with an image that could not be rebuilt or differs
    unreadable: int = 0  # files that are no readable trace, or missing from the store's range
    failures: list[str] = field(default_factory=list)  # one line per problem, each naming its trace

    @property
    def verified(self) -> int:
        return self.traces - self.skipped - self.failed

    @property
    def ok(self) -> bool:
        return not self.failures


def verify_trace(trace: Trace, name: str = "", dataset: DatasetChoice = None) -> ReplayResult:
    """Rebuild a trace's images and compare every hash with the recorded ones."""
    rebuilt = rebuild(trace, dataset)
    result = ReplayResult(name=name or f"sample {trace.sample_index}", skipped=rebuilt.skipped)
    if rebuilt.error is None and rebuilt.skipped is None and len(rebuilt.images) != len(trace.images):
        result.mismatches.append(f"rebuilt {len(rebuilt.images)} images, the trace records {len(trace.images)}")
    if rebuilt.dataset_error:
        result.mismatches.append(f"sample {trace.sample_index}: {rebuilt.error}")
    else:
        result.mismatches.extend(rebuilt.problems())
    result.images = sum(c.ok for c in rebuilt.checks)
    return result


def verify_store(store: TraceStore, on_result: Callable[[ReplayResult], None] | None = None) -> ReplaySummary:
    """Verify every trace of a store; unreadable and missing traces count as failures by name."""
    summary = ReplaySummary()
    for item in scan(store):
        if item.trace is None:
            summary.unreadable += 1
            summary.failures.append(str(item.error))
            continue
        result = verify_trace(item.trace, item.name)
        summary.traces += 1
        summary.images += result.images
        summary.skipped += result.skipped is not None
        summary.failed += not result.ok
        summary.failures.extend(f"{item.name}: {m}" for m in result.mismatches)
        if on_result is not None:
            on_result(result)
    return summary
