"""The trace store's layout in one place, read and written through fsspec (a folder or ``s3://``).

- Where a store is and which samples a run takes: ``StorageSpec``, ``SampleRange``.
- Trace files are named by sample order (``trace_name``): ``trace_00000.json``, or
  ``trace_00000_r01.json`` when a sample has several rollouts.
- Every other file a run or a curation stage writes has its name here (``MANIFEST``,
  ``SUMMARY``, ``REPORT``, ``FILTER_MANIFEST``, ``REJECTED``, ``SPLIT_MANIFEST``,
  ``DIFFICULTY_FILE``, ``LOCK``, ``RESULTS_DIR``), and a split store's buckets are the
  sub-folders ``DIFFICULTIES``.
- ``manifest.json`` is a ``Manifest`` of ``ManifestRow``; ``summary.json`` is a ``Summary``.
  Both are written and read through these models, in the JSON shape stores have always had
  (``tests/store_format_v1`` holds files of that shape, which must keep reading).

Every write is atomic: a local file is written under a temporary name and renamed; an object
store makes a whole object visible at once. One run writes a store at a time: ``RunLock``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geodistil.errors import ConfigError, StoreLockedError, TraceError
from geodistil.trace import Trace

# -- well-known file names ------------------------------------------------------------------
MANIFEST = "manifest.json"  # the ordered list of a store's traces (generation, filter and split write one)
SUMMARY = "summary.json"  # the run summary (``geodistil stats``; generation writes a first one)
REPORT = "report.html"  # the summary drawn as a page
FILTER_MANIFEST = "filter.json"  # how many traces each filter rule removed
REJECTED = "rejected.jsonl"  # every trace the filter removed, with the rule and the reason
SPLIT_MANIFEST = "split.json"  # marks a split store: its traces are in the DIFFICULTIES sub-folders
DIFFICULTY_FILE = "difficulty.jsonl"  # a split store's per-sample ratings
LOCK = ".geodistil-run.lock"  # the run lock (``RunLock``)
RESULTS_DIR = ".prefect-results"  # Prefect's task results, beside the traces they describe
DIFFICULTIES = ("easy", "medium", "hard")  # a split store's bucket sub-folders, easiest first
UNRATED = "unrated"  # the bucket of a sample with no rating (not written as a sub-folder)

HEARTBEAT_S = 20.0
STALE_AFTER_S = 120.0  # six missed heartbeats: the holder is gone

log = logging.getLogger(__name__)


# -- where, and which samples -----------------------------------------------------------------
class StorageSpec(BaseModel):
    """Where traces go: a folder or ``s3://bucket/prefix``, with fsspec options (no secrets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field("out/traces", description="local folder or s3://bucket/prefix")
    storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options, e.g. {'endpoint_url': ...}; credentials come from the environment")

    def store(self) -> TraceStore:
        return TraceStore(self.url, self.storage_options)


class SampleRange(BaseModel):
    """Which samples a run takes: ``num_samples`` from ``start`` (default: all to the end)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(0, ge=0)
    num_samples: int | None = Field(None, ge=1, description="default: every sample from start")

    def indices(self, dataset_len: int) -> range:
        """The indices to run; ``ConfigError`` when the range holds none, since a run of zero
        samples is never what was asked for (``num_samples`` is at least 1)."""
        if self.start >= dataset_len:
            raise ConfigError(f"start {self.start} is past the end of the dataset ({dataset_len} samples, "
                              f"indices 0 to {dataset_len - 1}): give a start below {dataset_len}")
        stop = dataset_len if self.num_samples is None else min(dataset_len, self.start + self.num_samples)
        return range(self.start, stop)

    def shortfall(self, dataset_len: int) -> str | None:
        """A one-line warning when the dataset ends before ``num_samples`` samples from ``start``."""
        if self.num_samples is None or self.start + self.num_samples <= dataset_len:
            return None
        runs = len(self.indices(dataset_len))
        return (f"num_samples {self.num_samples} from start {self.start} goes past the end of the dataset "
                f"({dataset_len} samples): {runs} will run")


# -- trace names ------------------------------------------------------------------------------
_NAME = re.compile(r"^trace_(\d+)(?:_r(\d+))?\.json$")


def trace_name(sample_index: int, rollout_index: int = 0, rollouts_per_sample: int = 1) -> str:
    """The file name of a (sample, rollout): the one place a trace's name is made."""
    if rollouts_per_sample > 1:
        return f"trace_{sample_index:05d}_r{rollout_index:02d}.json"
    return f"trace_{sample_index:05d}.json"


def parse_trace_name(name: str) -> tuple[int, int] | None:
    """(sample_index, rollout_index) of a trace file name, or None for other files."""
    match = _NAME.match(name.rsplit("/", 1)[-1])
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def trace_sort_key(name: str) -> tuple[int, int]:
    """Sample order for file names; names that are not traces' sort first."""
    key = parse_trace_name(name)
    return key if key is not None else (-1, -1)


# -- manifest.json ------------------------------------------------------------------------------
class _Row(Protocol):  # a Trace or a TraceRecord
    sample_index: int
    rollout_index: int
    ok: bool
    error_kind: str | None
    error: str | None


