"""The per-sample generation task, with retries and an explicit cache key.

The cache key is built from explicit, versioned fields (dataset fingerprint, settings
fingerprint, trace store, sample and rollout index), never from Prefect's default policy,
which includes the flow run id and so only hits inside one run. The task's persisted result
is the small ``TraceRecord`` as JSON; the full trace lives only in the trace store.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from geodistil.config import RolloutSettings
from geodistil.data import DatasetSpec, GeoDataset, open_dataset
from geodistil.errors import GeodistilError, RerunSampleError, RetryableSampleError
from geodistil.generate import finished_record, is_retryable, is_unfinished, run_one
from geodistil.store import StorageSpec, TraceStore, trace_name
from geodistil.trace import TraceRecord
from tasks.contexts import close_shared_contexts, once_per_run, shared_context
from tasks.results import TraceRecordSerializer

__all__ = ["SampleJob", "RetryableSampleError", "sample_cache_key", "generate_sample",
           "close_shared_contexts", "add_listener", "remove_listener", "notify"]

CACHE_KEY_VERSION = "geodistil-sample-v1"


class SampleJob(BaseModel):
    """A reference to one unit of work: small, hashable, no live objects, no secrets."""

    model_config = ConfigDict(frozen=True)

    dataset: DatasetSpec
    storage: StorageSpec
    settings: RolloutSettings
    sample_index: int
    rollout_index: int = 0
    refresh: bool = False  # generate again even if the store holds a finished trace

    @property
    def name(self) -> str:
        return trace_name(self.sample_index, self.rollout_index, self.settings.generation.rollouts_per_sample)


def _retry_transient_only(task: Any, task_run: Any, state: State) -> bool:
    """Retry what the error's class calls retryable (``RetryableSampleError``; an unexpected
    exception is an internal error, worth another try); never ``RerunSampleError`` or ``StoreError``."""
    error = state.data
    return not isinstance(error, GeodistilError) or error.retryable


def sample_cache_key(job: SampleJob) -> str:
    return "-".join([_run_key(job), f"{job.sample_index:06d}", f"{job.rollout_index:03d}"])


def _settings_fingerprint(settings: RolloutSettings) -> str:
    return once_per_run("settings", (settings,), settings.fingerprint)


def _run_key(job: SampleJob) -> str:
    """The cache key's part every sample of the run shares: version, dataset, settings, store."""
    def compute() -> str:
        store = hashlib.sha256(job.storage.url.encode()).hexdigest()[:12]
        return "-".join([CACHE_KEY_VERSION, open_dataset(job.dataset).fingerprint,
                         _settings_fingerprint(job.settings), store])
    return once_per_run("run", (job.dataset, job.settings, job.storage), compute)


def _cache_key_fn(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return sample_cache_key(parameters["job"])


_stores: dict[str, TraceStore] = {}
_listeners: list[Callable[[TraceRecord], None]] = []


def _store(storage: StorageSpec) -> TraceStore:
    key = once_per_run("storage", (storage,), storage.model_dump_json)
    if key not in _stores:
        _stores[key] = storage.store()
    return _stores[key]


def add_listener(listener: Callable[[TraceRecord], None]) -> None:
    """Call ``listener`` with every record this process finishes (e.g. a CLI progress bar)."""
    _listeners.append(listener)


def remove_listener(listener: Callable[[TraceRecord], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def notify(record: TraceRecord) -> None:
    for listener in list(_listeners):
        listener(record)


async def generate_sample_fn(job: SampleJob) -> TraceRecord:
    """Roll out one sample unless the store already holds its finished trace."""
    store = _store(job.storage)
    fingerprint = _settings_fingerprint(job.settings)

    def stored_or_dataset() -> TraceRecord | GeoDataset:
        # a run killed after writing a trace but before Prefect persisted the result resumes here;
        # one trip to a thread for both: hundreds of samples start at once and queue for 6 threads
        stored = None if job.refresh else finished_record(store, job.name, fingerprint)
        return stored if stored is not None else open_dataset(job.dataset)

    found = await asyncio.to_thread(stored_or_dataset)
    if isinstance(found, TraceRecord):
        record = found
    else:
        ctx = await shared_context(job.settings)
        record = await run_one(found, job.sample_index, job.rollout_index, ctx, store)
    if is_retryable(record):
        raise RetryableSampleError(f"{job.name}: {record.error}")
    if is_unfinished(record):
        raise RerunSampleError(f"{job.name}: {record.error}")
    return record


generate_sample = task(
    generate_sample_fn,
    name="generate-sample",
    task_run_name="sample-{job.sample_index}-r{job.rollout_index}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient_only,
    cache_key_fn=_cache_key_fn,
    persist_result=True,
    result_serializer=TraceRecordSerializer(),  # JSON: the store is data, never code (see tasks.results)
    cache_result_in_memory=False,
)
