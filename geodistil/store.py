"""Reading and writing traces and manifests through fsspec (a local folder or ``s3://``).

Trace files are named by sample order: ``trace_00000.json``, or ``trace_00000_r01.json``
when a sample has several rollouts. Every write is atomic: a local file is written under a
temporary name and renamed; an object store makes a whole object visible at once.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from geodistil.errors import TraceError
from geodistil.trace import Trace

_NAME = re.compile(r"^trace_(\d+)(?:_r(\d+))?\.json$")


def trace_name(sample_index: int, rollout_index: int = 0, rollouts_per_sample: int = 1) -> str:
    if rollouts_per_sample > 1:
        return f"trace_{sample_index:05d}_r{rollout_index:02d}.json"
    return f"trace_{sample_index:05d}.json"


def parse_trace_name(name: str) -> tuple[int, int] | None:
    """(sample_index, rollout_index) of a trace file name, or None for other files."""
    match = _NAME.match(name.rsplit("/", 1)[-1])
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


class TraceStore:
    """A folder of traces, local or remote, addressed by URL."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.root = self.root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        if self._local:
            os.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:
        return f"TraceStore({self.url!r})"

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def sub(self, name: str) -> "TraceStore":
        """A store in a sub-folder (e.g. ``easy/``)."""
        return TraceStore(f"{self.url}/{name}", self.storage_options)

    # raw files -----------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> None:
        path = self.path(name)
        if self._local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def read_bytes(self, name: str) -> bytes:
        return self.fs.cat_file(self.path(name))

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def write_json(self, name: str, obj: Any) -> None:
        self.write_bytes(name, json.dumps(obj, indent=2, default=str).encode())

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name))

    def list_names(self) -> list[str]:
        """File names directly in the store (no temporary files)."""
        try:
            entries = self.fs.ls(self.root, detail=False, refresh=True) if not self._local else \
                self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        names = [e.rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in names if ".tmp-" not in n)

    # traces --------------------------------------------------------------------------
    def write_trace(self, trace: Trace, rollouts_per_sample: int = 1) -> str:
        name = trace_name(trace.sample_index, trace.rollout_index, rollouts_per_sample)
        self.write_bytes(name, trace.to_json().encode())
        return name

    def read_trace(self, name: str) -> Trace:
        try:
            data = self.read_bytes(name)
        except FileNotFoundError as exc:
            raise TraceError(f"{name}: missing") from exc
        try:
            return Trace.from_json(data)
        except TraceError as exc:
            raise TraceError(f"{name}: {exc}") from exc

    def trace_names(self) -> list[str]:
        """Trace file names ordered by (sample_index, rollout_index)."""
        keyed = [(parse_trace_name(n), n) for n in self.list_names()]
        return [n for key, n in sorted((k, n) for k, n in keyed if k is not None)]

    def trace_keys(self) -> set[tuple[int, int]]:
        return {k for k in (parse_trace_name(n) for n in self.list_names()) if k is not None}

    def iter_traces(self) -> Iterator[tuple[str, Trace | TraceError]]:
        """Every trace in order; an unreadable one is yielded as its ``TraceError``."""
        for name in self.trace_names():
            try:
                yield name, self.read_trace(name)
            except TraceError as exc:
                yield name, exc