class ManifestRow(BaseModel):
    """One trace of a store, in order: ``manifest.json``'s ``traces`` list."""

    model_config = ConfigDict(extra="allow")  # a row written by a later version keeps its fields

    name: str
    sample_index: int
    rollout_index: int
    ok: bool
    error_kind: str | None = None
    error: str | None = None  # a curated store's rows (before this model) have no error

    @classmethod
    def of(cls, name: str, trace: _Row) -> ManifestRow:
        return cls(name=name, sample_index=trace.sample_index, rollout_index=trace.rollout_index,
                   ok=trace.ok, error_kind=trace.error_kind, error=trace.error)


class RunFacts(BaseModel):
    """What a generation run records about itself in its manifest and summary (absent elsewhere)."""

    model_config = ConfigDict(extra="allow")

    dataset_path: str | None = None
    dataset_fingerprint: str | None = None
    settings_fingerprint: str | None = None
    generated: int | None = None  # traces requested from the teacher in this run
    reused: int | None = None  # traces already in the store for the same settings
    stopped: str | None = None  # why the run stopped starting samples, when it did

    def to_json(self) -> dict[str, Any]:
        """The JSON written to the store: only the fields that were given, as the files always had."""
        return self.model_dump(mode="json", exclude_unset=True)


class Manifest(RunFacts):
    """``manifest.json``: a store's traces in (sample, rollout) order, and a run's facts."""

    traces: list[ManifestRow]


# -- summary.json --------------------------------------------------------------------------------
class Percentiles(BaseModel):
    model_config = ConfigDict(extra="allow")

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class ToolUse(BaseModel):
    """One tool's use over a summary's traces (``errors`` is None when summarised from records)."""

    model_config = ConfigDict(extra="allow")

    traces: int = 0
    share_of_traces: float = 0.0
    calls: int = 0
    calls_per_trace: float = 0.0
    errors: int | None = None
    error_rate: float | None = None


class DistanceCdf(BaseModel):
    km: list[float] = Field(default_factory=list)
    share: list[float] = Field(default_factory=list)


class RewardHistogram(BaseModel):
    edges: list[float] = Field(default_factory=list)
    counts: list[int] = Field(default_factory=list)


class Summary(RunFacts):
    """``summary.json``: counts, parse rate, distances, rewards, accuracies, tool use, tokens, latency.

    Built by ``geodistil.stats.SummaryBuilder``; every field has a default so a summary of an
    older shape still reads. ``by_difficulty`` holds one summary per bucket of a split store.
    """

    store: str | None = None
    total: int = 0
    success: int = 0
    failed: int = 0
    unreadable: int = 0
    unreadable_traces: list[str] = Field(default_factory=list)
    error_kinds: dict[str, int] = Field(default_factory=dict)
    parse_success: int = 0
    parse_success_rate: float = 0.0
    mean_distance_km: float | None = None
    median_distance_km: float | None = None
    mean_reward: float | None = None
    mean_geoscore: float | None = None
    accuracy: dict[str, float] = Field(default_factory=dict)  # "25km" -> share within
    country_accuracy: float | None = None
    country_evaluated: int | None = None
    tool_calls: int = 0
    mean_tool_calls: float = 0.0
    tool_error_rate: float = 0.0
    tool_calls_by_name: dict[str, int] = Field(default_factory=dict)
    traces_using_tools: float = 0.0
    tool_use: dict[str, ToolUse] = Field(default_factory=dict)
    turns: dict[str, int] = Field(default_factory=dict)
    mean_turns: float | None = None
    stop_reasons: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None  # None: no trace has a price
    tokens: dict[str, Percentiles] = Field(default_factory=dict)  # "prompt", "completion"
    latency_s: Percentiles = Field(default_factory=Percentiles)
    distance_cdf: DistanceCdf | None = None
    reward_histogram: RewardHistogram | None = None
    teachers: dict[str, int] = Field(default_factory=dict)
    datasets: dict[str, int] = Field(default_factory=dict)
    by_difficulty: dict[str, Summary] | None = None

    @classmethod
    def of(cls, data: Summary | Mapping[str, Any]) -> Summary:
        """A summary from its JSON form (or itself)."""
        return data if isinstance(data, Summary) else cls.model_validate(data)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


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

    # manifest and summary ---------------------------------------------------------------
    def write_manifest(self, rows: Iterable[ManifestRow], facts: RunFacts | None = None) -> Manifest:
        manifest = Manifest(traces=list(rows), **(facts.to_json() if facts is not None else {}))
        self.write_json(MANIFEST, manifest.to_json())
        return manifest

    def read_manifest(self) -> Manifest | None:
        """The store's manifest, or None when it has none or one of another shape."""
        try:
            return Manifest.model_validate_json(self.read_bytes(MANIFEST))
        except (FileNotFoundError, ValidationError):
            return None

    def write_summary(self, summary: Summary) -> None:
        self.write_json(SUMMARY, summary.to_json())

    def read_summary(self) -> Summary | None:
        """The store's summary, or None when it has none or one of another shape."""
        try:
            return Summary.model_validate_json(self.read_bytes(SUMMARY))
        except (FileNotFoundError, ValidationError):
            return None

    def split_buckets(self) -> list[str] | None:
        """The bucket sub-folders of a store the difficulty split wrote, or None for any other store."""
        return list(DIFFICULTIES) if self.exists(SPLIT_MANIFEST) else None

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
