"""The generation flow: per-sample tasks over a sample range, in chunks, with ordered output.

Samples are processed in chunks (one subflow each, at most ``chunk_size`` task runs), so a
run of 100000 samples keeps Prefect's per-run bookkeeping and this process's memory bounded.
Inside a chunk at most ``generation.max_concurrency`` per-sample tasks are in flight:

- ``runner="local"``: the tasks run concurrently on the flow's own event loop;
- ``runner="workers"``: each chunk is a flow run of the ``generate-chunk`` deployment, picked up
  by Prefect workers on any machine (``flows.chunks``); they write traces, this run the manifest.

Either way records are collected by sample order, and caching and resume work across machines
as long as the trace store (and so the task results beside it) is shared, e.g. on S3.
A run holds its store's lock (``geodistil.store.RunLock``) from the first chunk to the manifest,
so a second run on the same store stops at once instead of sending the same requests again.

A sample whose task still fails after its retries is written as an error trace and counted;
the flow then writes the manifest and summary and ends **Failed**, saying how many, so that a
retry of the flow run (UI or API) is meaningful: it takes finished samples from the cache and
generates only the rest. A sample the teacher rejected (a 4xx other than a bad key) or whose
conversation hit the teacher's context or image limit is finished: neither retried nor counted
as unfinished. When the first samples to finish were all rejected alike (``FailFast``), no
further sample starts and the flow ends Failed with that one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.filesystems import WritableFileSystem
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.utilities.annotations import quote

from flows.chunks import CHUNK_DEPLOYMENT, chunk_lease, hand_off_records, run_chunks_on_workers
from flows.server import SERVER_SETTINGS, discard_early, temporary_server
from geodistil.config import GenerationConfig, ImageConfig, RolloutSettings, TeacherConfig, ToolsConfig
from geodistil.data import DatasetSpec, open_dataset
from geodistil.errors import StoreError, TaskFailed
from geodistil.generate import Budget, FailFast, is_unfinished, plan_keys, stop_reason_of, write_outputs_or_stop
from geodistil.memory import release_free_memory
from geodistil.redact import redact_url
from geodistil.store import SUMMARY, RunLock, SampleRange, StorageSpec, TraceStore
from geodistil.trace import TraceRecord
from tasks.contexts import shared_context
from tasks.generation import SampleJob, close_shared_contexts, generate_sample, notify
from tasks.results import result_storage_for


Runner = Literal["local", "workers"]


def _record_of_failure(store: TraceStore, job: SampleJob, state: State) -> TraceRecord:
    """A failed task's record: the error trace it wrote, else a stand-in; worth retrying either way.

    The stand-in's ``error_kind`` is the task's own error where this process still holds it (a
    ``StoreError``: the trace could not be written, which stops the run), else ``TaskFailed``'s."""
    try:
        record = TraceRecord.of(store.read_trace(job.name), job.name)
        if is_unfinished(record):
            return record
    except Exception:
        pass  # no trace, a torn one, or one left by an earlier run: the stand-in tells the truth
    raised = getattr(state.data, "result", state.data)  # a result record holds the exception until persisted
    error = raised if isinstance(raised, StoreError) else TaskFailed(str(state.message))
    return TraceRecord(name=job.name, sample_index=job.sample_index, rollout_index=job.rollout_index,
                       ok=False, error_kind=error.error_kind, error=str(error))


async def _run_on_flow_loop(sample_task: Task[..., Any], jobs: list[SampleJob], limit: int,
                            finish: Callable[[SampleJob, State], Awaitable[TraceRecord]],
                            fail_fast: FailFast, first_request_out: asyncio.Event | None = None
                            ) -> list[TraceRecord]:
    """Await the tasks on this event loop, at most ``limit`` at a time; records in job order,
    none for the jobs not started because ``fail_fast`` said stop.

    The first job starts alone until ``first_request_out`` is set (its request is on its way) or
    it is done: its request goes first and alone anyway (``TeacherClient.complete``), and started
    together with hundreds of others it would wait behind every one's start (a second or more).
    """
    semaphore = asyncio.Semaphore(limit)

    async def one(job: SampleJob) -> TraceRecord | None:
        async with semaphore:
            if fail_fast.reason:
                return None
            fail_fast.budget.start()
            # quoted: Prefect would otherwise walk the whole job (settings and all) twice per task
            state = await sample_task(quote(job), return_state=True)
        return await finish(job, state)

    if not jobs:
        return []
    first = asyncio.ensure_future(one(jobs[0]))
    if first_request_out is not None:
        out = asyncio.ensure_future(first_request_out.wait())
        await asyncio.wait([first, out], return_when=asyncio.FIRST_COMPLETED)
        out.cancel()
    records = [first, *(one(job) for job in jobs[1:])]
    return [r for r in await asyncio.gather(*records) if r is not None]


