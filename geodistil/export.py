"""SFT-ready exports of a trace store, every image rebuilt by replay and checked by hash.

Two formats:

- ``hf``: a Hugging Face dataset with ``messages`` and ``images`` columns, the shape TRL's
  vision SFT expects (each message's ``content`` is a list of ``{"type": "text", "text": ..}``
  and ``{"type": "image"}`` parts; ``images`` holds one image per image part, in order).
  Written twice: ``hf/`` by ``save_to_disk`` and ``parquet/train-00000.parquet``, ...
- ``sharegpt``: LLaMA-Factory's ShareGPT JSON (``sharegpt/data.json``) with an ``<image>``
  placeholder per image, in order, the PNG files under ``sharegpt/images/`` (named by pixel
  hash, so the photo shared by a sample's rollouts is stored once) and a ``dataset_info.json``
  that LLaMA-Factory reads with ``dataset_dir`` pointing at ``sharegpt/``.

The conversation is normalised for training: native OpenAI tool calls become text in the
assistant turn, written by the trace's dialect (``<tool_call>{json}</tool_call>`` for hermes and
native, the Qwen/Hermes convention chat templates render), tool-role results are folded into
the next user turn, and a trailing user turn (tool results after the last turn of a
``max_turns`` trace) is dropped, so every row alternates user and assistant and ends with the
assistant.

Traces that failed, cannot be replayed, or whose rebuilt pixels differ from the recorded
sha256 are skipped and listed with the reason in ``export-<format>.json``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from fsspec.implementations.local import LocalFileSystem
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from geodistil.data import DatasetSpec, GeoDataset, open_dataset
from geodistil.dialects import dialect_named
from geodistil.errors import ExportSkip as Skip
from geodistil.errors import GeodistilError
from geodistil.images import encode, pixel_sha256
from geodistil.scan import ScannedTrace, scan
from geodistil.store import TraceStore
from geodistil.trace import ImagePart, Trace

IMAGE = "<image>"  # LLaMA-Factory's placeholder
ROLES = {"user": "human", "assistant": "gpt"}


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["hf", "sharegpt"] = Field("hf", description="hf: TRL messages + images; sharegpt: LLaMA-Factory")
    include_reasoning: bool = Field(False, description="put the teacher's reasoning_content in <think>...</think>")
    metadata: bool = Field(True, description="add trace, sample_index, rollout_index, reward_score, distance_km")
    shard_rows: int = Field(2000, ge=1, le=1_000_000, description="rows per Parquet file")
    verify: bool = Field(True, description="load the export back and check placeholders and pixel hashes")
    dataset: DatasetSpec | None = Field(None, description="dataset to replay from, if not the traces' dataset_path")


# -- the conversation -----------------------------------------------------------------------

@dataclass
class Turn:
    role: str  # system | user | assistant
    parts: list[str | int] = field(default_factory=list)  # text, or an image ref

    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))


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


def image_refs(turns: list[Turn]) -> list[int]:
    return [p for t in turns for p in t.parts if isinstance(p, int)]


def trl_messages(turns: list[Turn]) -> list[dict[str, Any]]:
    """TRL / transformers chat messages with ``{"type": "image"}`` placeholders."""
    return [{"role": t.role, "content": [{"type": "image", "text": None} if isinstance(p, int)
                                         else {"type": "text", "text": p} for p in t.parts if p != ""]}
            for t in turns]


def sharegpt_row(turns: list[Turn], image_paths: dict[int, str]) -> dict[str, Any]:
    """LLaMA-Factory ShareGPT: ``conversations`` with ``<image>`` where each image goes."""
    system = "".join(t.text() for t in turns if t.role == "system")
    conversations = [{"from": ROLES[t.role], "value": "".join(IMAGE if isinstance(p, int) else p for p in t.parts)}
                     for t in turns if t.role != "system"]
    return {"conversations": conversations, "system": system, "images": [image_paths[r] for r in image_refs(turns)]}


# -- rebuilding -----------------------------------------------------------------------------

@dataclass
class Rebuilt:
    name: str
    trace: Trace
    turns: list[Turn]
    images: dict[int, Image.Image]  # ref -> image, checked against the trace's sha256
    hashes: dict[int, str]  # ref -> that sha256


def _dataset_for(trace: Trace, override: DatasetSpec | None) -> GeoDataset:
    return open_dataset(override or DatasetSpec(path=trace.dataset_path, split=trace.dataset_split))


def rebuild(name: str, trace: Trace, config: ExportConfig) -> Rebuilt:
    """Replay a trace's images and check each against its recorded hash, or raise ``Skip``."""
    from geodistil.replay import rebuild_images

    if not trace.ok:
        raise Skip(f"{name}: failed trace ({trace.error_kind}: {trace.error})")
    turns = training_turns(trace, config.include_reasoning)
    if not any(t.role == "assistant" for t in turns):
        raise Skip(f"{name}: no assistant turn")
    if config.format == "sharegpt" and any(IMAGE in p for t in turns for p in t.parts if isinstance(p, str)):
        raise Skip(f"{name}: the text contains the literal placeholder {IMAGE}")
    try:
        rebuilt = rebuild_images(trace, _dataset_for(trace, config.dataset))
    except GeodistilError as exc:
        raise Skip(f"{name}: replay failed: {exc}") from exc
    recorded = {r.ref: r.sha256 for r in trace.images}
    images: dict[int, Image.Image] = {}
    for ref in sorted(set(image_refs(turns))):
        if ref >= len(rebuilt) or ref not in recorded:
            raise Skip(f"{name}: image {ref} is referenced but was not rebuilt")
        if pixel_sha256(rebuilt[ref]) != recorded[ref]:
            raise Skip(f"{name}: image {ref}: rebuilt pixels differ from the recorded sha256")
        images[ref] = rebuilt[ref]
    return Rebuilt(name, trace, turns, images, {ref: recorded[ref] for ref in images})


