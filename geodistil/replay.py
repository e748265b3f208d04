"""Rebuilding every image of a trace from the dataset and the tool log, and proving it.

Replay opens the dataset at ``dataset_path``, takes ``sample_index``, decodes and preprocesses
as recorded, re-applies each successful tool call in order and compares every image's pixel
hash. A trace that cannot be rebuilt (its dataset moved, a file that is no trace) is that
trace's failure, named, and never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from geodistil.config import BoxConvention, ToolsConfig
from geodistil.data import DatasetSpec, Decoding, GeoDataset, open_dataset
from geodistil.errors import GeodistilError, ReplayError, SampleError
from geodistil.images import pixel_sha256, preprocess
from geodistil.scan import scan
from geodistil.store import TraceStore
from geodistil.tools import TOOL_NAMES, TOOLS_VERSION, Tool, build_tools
from geodistil.trace import Preprocess, Trace


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


def _tools_for(trace: Trace) -> dict[str, Tool]:
    convention = BoxConvention(trace.teacher.box_convention) if trace.teacher else BoxConvention.ABSOLUTE
    names = tuple(sorted({c.tool_name for c in trace.tool_calls_log if c.success and c.tool_name in TOOL_NAMES}))
    return build_tools(ToolsConfig(enabled=names, box_convention=convention))


def rebuild_images(trace: Trace, dataset: GeoDataset | None = None) -> list[Image.Image]:
    """Every image of the conversation, ref-indexed (ref 0 = the dataset image as sent).

    Whatever goes wrong is a ``ReplayError`` naming the sample: a dataset that cannot be opened,
    a row that no longer decodes, a tool that fails on its recorded arguments.
    """
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


def _rebuild(trace: Trace, recorded: Preprocess, dataset: GeoDataset | None) -> list[Image.Image]:
    dataset = dataset or open_dataset(DatasetSpec(path=trace.dataset_path, split=trace.dataset_split))
    if dataset.fingerprint != trace.dataset_fingerprint:
        raise ReplayError(f"sample {trace.sample_index}: dataset fingerprint {dataset.fingerprint} differs "
                          f"from the trace's {trace.dataset_fingerprint}: the data changed")
    sample = dataset.sample(trace.sample_index, Decoding(scale=recorded.decode_scale))
    images = [preprocess(sample.image, recorded.max_pixels)]
    tools = _tools_for(trace)
    for call in trace.tool_calls_log:
        if not call.success:
            continue
        if call.output_ref != len(images) or call.input_ref is None or call.input_ref >= len(images):
            raise ReplayError(f"sample {trace.sample_index}: tool call {call.index} has refs "
                              f"{call.input_ref}->{call.output_ref} out of order")
        images.append(tools[call.tool_name].apply(images[call.input_ref], call.tool_arguments).image)
    return images


def verify_trace(trace: Trace, name: str = "", dataset: GeoDataset | None = None) -> ReplayResult:
    """Rebuild a trace's images and compare every hash with the recorded one."""
    result = ReplayResult(name=name or f"sample {trace.sample_index}")
    if trace.preprocess is None:
        result.skipped = trace.error or "no image"
        return result
    try:
        images = rebuild_images(trace, dataset)
    except GeodistilError as exc:
        result.mismatches.append(str(exc))
        return result
    if len(images) != len(trace.images):
        result.mismatches.append(f"rebuilt {len(images)} images, the trace records {len(trace.images)}")
    recorded = trace.teacher.tools_version if trace.teacher else ""
    why = f" (the trace was made with tools version {recorded or '1'}, this is {TOOLS_VERSION})" \
        if recorded != TOOLS_VERSION else ""
    for image, record in zip(images, trace.images):
        if image.size != tuple(record.size) or pixel_sha256(image) != record.sha256:
            result.mismatches.append(f"image {record.ref}: pixels differ from the recorded sha256{why}")
        else:
            result.images += 1
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