# Not persisted on purpose: when a failed flow run is retried, Prefect reuses a finished subflow's
# persisted result instead of running it again, which would replay this chunk's failed records.
# Unpersisted, the chunk runs again and its finished samples are cache hits.
@flow(name="geodistil-generate-chunk", flow_run_name="chunk-{first}-{last}", log_prints=False, persist_result=False)
async def generate_chunk(dataset: DatasetSpec, storage: StorageSpec, settings: RolloutSettings,
                         first: int, last: int, refresh: bool = False,
                         spent_usd: float = 0.0, spent_tokens: int = 0, spent_samples: int = 0,
                         hand_off: bool = False, result_storage: WritableFileSystem | None = None
                         ) -> list[TraceRecord]:
    """Samples ``first``..``last`` (inclusive), all rollouts, as per-sample task runs; ``spent_*``:
    what the run's earlier chunks spent of its budget; ``hand_off``: run by a worker for a parent
    with ``runner="workers"`` (holds the chunk's lease, hands its records over, see ``flows.chunks``);
    ``result_storage``: the run's saved block (a chunk on a worker resolves its own)."""
    logger = get_run_logger()
    if result_storage is None:
        result_storage = await result_storage_for(storage)
    sample_task = generate_sample.with_options(result_storage=result_storage, refresh_cache=refresh)
    store = storage.store()
    jobs = [SampleJob(dataset=dataset, storage=storage, settings=settings, sample_index=i, rollout_index=r,
                      refresh=refresh)
            for i, r in plan_keys(range(first, last + 1), settings.generation.rollouts_per_sample)]
    done = 0
    fail_fast = FailFast(budget=Budget(settings.teacher.max_cost_usd, settings.teacher.max_tokens_total,
                                       spent_usd, spent_tokens, spent_samples))

    async def finish(job: SampleJob, state: State) -> TraceRecord:
        nonlocal done
        record = await state.result() if state.is_completed() else _record_of_failure(store, job, state)
        fail_fast.add(record)
        done += 1
        if done % max(1, len(jobs) // 10) == 0 or done == len(jobs):
            logger.info("chunk %d-%d: %d/%d traces written", first, last, done, len(jobs))
        notify(record)
        return record

    lease = chunk_lease(store, first, last, owner=f"chunk flow run {flow_run.name!r} ({flow_run.id})") \
        if hand_off else None
    if lease is not None:
        await asyncio.to_thread(lease.acquire)  # StoreLockedError: another run of this chunk is alive
    try:
        # the teacher's client and profile (a GET of its model list) before hundreds of samples
        # start: otherwise the first request waits for it behind every sample's start
        teacher = (await shared_context(settings)).teacher
        await teacher.server_profile()
        records = await _run_on_flow_loop(sample_task, jobs, settings.generation.max_concurrency, finish, fail_fast,
                                          teacher.first_request_out)
        if lease is not None:
            await asyncio.to_thread(hand_off_records, store, first, last, records)
        return records
    finally:
        if lease is not None:
            await asyncio.to_thread(lease.release)
        await close_shared_contexts()
        release_free_memory()  # keeps a long run's memory flat from chunk to chunk


@task(name="write-run-outputs", cache_policy=NO_CACHE)
async def write_run_outputs(storage: StorageSpec, records: list[TraceRecord], extra: dict[str, Any]) -> dict[str, Any]:
    """The ordered manifest and the summary, from the records (no trace is read again)."""
    return await write_outputs_or_stop(storage.store(), records, extra)


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
    runner: Runner = "local",
    chunk_deployment: str = CHUNK_DEPLOYMENT,
    parallel_chunks: int = 4,
) -> dict[str, Any] | State:
    """Distil traces for a range of samples into a trace store; returns the run summary.

    ``runner="workers"`` starts each chunk as a flow run of ``chunk_deployment``, at most
    ``parallel_chunks`` at a time, for Prefect workers to pick up (``flows.chunks``); every worker
    must see the dataset and the trace store at the same paths (shared disk, or ``s3://``). Ends Failed if any sample still failed after its retries,
    or if the teacher rejected the first samples alike (then no later sample was started), and at
    once (``StoreLockedError``) if another run holds the store's lock.
    """
    logger = get_run_logger()
    settings = RolloutSettings(teacher=teacher, generation=generation, tools=tools, image=image)
    ds = await asyncio.to_thread(open_dataset, dataset)
    indices = samples.indices(len(ds))  # ConfigError, and the run fails, when the range holds no sample
    if shortfall := samples.shortfall(len(ds)):
        logger.warning(shortfall)
    logger.info("generating %d samples x %d rollouts from %s into %s (teacher %s at %s)",
                len(indices), generation.rollouts_per_sample, ds.path, storage.url,
                teacher.model, redact_url(teacher.resolved_base_url()))
    lock = RunLock(storage.store(), owner=f"flow run {flow_run.name!r} ({flow_run.id})")
    await asyncio.to_thread(lock.acquire)  # two runs on one store would send the same requests twice
    if lock.replaced is not None:
        logger.warning("%s: took over the run lock of %s, which is gone", storage.url, lock.replaced.describe())
    await asyncio.to_thread(lock.store.remove_temporaries)  # a killed run's half-written files; no one else writes
    try:
        records: list[TraceRecord] = []
        stopped = None
        spent = Budget(teacher.max_cost_usd, teacher.max_tokens_total)
        result_storage = await result_storage_for(storage)  # saved once per run, not once per chunk
        ranges = [(first, min(first + chunk_size, indices.stop) - 1)
                  for first in range(indices.start, indices.stop, chunk_size)]
        if runner == "workers":
            records, stopped = await run_chunks_on_workers(chunk_deployment, parallel_chunks, dataset, storage,
                                                           settings, ranges, refresh, spent)
            ranges = []
        for first, last in ranges:
            chunk = await generate_chunk(dataset, storage, settings, first, last, refresh,
                                         spent.cost_usd, spent.tokens, spent.done, result_storage=result_storage)
            records.extend(chunk)
            for record in chunk:
                spent.add(record, started=False)
            if len(chunk) < (last - first + 1) * generation.rollouts_per_sample:  # the chunk stopped early
                stopped = (stop_reason_of([r for r in chunk if not r.ok]) or spent.reason
                           or "stopped: the teacher rejected the first samples")
                break
        extra = {"dataset_path": ds.path, "dataset_fingerprint": ds.fingerprint,
                 "settings_fingerprint": settings.fingerprint(), **({"stopped": stopped} if stopped else {})}
        summary = await write_run_outputs(storage, records, extra)
    finally:
        await asyncio.to_thread(lock.release)
    if stopped:
        logger.error(stopped)
        return Failed(message=stopped)
    logger.info("done: %d traces, %d ok, %d failed, parse rate %.2f, mean distance %s km",
                summary["total"], summary["success"], summary["failed"], summary["parse_success_rate"],
                summary["mean_distance_km"])
    unfinished = [r for r in records if is_unfinished(r)]
    if unfinished:
        kinds = Counter(r.error_kind for r in unfinished)
        message = (f"{len(unfinished)} of {len(records)} samples failed after retries "
                   f"({', '.join(f'{k}: {n}' for k, n in kinds.most_common())}); every trace (these as error traces), "
                   "the manifest and the summary are written. Retry this flow run to generate only the failed samples. "
                   f"First: {unfinished[0].name}: {unfinished[0].error}")
        logger.error(message)
        for record in unfinished[1:10]:
            logger.error("%s: %s: %s", record.name, record.error_kind, record.error)
        return Failed(message=message)
    return summary


