"""Where and how Prefect persists task results: beside the traces, as JSON that runs no code.

The results live in ``<store>/.prefect-results`` so caches travel with the traces. Whoever can
write to the store (a shared bucket, a shared disk) can therefore write a result file, and
Prefect decodes a result with the serializer the *file* names: a file that says ``pickle`` is
unpickled, and even a ``json`` one names the module it decodes with and the classes it builds.
So the storage blocks here hand Prefect only records that name exactly ``TraceRecordSerializer``;
any other file (an old pickle result, a crafted one) reads as an error, which Prefect treats
as a cache miss: the task runs again and finds its trace in the store.

Prefect 3 accepts only a *saved* block as ``result_storage`` (a bare ``s3://`` string is
refused), so ``result_storage_for`` saves a block named after the trace store's URL: once per
run (``flows.generation.generate_flow``), which hands the saved block to each chunk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem
from prefect.serializers import Serializer
from pydantic import Field

from geodistil.errors import UntrustedResultError
from geodistil.store import RESULTS_DIR, StorageSpec
from geodistil.trace import TraceRecord


class TraceRecordSerializer(Serializer):  # type: ignore[type-arg]  # Serializer[X] breaks its registry
    """A ``TraceRecord`` as its pydantic JSON: nothing is imported or built by name on load.

    Prefect also persists a failed task's exception (under a fresh key, never a cache key): that
    is kept as its message and read back as a ``RuntimeError``.
    """

    type: str = Field(default="geodistil-trace-record", frozen=True)

    def dumps(self, obj: TraceRecord | BaseException) -> bytes:
        if isinstance(obj, BaseException):
            return json.dumps({"failed": f"{type(obj).__name__}: {obj}"}).encode()
        return obj.model_dump_json().encode()

    def loads(self, blob: bytes) -> TraceRecord | RuntimeError:
        failed = json.loads(blob).get("failed")
        return RuntimeError(failed) if isinstance(failed, str) else TraceRecord.model_validate_json(blob)


_TRUSTED_SERIALIZER = TraceRecordSerializer().model_dump(mode="json")


def checked_result(content: bytes) -> bytes:
    """``content`` if it is a result record whose serializer is ``TraceRecordSerializer``, else raise."""
    try:
        record: Any = json.loads(content)
    except ValueError as exc:  # a pickle, or anything else that is not a JSON record
        raise UntrustedResultError("not a JSON result record") from exc
    metadata = record.get("metadata") if isinstance(record, dict) else None
    serializer = metadata.get("serializer") if isinstance(metadata, dict) else None
    if serializer != _TRUSTED_SERIALIZER or not isinstance(record.get("result"), str):
        raise UntrustedResultError(f"a result record with serializer {serializer!r}, not {_TRUSTED_SERIALIZER!r}")
    return content


class _TrustedReads:
    """Reads that hand Prefect only ``TraceRecordSerializer`` records (mixed into a file-system block)."""

    async def aread_path(self, path: str) -> bytes:
        return checked_result(await super().aread_path(path))  # type: ignore[misc]

    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        return checked_result(super().read_path(path, _sync=True))  # type: ignore[misc]


@functools.lru_cache(maxsize=32)
def _resolved_folder(basepath: str) -> Path:
    return Path(basepath).expanduser().resolve()


class TrustedLocalResults(_TrustedReads, LocalFileSystem):
    """A local results folder that hands Prefect only ``TraceRecordSerializer`` records."""

    _block_type_name = "Geodistil Local Results"

    def _resolve_path(self, path: str | None) -> Path:
        """Prefect's rule (a path must resolve inside the folder, links followed) for a fraction of
        its system calls: Prefect resolves the folder and the path, one ``lstat`` per component,
        on every read and write (two per sample, about 18 calls; 3-4 ms per sample where system
        calls are slow, e.g. in a sandbox). Here the folder is resolved once per process, and a
        result's plain file name below it, not a link, is its own resolution (one ``lstat``).
        Anything else (a link, a nested or relative path) goes Prefect's way."""
        if isinstance(path, str) and self.basepath and "/" not in path and path not in ("", ".", "..") \
                and not path.startswith("~"):
            candidate = _resolved_folder(self.basepath) / path
            if not candidate.is_symlink():
                return candidate
        return super()._resolve_path(path)


class TrustedRemoteResults(_TrustedReads, RemoteFileSystem):
    """A remote (fsspec URL) results folder that hands Prefect only ``TraceRecordSerializer`` records."""

    _block_type_name = "Geodistil Remote Results"


def results_block(storage: StorageSpec) -> WritableFileSystem:
    """The (unsaved) block for ``<store url>/.prefect-results``."""
    url = storage.url.rstrip("/")
    if "://" in url and not url.startswith("file://"):
        # storage options may name an endpoint; credentials stay in the environment
        return TrustedRemoteResults(basepath=f"{url}/{RESULTS_DIR}", settings=dict(storage.storage_options or {}))
    return TrustedLocalResults(basepath=os.path.abspath(os.path.join(url.removeprefix("file://"), RESULTS_DIR)))


async def result_storage_for(storage: StorageSpec) -> WritableFileSystem:
    """``results_block(storage)``, saved under a name derived from the store's URL."""
    block = results_block(storage)
    await block.save("geodistil-results-" + hashlib.sha256(storage.url.rstrip("/").encode()).hexdigest()[:16],
                     overwrite=True)
    return block
