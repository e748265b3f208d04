"""Reading and writing traces and manifests through fsspec (a local folder or ``s3://``).

Trace files are named by sample order: ``trace_00000.json``, or ``trace_00000_r01.json``
when a sample has several rollouts. Every write is atomic: a local file is written under a
temporary name and renamed; an object store makes a whole object visible at once.

One run writes a store at a time: ``RunLock`` (the lock file ``.geodistil-run.lock``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field, ValidationError

from geodistil.errors import StoreLockedError, TraceError
from geodistil.trace import Trace

LOCK = ".geodistil-run.lock"
HEARTBEAT_S = 20.0
STALE_AFTER_S = 120.0  # six missed heartbeats: the holder is gone

log = logging.getLogger(__name__)

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

    def create_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` only if it does not exist (else ``FileExistsError``), atomically: readers
        never see it half-written. An object store does this with a conditional write (S3's
        ``If-None-Match``); one that ignores the condition makes it a plain write."""
        path = self.path(name)
        if self._local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)  # fails if ``path`` exists, unlike a rename
            finally:
                os.remove(tmp)
        else:
            self.fs.pipe_file(path, data, mode="create")

    def delete(self, name: str) -> None:
        self.fs.rm_file(self.path(name))

    def remove_temporaries(self) -> list[str]:
        """Delete the temporary files a killed writer left (local folders only: an object store
        writes no temporaries); returns their names. Only the run holding the lock may call it."""
        if not self._local:
            return []
        left = sorted(n for n in os.listdir(self.root) if ".tmp-" in n)
        for name in left:
            os.remove(self.path(name))
        return left

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


# the run lock ----------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(timezone.utc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class LockHolder(BaseModel):
    """Who holds a store's run lock: what its lock file says."""

    owner: str
    token: str = Field(default_factory=lambda: uuid.uuid4().hex)
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    started: datetime = Field(default_factory=_now)
    heartbeat: datetime = Field(default_factory=_now)

    def describe(self) -> str:
        return (f"{self.owner} on {self.host} (pid {self.pid}, started {self.started:%Y-%m-%d %H:%M:%S} UTC, "
                f"last heartbeat {self.heartbeat:%H:%M:%S} UTC)")

    def is_stale(self, stale_after_s: float = STALE_AFTER_S) -> bool:
        """Its process is gone (known only on its own host), or it stopped beating."""
        if self.host == socket.gethostname() and not _alive(self.pid):
            return True
        return (_now() - self.heartbeat).total_seconds() > stale_after_s


def raise_if_locked(store: TraceStore, stale_after_s: float = STALE_AFTER_S) -> None:
    """Raise ``StoreLockedError`` if a live run holds the store (only a look: ``RunLock`` takes it)."""
    holder = lock_holder(store)
    if holder is not None and not holder.is_stale(stale_after_s):
        raise _locked(store, holder, stale_after_s)


def _locked(store: TraceStore, holder: LockHolder | None, stale_after_s: float) -> StoreLockedError:
    who = holder.describe() if holder is not None else "another run"
    return StoreLockedError(f"{store.url} is in use by {who}; wait for that run to end or stop it "
                            f"(a lock whose run is gone is taken over after {stale_after_s:.0f} s without a heartbeat)")


def lock_holder(store: TraceStore) -> LockHolder | None:
    """The store's lock as its file says, or None: no lock, or one too torn to name anyone."""
    try:
        return LockHolder.model_validate_json(store.read_bytes(LOCK))
    except (FileNotFoundError, ValidationError):
        return None


class RunLock:
    """One run at a time on a store: a lock file naming its holder, with a heartbeat.

    ``acquire`` creates the lock file only if there is none (on S3 a conditional write), so of
    two runs starting together exactly one gets it; the other raises ``StoreLockedError``
    naming the holder. While held, a thread rewrites the heartbeat every ``heartbeat_s``. A
    lock whose process is gone (same host) or whose heartbeat is older than ``stale_after_s``
    is taken over with a warning; taking over is best effort: the stale file is deleted, then
    created again conditionally, and two runs taking over the same stale lock at the same
    moment could both delete before one creates. Hosts' clocks must roughly agree.
    """

    def __init__(self, store: TraceStore, owner: str, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self.store, self.heartbeat_s, self.stale_after_s = store, heartbeat_s, stale_after_s
        self.holder = LockHolder(owner=owner)
        self.replaced: LockHolder | None = None  # the stale holder taken over, for the caller to warn about
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> "RunLock":
        try:
            self._create()
        except FileExistsError:
            self._take_over(lock_holder(self.store))
        self._beating = threading.Thread(target=self._beat, name="geodistil-run-lock", daemon=True)
        self._beating.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._beating is not None:
            self._beating.join()
        current = lock_holder(self.store)
        if current is not None and current.token == self.holder.token:
            self.store.delete(LOCK)

    def _create(self) -> None:
        self.store.create_bytes(LOCK, self.holder.model_dump_json(indent=2).encode())

    def _take_over(self, stale: LockHolder | None) -> None:
        if stale is not None and not stale.is_stale(self.stale_after_s):
            raise _locked(self.store, stale, self.stale_after_s)
        if lock_holder(self.store) != stale:  # someone else got there first
            raise _locked(self.store, lock_holder(self.store), self.stale_after_s)
        try:
            self.store.delete(LOCK)
        except FileNotFoundError:
            pass
        try:
            self._create()
        except FileExistsError:
            raise _locked(self.store, lock_holder(self.store), self.stale_after_s) from None
        self.replaced = stale

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = lock_holder(self.store)
                if current is None or current.token != self.holder.token:
                    log.warning("%s: the run lock was taken over by %s", self.store.url,
                                current.describe() if current is not None else "nobody (it is gone)")
                    return
                self.holder = self.holder.model_copy(update={"heartbeat": _now()})
                self.store.write_bytes(LOCK, self.holder.model_dump_json(indent=2).encode())
            except OSError as exc:  # a passing storage error: the next beat tries again
                log.warning("%s: run lock heartbeat failed: %s", self.store.url, exc)