def _rebuild_or_skip(item: ScannedTrace, config: ExportConfig) -> Rebuilt | str:
    if item.trace is None:
        return str(item.error)
    try:
        return rebuild(item.name, item.trace, config)
    except Skip as exc:
        return str(exc)


def rebuilt_traces(src: TraceStore, config: ExportConfig, skipped: list[str], workers: int = 8,
                   window: int = 32) -> Iterator[Rebuilt]:
    """Every exportable trace of ``src`` in order, rebuilt on ``workers`` threads (PIL releases the
    GIL while it decodes, resamples and hashes); the others go to ``skipped`` with the reason."""
    items = scan(src, workers=workers)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="geodistil-replay") as pool:
        while batch := list(itertools.islice(items, window)):
            for result in pool.map(_rebuild_or_skip, batch, itertools.repeat(config)):
                if isinstance(result, str):
                    skipped.append(result)
                else:
                    yield result


class PngCache:
    """PNG bytes by pixel hash, for the last few images: a sample's rollouts share their photo.

    PNG because it is lossless (the loaded pixels hash like the rebuilt ones); compression
    level 3 because it is about four times faster than the default for ten percent more bytes.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._cache: OrderedDict[str, bytes] = OrderedDict()

    def png(self, image: Image.Image, sha256: str) -> bytes:
        if sha256 in self._cache:
            self._cache.move_to_end(sha256)
            return self._cache[sha256]
        data = self._cache[sha256] = encode(image, "PNG", compress_level=3)
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return data


def _metadata(r: Rebuilt) -> dict[str, Any]:
    t = r.trace
    return {"trace": r.name, "sample_index": t.sample_index, "rollout_index": t.rollout_index,
            "reward_score": t.reward_score, "distance_km": t.distance_km}


# -- writers --------------------------------------------------------------------------------

def _options(store: TraceStore) -> dict[str, Any] | None:
    """A fresh copy of the store's fsspec options for each ``datasets`` call, which adds keys to it."""
    return dict(store.storage_options) or None