def use_server_settings() -> None:
    """Give the embedded server Prefect starts in this process ``SERVER_SETTINGS``, except those
    the environment sets already (it inherits this process's environment)."""
    for name, value in SERVER_SETTINGS.items():
        os.environ.setdefault(name, value)


class _DropCompletedTaskRunLines(logging.Filter):
    """Drops Prefect's "Finished in state Completed()" line, one per sample: a log record in the
    terminal, a batch entry to the API and a row on the server, where the task run's state says
    the same. A task run that ends in any other state is logged at ERROR and kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and str(record.msg).startswith("Finished in state"))


def quiet_completed_task_runs() -> None:
    logger = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _DropCompletedTaskRunLines) for f in logger.filters):
        logger.addFilter(_DropCompletedTaskRunLines())


def collect_less_often() -> None:
    """Fewer and cheaper cyclic garbage collections for a process that runs one generation (the
    CLI's ``run``; not ``run_generation`` itself, whose callers may live on): the objects of the
    imports (Prefect, pydantic's schemas, openai: about 280 000) are frozen out of every full
    collection, and a young collection waits for 20 000 new objects instead of 700. Every
    sample's task run makes thousands of short-lived objects (states, events, the request), so
    with the defaults the loop stopped for about 1000 young, 90 middle and 8 full collections
    (240 ms each) per 512 multi-turn samples, 3.5 s in all; with this, 1.3 s."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])


def run_generation(**params: Any) -> tuple[dict[str, Any], str | None]:
    """Run ``generate_flow`` in this process (the CLI's entry): ``(summary, None)`` when every
    sample finished, else ``(summary, why)`` with the summary the flow wrote before failing.

    Without ``PREFECT_API_URL`` it runs on a temporary server of its own (``flows.server``) that
    gets ``SERVER_SETTINGS`` unless the environment sets them already.
    """
    from prefect.exceptions import FailedRun
    from prefect.settings import PREFECT_API_URL

    use_server_settings()
    quiet_completed_task_runs()
    # Prefect imports FastAPI (about 0.4 s here) to serialise a flow run's parameters the moment
    # the run is created; imported now, it overlaps the temporary server's start instead of following it
    import fastapi.encoders  # noqa: F401

    with contextlib.ExitStack() as stack:
        if not PREFECT_API_URL.value():
            stack.enter_context(temporary_server())  # dies with this process, even on kill -9
        else:
            discard_early()  # a Prefect profile names the API: the server the CLI started early is not needed
        try:
            return asyncio.run(generate_flow(**params)), None
        except FailedRun as exc:  # samples failed after retries; every trace and the summary are written
            return params["storage"].store().read_json(SUMMARY), str(exc)
