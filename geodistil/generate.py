"""Generating traces for a range of samples: bounded concurrency, ordered names, resumable.

This is the plain-library driver (no Prefect): ``generate`` runs a set of (sample, rollout)
keys with at most ``max_concurrency`` conversations in flight, writes each trace as soon as
it is done, and finishes with an ordered ``manifest.json`` and ``summary.json``. The Prefect
flows in ``flows/`` wrap ``run_one`` per sample instead, for retries, caching and the UI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from geodistil.config import RolloutSettings
from geodistil.data import DatasetSpec, GeoDataset, open_dataset
from geodistil.errors import TraceError
from geodistil.rollout import RolloutContext, rollout
from geodistil.stats import SummaryBuilder
from geodistil.store import TraceStore, trace_name
from geodistil.trace import TraceRecord

MANIFEST = "manifest.json"
SUMMARY = "summary.json"

# errors worth another try on a re-run; a broken sample stays broken
RETRYABLE_KINDS = ("teacher_error", "internal_error")


class StorageSpec(BaseModel):
    """Where traces go: a folder or ``s3://bucket/prefix``, with fsspec options (no secrets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field("out/traces", description="local folder or s3://bucket/prefix")
    storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options, e.g. {'endpoint_url': ...}; credentials come from the environment")

    def store(self) -> TraceStore:
        return TraceStore(self.url, self.storage_options)


class SampleRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(0, ge=0)
    num_samples: int | None = Field(None, ge=1, description="default: every sample from start")

    def indices(self, dataset_len: int) -> range:
        stop = dataset_len if self.num_samples is None else min(dataset_len, self.start + self.num_samples)
        return range(self.start, max(self.start, stop))


def is_retryable(record: TraceRecord) -> bool:
    return not record.ok and (record.error_kind or "").startswith(RETRYABLE_KINDS)


def plan_keys(indices: Iterable[int], rollouts: int) -> Iterator[tuple[int, int]]:
    for index in indices:
        for r in range(rollouts):
            yield index, r


def finished_record(store: TraceStore, name: str, settings_fingerprint: str) -> TraceRecord | None:
    """The record of a trace already in the store for the same settings, unless worth retrying."""
    try:
        trace = store.read_trace(name)
    except TraceError:
        return None  # missing or torn: generate it again
    if trace.teacher is None or trace.teacher.settings_fingerprint != settings_fingerprint:
        return None
    record = TraceRecord.of(trace, name)
    return None if is_retryable(record) else record


async def run_one(dataset: GeoDataset, sample_index: int, rollout_index: int, ctx: RolloutContext,
                  store: TraceStore) -> TraceRecord:
    """Roll out one (sample, rollout), write its trace atomically, return its small record."""
    trace = await rollout(dataset, sample_index, rollout_index, ctx)
    name = await asyncio.to_thread(store.write_trace, trace, ctx.settings.generation.rollouts_per_sample)
    return TraceRecord.of(trace, name)


def write_outputs(store: TraceStore, records: Iterable[TraceRecord], extra: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Write the ordered manifest and the summary; return the summary."""
    ordered = sorted(records, key=lambda r: (r.sample_index, r.rollout_index))
    builder = SummaryBuilder()
    for record in ordered:
        builder.add(record)
    summary = {**builder.result(), **(extra or {})}
    store.write_json(MANIFEST, {
        "traces": [{"name": r.name, "sample_index": r.sample_index, "rollout_index": r.rollout_index,
                    "ok": r.ok, "error_kind": r.error_kind, "error": r.error} for r in ordered],
        **(extra or {}),
    })
    store.write_json(SUMMARY, summary)
    return summary


async def generate(
    dataset: DatasetSpec,
    storage: StorageSpec,
    settings: RolloutSettings,
    samples: SampleRange = SampleRange(),
    resume: bool = True,
    on_record: Callable[[TraceRecord], None] | None = None,
) -> dict[str, Any]:
    """Generate traces for a range of samples; returns the run summary."""
    ds = await asyncio.to_thread(open_dataset, dataset)
    store = storage.store()
    rollouts = settings.generation.rollouts_per_sample
    fingerprint = settings.fingerprint()
    keys = plan_keys(samples.indices(len(ds)), rollouts)
    existing = store.trace_keys() if resume else set()
    records: list[TraceRecord] = []
    requested = 0

    ctx = RolloutContext.create(settings)
    try:
        async def worker() -> None:
            nonlocal requested
            for index, r in keys:  # one shared iterator: never more keys in memory than workers
                name = trace_name(index, r, rollouts)
                record = None
                if (index, r) in existing:
                    record = await asyncio.to_thread(finished_record, store, name, fingerprint)
                if record is None:
                    requested += 1
                    record = await run_one(ds, index, r, ctx, store)
                records.append(record)
                if on_record is not None:
                    on_record(record)

        await asyncio.gather(*(worker() for _ in range(settings.generation.max_concurrency)))
    finally:
        await ctx.close()
    extra = {"dataset_path": ds.path, "dataset_fingerprint": ds.fingerprint, "settings_fingerprint": fingerprint,
             "generated": requested, "reused": len(records) - requested}
    return await asyncio.to_thread(write_outputs, store, records, extra)
