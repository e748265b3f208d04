"""The export formats, in a registry: each one writes rows, loads them back and counts their images.

A format is one class here, registered by name with ``@register_format``; ``run_export``, its
verification and the CLI's ``--format`` choices all read ``FORMATS``, so a new format touches
this module and its tests only (docs/extending.md). The export core (``geodistil.export``)
hands a format ``ExportRow``\\s: a trace's training turns and its images, already rebuilt by
replay and checked against their hashes.

- ``hf``: a Hugging Face dataset with ``messages`` and ``images`` columns, the shape TRL's
  vision SFT expects (each message's ``content`` is a list of ``{"type": "text", "text": ..}``
  and ``{"type": "image"}`` parts; ``images`` holds one image per image part, in order).
  Written twice: ``hf/`` by ``save_to_disk`` and ``parquet/train-00000.parquet``, ...
- ``sharegpt``: LLaMA-Factory's ShareGPT JSON (``sharegpt/data.json``) with an ``<image>``
  placeholder per image, in order, the PNG files under ``sharegpt/images/`` (named by pixel
  hash, so the photo shared by a sample's rollouts is stored once) and a ``dataset_info.json``
  that LLaMA-Factory reads with ``dataset_dir`` pointing at ``sharegpt/``.

Heavy libraries (``datasets``, PIL) are imported where used, so the CLI reads the registry cheaply.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

if TYPE_CHECKING:
    from PIL import Image

    from geodistil.store import TraceStore
    from geodistil.trace import Trace

IMAGE = "<image>"  # LLaMA-Factory's placeholder
ROLES = {"user": "human", "assistant": "gpt"}


# -- what a format writes -------------------------------------------------------------------

@dataclass
class Turn:
    role: str  # system | user | assistant
    parts: list[str | int] = field(default_factory=list)  # text, or an image ref

    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))


def image_refs(turns: list[Turn]) -> list[int]:
    """The image refs of a conversation, in the order its placeholders come."""
    return [p for t in turns for p in t.parts if isinstance(p, int)]


@dataclass
class ExportRow:
    """One trace, ready to write: its training turns and every image they show, checked by hash."""

    name: str
    trace: Trace
    turns: list[Turn]
    images: dict[int, Image.Image]  # ref -> image, checked against the trace's sha256
    hashes: dict[int, str]  # ref -> that sha256
    metadata: dict[str, Any]  # trace, sample_index, ...; empty when the export leaves it out


class WriteOptions(Protocol):
    """What a writer reads of ``ExportConfig``."""

    metadata: bool
    shard_rows: int


class ExportFormat:
    """One export format: ``write`` the rows, ``load_back`` what was written, ``count_images`` of a row."""

    name: ClassVar[str]
    help: ClassVar[str]  # one line for the CLI

    def reject(self, turns: list[Turn]) -> str | None:
        """Why a conversation cannot be written in this format, or None."""
        return None

    def write(self, rows: Iterator[ExportRow], dest: TraceStore, options: WriteOptions) -> dict[str, Any]:
        """Write every row under ``dest``; returns ``{"rows": n, ...}`` for the export's manifest."""
        raise NotImplementedError

    def load_back(self, dest: TraceStore, cache: str) -> list[tuple[str, Any]]:
        """(what, ``datasets.Dataset``) for every written copy, loaded as a trainer would."""
        raise NotImplementedError

    def count_images(self, what: str, row: dict[str, Any], dest: TraceStore) -> tuple[int, list[Image.Image]]:
        """(placeholders, images) of one loaded row."""
        raise NotImplementedError


FORMATS: dict[str, ExportFormat] = {}
F = TypeVar("F", bound=type[ExportFormat])


def register_format(cls: F) -> F:
    """Class decorator: add a format to ``FORMATS`` under its ``name``."""
    FORMATS[cls.name] = cls()
    return cls