def hf_features(metadata: bool = True) -> Any:
    import datasets

    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    columns: dict[str, Any] = {
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.List(part)}),
        "images": datasets.List(datasets.Image()),
    }
    if metadata:
        columns |= {"trace": datasets.Value("string"), "sample_index": datasets.Value("int64"),
                    "rollout_index": datasets.Value("int64"), "reward_score": datasets.Value("float64"),
                    "distance_km": datasets.Value("float64")}
    return datasets.Features(columns)


def _hf_rows(rebuilt: Iterator[Rebuilt], config: ExportConfig) -> Iterator[dict[str, Any]]:
    cache = PngCache()
    for r in rebuilt:
        row = {"messages": trl_messages(r.turns),
               "images": [{"bytes": cache.png(r.images[ref], r.hashes[ref]), "path": None}
                          for ref in image_refs(r.turns)]}
        yield row | (_metadata(r) if config.metadata else {})


def write_hf(src: TraceStore, dest: TraceStore, config: ExportConfig, skipped: list[str], workers: int = 8
             ) -> dict[str, Any]:
    """``dest/hf`` (save_to_disk) and ``dest/parquet/train-*.parquet``; returns their row count."""
    import datasets

    with tempfile.TemporaryDirectory(prefix="geodistil-export-") as cache:
        ds = datasets.Dataset.from_generator(
            _hf_rows, features=hf_features(config.metadata), cache_dir=cache,
            gen_kwargs={"rebuilt": rebuilt_traces(src, config, skipped, workers), "config": config},
            fingerprint=uuid.uuid4().hex)  # a fresh build every time: the store may have changed
        ds.save_to_disk(dest.sub("hf").url, storage_options=_options(dest))
        shards = max(1, -(-len(ds) // config.shard_rows))
        parquet = dest.sub("parquet")
        for old in parquet.list_names():  # an earlier export's shards would be read as rows
            if old.endswith(".parquet"):
                parquet.fs.rm(parquet.path(old))
        files = []
        for i in range(shards):
            name = f"train-{i:05d}.parquet"
            ds.shard(shards, i, contiguous=True).to_parquet(f"{parquet.url}/{name}", storage_options=_options(dest))
            files.append(f"parquet/{name}")
        rows = len(ds)
        del ds
    return {"rows": rows, "hf_dir": "hf", "parquet_files": files}


@contextmanager
def _open_for_writing(store: TraceStore, name: str) -> Iterator[IO[bytes]]:
    """A file that appears whole or not at all (temp + rename locally; one object remotely)."""
    path = store.path(name)
    if not isinstance(store.fs, LocalFileSystem):
        with store.fs.open(path, "wb") as f:
            yield f
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_sharegpt(src: TraceStore, dest: TraceStore, config: ExportConfig, skipped: list[str], workers: int = 8
                   ) -> dict[str, Any]:
    """``dest/sharegpt/data.json``, ``images/`` and ``dataset_info.json``; returns the row count."""
    out = dest.sub("sharegpt")
    written: set[str] = set(n for n in out.sub("images").list_names())
    rows = 0
    with _open_for_writing(out, "data.json") as f:
        f.write(b"[")
        for r in rebuilt_traces(src, config, skipped, workers):
            paths = {}
            for ref, image in r.images.items():
                file = f"{r.hashes[ref]}.png"
                if file not in written:
                    out.write_bytes(f"images/{file}", PngCache(0).png(image, file))
                    written.add(file)
                paths[ref] = f"images/{file}"
            row = sharegpt_row(r.turns, paths) | (_metadata(r) if config.metadata else {})
            f.write((b",\n" if rows else b"\n") + json.dumps(row, ensure_ascii=False).encode())
            rows += 1
        f.write(b"\n]\n")
    out.write_json("dataset_info.json", {"geodistil": {
        "file_name": "data.json", "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }})
    return {"rows": rows, "data_file": "sharegpt/data.json", "image_files": len(written)}


# -- export and verification ----------------------------------------------------------------

def run_export(src: TraceStore, dest: TraceStore, config: ExportConfig = ExportConfig(), workers: int = 8
               ) -> dict[str, Any]:
    """Export ``src`` to ``dest`` in ``config.format``; writes and returns ``export-<format>.json``."""
    skipped: list[str] = []
    writer = write_hf if config.format == "hf" else write_sharegpt
    result = writer(src, dest, config, skipped, workers)
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


def _load_back(dest: TraceStore, fmt: str, cache: str) -> list[tuple[str, Any]]:
    """(what, dataset) pairs: every written copy, loaded with ``datasets`` as a trainer would."""
    import datasets

    if fmt == "hf":
        parquet = dest.sub("parquet")
        files = [f"{parquet.url}/{n}" for n in parquet.list_names() if n.endswith(".parquet")]
        return [("hf", datasets.load_from_disk(dest.sub("hf").url, storage_options=_options(dest))),
                ("parquet", datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache,
                                                  storage_options=_options(dest)))]
    url = dest.sub("sharegpt").url + "/data.json"
    return [("sharegpt", datasets.load_dataset("json", data_files=url, split="train", cache_dir=cache,
                                               storage_options=_options(dest)))]


def _row_images(what: str, row: dict[str, Any], dest: TraceStore) -> tuple[int, list[Image.Image]]:
    """(placeholders, images) of one loaded row."""
    if what == "sharegpt":
        placeholders = sum(turn["value"].count(IMAGE) for turn in row["conversations"])
        out = dest.sub("sharegpt")
        images = [Image.open(io.BytesIO(out.read_bytes(path))) for path in row["images"]]
        return placeholders, images
    placeholders = sum(part["type"] == "image" for m in row["messages"] for part in m["content"])
    return placeholders, [Image.open(io.BytesIO(image["bytes"])) for image in row["images"]]


def _check_row(what: str, index: int, row: dict[str, Any], dest: TraceStore, src: TraceStore
               ) -> tuple[int, str | None]:
    """(images checked, problem or None) for one loaded row."""
    placeholders, images = _row_images(what, row, dest)
    if placeholders != len(images):
        return 0, f"row {index}: {placeholders} placeholders, {len(images)} images"
    if "trace" not in row:
        return 0, None  # without metadata a row cannot be traced back to its hashes
    trace = src.read_trace(row["trace"])
    recorded = {record.ref: record.sha256 for record in trace.images}
    expected = [recorded.get(ref) for ref in image_refs(training_turns(trace))]
    if [pixel_sha256(im) for im in images] != expected:
        return len(images), f"row {index} ({row['trace']}): image hashes differ from the trace's"
    return len(images), None


def verify_export(dest: TraceStore, fmt: str, src: TraceStore, workers: int = 8) -> dict[str, Any]:
    """Load every copy back with ``datasets``; in each row the image placeholders must equal the
    images, and each image's pixel hash must be the sha256 its trace recorded.

    Rows are checked on ``workers`` threads: decoding a PNG and hashing its pixels release the GIL.
    """
    import datasets

    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="geodistil-verify-") as cache, \
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="geodistil-verify") as pool:
        for what, ds in _load_back(dest, fmt, cache):
            if "images" in ds.features and what != "sharegpt":  # decode in the workers, not while iterating
                ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
            v = Verification()
            rows = iter(ds)
            while batch := list(itertools.islice(rows, 64)):
                indexes = range(v.rows, v.rows + len(batch))
                for images, problem in pool.map(lambda i, row: _check_row(what, i, row, dest, src), indexes, batch):
                    v.images += images
                    if problem is not None:
                        v.problems.append(problem)
                v.rows += len(batch)
            checks[what] = v.as_dict()
            del ds, rows
    return {"ok": all(c["ok"] for c in checks.values()), **checks}
