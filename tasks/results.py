"""Where Prefect persists task results: beside the traces, so caches travel with them.

Prefect 3 accepts only a *saved* block as ``result_storage`` (a bare ``s3://`` string is
refused), so this saves a filesystem block named after the trace store's URL.
"""

from __future__ import annotations

import hashlib
import os

from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem

from geodistil.generate import StorageSpec

RESULTS_DIR = ".prefect-results"


async def result_storage_for(storage: StorageSpec) -> WritableFileSystem:
    """A saved filesystem block at ``<store url>/.prefect-results``."""
    url = storage.url.rstrip("/")
    name = "geodistil-results-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    block: WritableFileSystem
    if "://" in url and not url.startswith("file://"):
        # storage options may name an endpoint; credentials stay in the environment
        block = RemoteFileSystem(basepath=f"{url}/{RESULTS_DIR}", settings=dict(storage.storage_options or {}))
    else:
        block = LocalFileSystem(basepath=os.path.abspath(os.path.join(url.removeprefix("file://"), RESULTS_DIR)))
    await block.save(name, overwrite=True)
    return block