def format_named(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


# -- shared by the writers ------------------------------------------------------------------

def storage_options(store: TraceStore) -> dict[str, Any] | None:
    """A fresh copy of the store's fsspec options for each ``datasets`` call, which adds keys to it."""
    return dict(store.storage_options) or None


@contextmanager
def open_for_writing(store: TraceStore, name: str) -> Iterator[IO[bytes]]:
    """A file that appears whole or not at all (temp + rename locally; one object remotely)."""
    from fsspec.implementations.local import LocalFileSystem

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


def open_image(data: bytes) -> Image.Image:
    from PIL import Image

    return Image.open(io.BytesIO(data))


# -- hf: TRL messages + images, save_to_disk and Parquet ------------------------------------

def trl_messages(turns: list[Turn]) -> list[dict[str, Any]]:
    """TRL / transformers chat messages with ``{"type": "image"}`` placeholders."""
    return [{"role": t.role, "content": [{"type": "image", "text": None} if isinstance(p, int)
                                         else {"type": "text", "text": p} for p in t.parts if p != ""]}
            for t in turns]


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


def _hf_rows(rows: Iterator[ExportRow]) -> Iterator[dict[str, Any]]:
    from geodistil.replay import PngCache

    cache = PngCache()
    for r in rows:
        yield {"messages": trl_messages(r.turns),
               "images": [{"bytes": cache.png(r.images[ref], r.hashes[ref]), "path": None}
                          for ref in image_refs(r.turns)]} | r.metadata


@register_format
class HFFormat(ExportFormat):
    name = "hf"
    help = "TRL messages + images: save_to_disk and Parquet"

    def write(self, rows: Iterator[ExportRow], dest: TraceStore, options: WriteOptions) -> dict[str, Any]:
        """``dest/hf`` (save_to_disk) and ``dest/parquet/train-*.parquet``."""
        import datasets

        with tempfile.TemporaryDirectory(prefix="geodistil-export-") as cache:
            ds = datasets.Dataset.from_generator(
                _hf_rows, features=hf_features(options.metadata), cache_dir=cache, gen_kwargs={"rows": rows},
                fingerprint=uuid.uuid4().hex)  # a fresh build every time: the store may have changed
            ds.save_to_disk(dest.sub("hf").url, storage_options=storage_options(dest))
            shards = max(1, -(-len(ds) // options.shard_rows))
            parquet = dest.sub("parquet")
            for old in parquet.list_names():  # an earlier export's shards would be read as rows
                if old.endswith(".parquet"):
                    parquet.fs.rm(parquet.path(old))
            files = []
            for i in range(shards):
                name = f"train-{i:05d}.parquet"
                ds.shard(shards, i, contiguous=True).to_parquet(f"{parquet.url}/{name}",
                                                                storage_options=storage_options(dest))
                files.append(f"parquet/{name}")
            count = len(ds)
            del ds
        return {"rows": count, "hf_dir": "hf", "parquet_files": files}

    def load_back(self, dest: TraceStore, cache: str) -> list[tuple[str, Any]]:
        import datasets

        parquet = dest.sub("parquet")
        files = [f"{parquet.url}/{n}" for n in parquet.list_names() if n.endswith(".parquet")]
        copies = [("hf", datasets.load_from_disk(dest.sub("hf").url, storage_options=storage_options(dest))),
                  ("parquet", datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache,
                                                    storage_options=storage_options(dest)))]
        # bytes, not decoded images: the verifier decodes on its worker threads
        return [(what, ds.cast_column("images", datasets.List(datasets.Image(decode=False))))
                for what, ds in copies]

    def count_images(self, what: str, row: dict[str, Any], dest: TraceStore) -> tuple[int, list[Image.Image]]:
        placeholders = sum(part["type"] == "image" for m in row["messages"] for part in m["content"])
        return placeholders, [open_image(image["bytes"]) for image in row["images"]]


# -- sharegpt: LLaMA-Factory ----------------------------------------------------------------

def sharegpt_row(turns: list[Turn], image_paths: dict[int, str]) -> dict[str, Any]:
    """LLaMA-Factory ShareGPT: ``conversations`` with ``<image>`` where each image goes."""
    system = "".join(t.text() for t in turns if t.role == "system")
    conversations = [{"from": ROLES[t.role], "value": "".join(IMAGE if isinstance(p, int) else p for p in t.parts)}
                     for t in turns if t.role != "system"]
    return {"conversations": conversations, "system": system, "images": [image_paths[r] for r in image_refs(turns)]}


@register_format
class ShareGPTFormat(ExportFormat):
    name = "sharegpt"
    help = "LLaMA-Factory ShareGPT JSON + PNG files"

    def reject(self, turns: list[Turn]) -> str | None:
        if any(IMAGE in p for t in turns for p in t.parts if isinstance(p, str)):
            return f"the text contains the literal placeholder {IMAGE}"
        return None

    def write(self, rows: Iterator[ExportRow], dest: TraceStore, options: WriteOptions) -> dict[str, Any]:
        """``dest/sharegpt/data.json``, ``images/`` and ``dataset_info.json``."""
        from geodistil.replay import png_bytes

        out = dest.sub("sharegpt")
        written: set[str] = set(out.sub("images").list_names())
        count = 0
        with open_for_writing(out, "data.json") as f:
            f.write(b"[")
            for r in rows:
                paths = {}
                for ref, image in r.images.items():
                    file = f"{r.hashes[ref]}.png"
                    if file not in written:
                        out.write_bytes(f"images/{file}", png_bytes(image))
                        written.add(file)
                    paths[ref] = f"images/{file}"
                row = sharegpt_row(r.turns, paths) | r.metadata
                f.write((b",\n" if count else b"\n") + json.dumps(row, ensure_ascii=False).encode())
                count += 1
            f.write(b"\n]\n")
        out.write_json("dataset_info.json", {"geodistil": {
            "file_name": "data.json", "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system", "images": "images"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }})
        return {"rows": count, "data_file": "sharegpt/data.json", "image_files": len(written)}

    def load_back(self, dest: TraceStore, cache: str) -> list[tuple[str, Any]]:
        import datasets

        url = dest.sub("sharegpt").url + "/data.json"
        return [("sharegpt", datasets.load_dataset("json", data_files=url, split="train", cache_dir=cache,
                                                   storage_options=storage_options(dest)))]

    def count_images(self, what: str, row: dict[str, Any], dest: TraceStore) -> tuple[int, list[Image.Image]]:
        placeholders = sum(turn["value"].count(IMAGE) for turn in row["conversations"])
        out = dest.sub("sharegpt")
        return placeholders, [open_image(out.read_bytes(path)) for path in row["images"]]
