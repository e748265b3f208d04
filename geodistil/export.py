"""SFT-ready exports of a trace store, every image rebuilt by replay and checked by hash.

The formats (``hf`` for TRL, ``sharegpt`` for LLaMA-Factory, ...) are classes in a registry,
``geodistil.export_formats``; this module does what they share: the training conversation,
the rows (replayed by ``geodistil.replay.rebuild`` on worker threads), the export's manifest
and the verification that loads every written copy back.

The conversation is normalised for training: native OpenAI tool calls become text in the
assistant turn, written by the trace's dialect (``<tool_call>{json}</tool_call>`` for hermes and
native, the Qwen/Hermes convention chat templates render), tool-role results are folded into
the next user turn, and a trailing user turn (tool results after the last turn of a
``max_turns`` trace) is dropped, so every row alternates user and assistant and ends with the
assistant.

Traces that failed, cannot be replayed, or whose rebuilt pixels differ from the recorded
sha256 (or from their tool call's ``output_sha256``) are skipped and listed with the reason in
``export-<format>.json``.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from geodistil.data import DatasetSpec
from geodistil.dialects import dialect_named
from geodistil.errors import ExportSkip as Skip
from geodistil.export_formats import (
    FORMATS, IMAGE, ExportFormat, ExportRow, Turn, format_named, image_refs, register_format, sharegpt_row,
    trl_messages,
)
from geodistil.images import pixel_sha256
from geodistil.replay import pixel_hashes, rebuild
from geodistil.scan import ScannedTrace, scan
from geodistil.store import TraceStore
from geodistil.trace import ImagePart, Trace

__all__ = ["FORMATS", "IMAGE", "ExportConfig", "ExportFormat", "ExportRow", "Skip", "Turn", "export_row",
           "image_refs", "register_format", "run_export", "sharegpt_row", "training_turns", "trl_messages",
           "verify_export"]


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field("hf", description="an export format (geodistil.export_formats.FORMATS): hf for TRL, "
                                          "sharegpt for LLaMA-Factory, ...")
    include_reasoning: bool = Field(False, description="put the teacher's reasoning_content in <think>...</think>")
    metadata: bool = Field(True, description="add trace, sample_index, rollout_index, reward_score, distance_km")
    shard_rows: int = Field(2000, ge=1, le=1_000_000, description="rows per Parquet file")
    verify: bool = Field(True, description="load the export back and check placeholders and pixel hashes")
    dataset: DatasetSpec | None = Field(None, description="dataset to replay from, if not the traces' dataset_path")

    @field_validator("format")
    @classmethod
    def _registered(cls, name: str) -> str:
        format_named(name)
        return name


# -- the conversation -----------------------------------------------------------------------

def training_turns(trace: Trace, include_reasoning: bool = False) -> list[Turn]:
    """The trace's conversation as alternating user / assistant turns (after an optional system turn)."""
    turns: list[Turn] = []
    pending_tool_text: list[str] = []  # tool-role results wait for the next user turn
    dialect = dialect_named(trace.teacher.tool_style if trace.teacher else "hermes")

    def user(parts: list[str | int]) -> None:
        if pending_tool_text:
            parts = ["\n".join(pending_tool_text) + ("\n" if parts else ""), *parts]
            pending_tool_text.clear()
        if turns and turns[-1].role == "user":
            turns[-1].parts.extend(["\n", *parts])
        else:
            turns.append(Turn("user", parts))

    for message in trace.messages:
        if message.role == "system":
            turns.append(Turn("system", [message.text()]))
        elif message.role == "tool":
            pending_tool_text.append(message.text())
        elif message.role == "user":
            content = message.content
            if isinstance(content, list):
                user([p.ref if isinstance(p, ImagePart) else p.text for p in content])
            else:
                user([content or ""])
        else:
            if pending_tool_text:
                user([])
            text = message.text()
            if include_reasoning and message.reasoning:
                text = f"<think>\n{message.reasoning}\n</think>\n\n{text}"
            calls = "\n".join(dialect.native_call_text(c) for c in message.tool_calls or [])
            turns.append(Turn("assistant", ["\n".join(t for t in (text, calls) if t)]))
    while turns and turns[-1].role != "assistant":
        turns.pop()
    return turns


# -- the rows -------------------------------------------------------------------------------

