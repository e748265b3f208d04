"""The generation flow: per-sample tasks over a sample range, in chunks, with ordered output.

Samples are processed in chunks (one subflow each, at most ``chunk_size`` task runs), so a
run of 100000 samples keeps Prefect's per-run bookkeeping and this process's memory bounded.
Inside a chunk the per-sample tasks run concurrently on the flow's event loop, at most
``generation.max_concurrency`` at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from geodistil.config import GenerationConfig, ImageConfig, RolloutSettings, TeacherConfig, ToolsConfig
from geodistil.data import DatasetSpec, open_dataset
from geodistil.generate import SampleRange, StorageSpec, plan_keys, write_outputs
from geodistil.store import TraceStore
from geodistil.trace import TraceRecord
from tasks.generation import SampleJob, close_shared_contexts, generate_sample, notify
from tasks.results import result_storage_for


def _record_of_failure(store: TraceStore, job: SampleJob, state: State) -> TraceRecord:
    """A failed task's record, read from the error trace it wrote (or a stand-in if none)."""
    try:
        return TraceRecord.of(store.read_trace(job.name), job.name)
    except Exception:
        return TraceRecord(name=job.name, sample_index=job.sample_index, rollout_index=job.rollout_index,
                           ok=False, error_kind="task_failed", error=str(state.message))


@flow(name="geodistil-generate-chunk", flow_run_name="chunk-{first}-{last}", log_prints=False)
async def generate_chunk(dataset: DatasetSpec, storage: StorageSpec, settings: RolloutSettings,
                         first: int, last: int, refresh: bool = False) -> list[TraceRecord]:
    """Samples ``first``..``last`` (inclusive), all rollouts, as per-sample task runs."""
    logger = get_run_logger()
    result_storage = await result_storage_for(storage)
    sample_task = generate_sample.with_options(result_storage=result_storage, refresh_cache=refresh)
    store = storage.store()
    semaphore = asyncio.Semaphore(settings.generation.max_concurrency)
    jobs = [SampleJob(dataset=dataset, storage=storage, settings=settings, sample_index=i, rollout_index=r,
                      refresh=refresh)
            for i, r in plan_keys(range(first, last + 1), settings.generation.rollouts_per_sample)]
    done = 0

    async def one(job: SampleJob) -> TraceRecord:
        nonlocal done
        async with semaphore:
            state = await sample_task(job, return_state=True)
        record = await state.result() if state.is_completed() else _record_of_failure(store, job, state)
        done += 1
        if done % max(1, len(jobs) // 10) == 0 or done == len(jobs):
            logger.info("chunk %d-%d: %d/%d traces written", first, last, done, len(jobs))
        notify(record)
        return record

    try:
        return list(await asyncio.gather(*(one(job) for job in jobs)))
    finally:
        await close_shared_contexts()


@task(name="write-run-outputs", cache_policy=NO_CACHE)
async def write_run_outputs(storage: StorageSpec, records: list[TraceRecord], extra: dict[str, Any]) -> dict[str, Any]:
    """The ordered manifest and the summary, from the records (no trace is read again)."""
    return await asyncio.to_thread(write_outputs, storage.store(), records, extra)


@flow(name="geodistil-generate", log_prints=False)
async def generate_flow(
    dataset: DatasetSpec,
    storage: StorageSpec = StorageSpec(),
    samples: SampleRange = SampleRange(),
    teacher: TeacherConfig = TeacherConfig(),
    generation: GenerationConfig = GenerationConfig(),
    tools: ToolsConfig = ToolsConfig(),
    image: ImageConfig = ImageConfig(),
    chunk_size: int = 1000,
    refresh: bool = False,
) -> dict[str, Any]:
    """Distil traces for a range of samples into a trace store; returns the run summary."""
    logger = get_run_logger()
    settings = RolloutSettings(teacher=teacher, generation=generation, tools=tools, image=image)
    ds = await asyncio.to_thread(open_dataset, dataset)
    indices = samples.indices(len(ds))
    logger.info("generating %d samples x %d rollouts from %s into %s (teacher %s at %s)",
                len(indices), generation.rollouts_per_sample, ds.path, storage.url,
                teacher.model, teacher.resolved_base_url())
    records: list[TraceRecord] = []
    for first in range(indices.start, indices.stop, chunk_size):
        last = min(first + chunk_size, indices.stop) - 1
        records.extend(await generate_chunk(dataset, storage, settings, first, last, refresh))
    extra = {"dataset_path": ds.path, "dataset_fingerprint": ds.fingerprint,
             "settings_fingerprint": settings.fingerprint()}
    summary = await write_run_outputs(storage, records, extra)
    logger.info("done: %d traces, %d ok, %d failed, parse rate %.2f, mean distance %s km",
                summary["total"], summary["success"], summary["failed"], summary["parse_success_rate"],
                summary["mean_distance_km"])
    return summary