def export_row(name: str, trace: Trace, config: ExportConfig) -> ExportRow:
    """A trace's training turns and images, rebuilt by replay and checked, or ``Skip`` saying why not."""
    if not trace.ok:
        raise Skip(f"{name}: failed trace ({trace.error_kind}: {trace.error})")
    turns = training_turns(trace, config.include_reasoning)
    if not any(t.role == "assistant" for t in turns):
        raise Skip(f"{name}: no assistant turn")
    rejected = format_named(config.format).reject(turns)
    if rejected is not None:
        raise Skip(f"{name}: {rejected}")
    rebuilt = rebuild(trace, config.dataset)
    if rebuilt.skipped is not None:
        raise Skip(f"{name}: no image to replay: {rebuilt.skipped}")
    if rebuilt.error is not None:
        raise Skip(f"{name}: replay failed: {rebuilt.error}")
    refs = sorted(set(image_refs(turns)))
    for ref in refs:
        if ref >= len(rebuilt.checks):
            raise Skip(f"{name}: image {ref} is referenced but was not rebuilt")
    problems = rebuilt.problems(refs)  # only the images the row shows: a dropped trailing turn's need not pass
    if problems:
        raise Skip(f"{name}: {problems[0]}")
    metadata = {"trace": name, "sample_index": trace.sample_index, "rollout_index": trace.rollout_index,
                "reward_score": trace.reward_score, "distance_km": trace.distance_km} if config.metadata else {}
    return ExportRow(name, trace, turns, images={ref: rebuilt.images[ref] for ref in refs},
                     hashes={ref: rebuilt.checks[ref].actual or "" for ref in refs}, metadata=metadata)


def _row_or_skip(item: ScannedTrace, config: ExportConfig) -> ExportRow | str:
    if item.trace is None:
        return str(item.error)
    try:
        return export_row(item.name, item.trace, config)
    except Skip as exc:
        return str(exc)


def export_rows(src: TraceStore, config: ExportConfig, skipped: list[str], workers: int = 8,
                window: int = 32) -> Iterator[ExportRow]:
    """Every exportable trace of ``src`` in order, rebuilt on ``workers`` threads (PIL releases the
    GIL while it decodes, resamples and hashes); the others go to ``skipped`` with the reason."""
    items = scan(src, workers=workers)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="geodistil-replay") as pool:
        while batch := list(itertools.islice(items, window)):
            for result in pool.map(_row_or_skip, batch, itertools.repeat(config)):
                if isinstance(result, str):
                    skipped.append(result)
                else:
                    yield result


# -- export and verification ----------------------------------------------------------------

def run_export(src: TraceStore, dest: TraceStore, config: ExportConfig = ExportConfig(), workers: int = 8
               ) -> dict[str, Any]:
    """Export ``src`` to ``dest`` in ``config.format``; writes and returns ``export-<format>.json``."""
    skipped: list[str] = []
    result = format_named(config.format).write(export_rows(src, config, skipped, workers), dest, config)
    manifest = {"source": src.url, "dest": dest.url, "format": config.format,
                "config": config.model_dump(mode="json"), **result,
                "skipped": len(skipped), "skipped_traces": skipped}
    if config.verify:
        manifest["verification"] = verify_export(dest, config.format, src, workers)
    dest.write_json(f"export-{config.format}.json", manifest)
    return manifest


@dataclass
class Verification:
    rows: int = 0
    images: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "images": self.images, "ok": not self.problems, "problems": self.problems[:1000]}


def _check_row(fmt: ExportFormat, what: str, index: int, row: dict[str, Any], dest: TraceStore, src: TraceStore
               ) -> tuple[int, str | None]:
    """(images checked, problem or None) for one loaded row."""
    placeholders, images = fmt.count_images(what, row, dest)
    if placeholders != len(images):
        return 0, f"row {index}: {placeholders} placeholders, {len(images)} images"
    if "trace" not in row:
        return 0, None  # without metadata a row cannot be traced back to its hashes
    trace = src.read_trace(row["trace"])
    recorded = pixel_hashes(trace)
    expected = [recorded.get(ref) for ref in image_refs(training_turns(trace))]
    if [pixel_sha256(im) for im in images] != expected:
        return len(images), f"row {index} ({row['trace']}): image hashes differ from the trace's"
    return len(images), None


def verify_export(dest: TraceStore, fmt: str, src: TraceStore, workers: int = 8) -> dict[str, Any]:
    """Load every copy back with ``datasets``; in each row the image placeholders must equal the
    images, and each image's pixel hash must be the sha256 its trace recorded.

    Rows are checked on ``workers`` threads: decoding a PNG and hashing its pixels release the GIL.
    """
    format = format_named(fmt)
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="geodistil-verify-") as cache, \
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="geodistil-verify") as pool:
        for what, ds in format.load_back(dest, cache):
            v = Verification()
            rows = iter(ds)
            while batch := list(itertools.islice(rows, 64)):
                indexes = range(v.rows, v.rows + len(batch))
                for images, problem in pool.map(lambda i, row: _check_row(format, what, i, row, dest, src),
                                                   indexes, batch):
                    v.images += images
                    if problem is not None:
                        v.problems.append(problem)
                v.rows += len(batch)
            checks[what] = v.as_dict()
            del ds, rows
    return {"ok": all(c["ok"] for c in checks.values()), **checks}
