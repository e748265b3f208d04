"""``runner="workers"``: the generation flow's chunks as flow runs of the ``generate-chunk``
deployment, picked up by Prefect workers (``prefect worker start --pool geodistil``) on any
machine that sees the dataset and the trace store.

The parent flow run keeps at most ``parallel`` chunk runs in flight, each a subflow in the UI
with its per-sample task runs. A chunk run writes traces only, then hands its records to the
parent in ``<store>/.chunks/<first>-<last>/records.json``; the parent alone writes the manifest
and the summary. While it runs, a chunk run holds a lease there (``RunLock`` on that folder: a
lock file with a heartbeat), so the parent sees a chunk whose worker died: its process is gone
(same host) or its heartbeat stopped. Such a chunk run is marked Crashed and the chunk started
again, as is a chunk run that failed or crashed, up to ``CHUNK_RETRIES`` times; its finished
samples are cache hits (task results beside the traces) or finished traces, so only the
samples that were in flight are generated again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.states import Crashed

from geodistil.config import RolloutSettings
from geodistil.data import DatasetSpec
from geodistil.errors import ChunkFailed
from geodistil.generate import Budget, plan_keys, stop_reason_of
from geodistil.store import RunLock, StorageSpec, TraceStore, lock_holder, trace_name
from geodistil.trace import TraceRecord
from tasks.generation import notify

CHUNKS = ".chunks"
CHUNK_RECORDS = "records.json"
CHUNK_DEPLOYMENT = "geodistil-generate-chunk/generate-chunk"
CHUNK_RETRIES = 2
POLL_S = 1.0
STALE_AFTER_S = 120.0  # a chunk run without a lease (or with a stale one) for this long is lost
NO_WORKER_WARNING_S = 60.0


def chunk_folder(first: int, last: int) -> str:
    return f"{CHUNKS}/{first:06d}-{last:06d}"


def chunk_lease(store: TraceStore, first: int, last: int, owner: str) -> RunLock:
    """The lease a chunk run holds while it runs (its heartbeat tells the parent it is alive)."""
    return RunLock(store.sub(chunk_folder(first, last)), owner=owner, heartbeat_s=STALE_AFTER_S / 6,
                   stale_after_s=STALE_AFTER_S)


def hand_off_records(store: TraceStore, first: int, last: int, records: list[TraceRecord]) -> None:
    """A chunk run's records, for the parent (the chunk run writes no manifest or summary)."""
    store.sub(chunk_folder(first, last)).write_json(CHUNK_RECORDS, [r.model_dump(mode="json") for r in records])


def _handed_off(store: TraceStore, first: int, last: int) -> list[TraceRecord]:
    return [TraceRecord.model_validate(r) for r in store.sub(chunk_folder(first, last)).read_json(CHUNK_RECORDS)]


def _stand_ins(first: int, last: int, settings: RolloutSettings, why: str) -> list[TraceRecord]:
    """Records for a chunk that failed every attempt: unfinished, so a retry of the run redoes them."""
    n, error = settings.generation.rollouts_per_sample, ChunkFailed(why)
    return [TraceRecord(name=trace_name(i, r, n), sample_index=i, rollout_index=r, ok=False,
                        error_kind=error.error_kind, error=str(error))
            for i, r in plan_keys(range(first, last + 1), n)]


class _Chunk:
    def __init__(self, first: int, last: int) -> None:
        self.first, self.last, self.attempts = first, last, 0
        self.run_id: UUID | None = None
        self.submitted = self.running_since = 0.0
        self.warned = False


async def run_chunks_on_workers(deployment: str, parallel: int, dataset: DatasetSpec, storage: StorageSpec,
                                settings: RolloutSettings, ranges: list[tuple[int, int]], refresh: bool,
                                spent: Budget) -> tuple[list[TraceRecord], str | None]:
    """Every chunk in ``ranges`` as a flow run of ``deployment``; ``(records in sample order, why
    it stopped early or None)``. ``spent`` counts the records as they come back."""
    logger = get_run_logger()
    store = storage.store()
    pending = [_Chunk(first, last) for first, last in ranges]
    pending.reverse()
    in_flight: dict[UUID, _Chunk] = {}
    done: dict[int, list[TraceRecord]] = {}
    stopped: str | None = None

    async def submit(chunk: _Chunk) -> None:
        chunk.attempts += 1
        params: dict[str, Any] = {
            "dataset": dataset.model_dump(mode="json"), "storage": storage.model_dump(mode="json"),
            "settings": settings.model_dump(mode="json"), "first": chunk.first, "last": chunk.last,
            "refresh": refresh, "spent_usd": spent.cost_usd, "spent_tokens": spent.tokens,
            "spent_samples": spent.done, "hand_off": True}
        run = await run_deployment(deployment, parameters=params, timeout=0, as_subflow=True,
                                   flow_run_name=f"chunk-{chunk.first}-{chunk.last}")
        chunk.run_id, chunk.submitted, chunk.running_since = run.id, time.monotonic(), 0.0
        in_flight[run.id] = chunk

    async def retry_or_give_up(chunk: _Chunk, why: str) -> None:
        if chunk.attempts <= CHUNK_RETRIES:
            logger.warning("chunk %d-%d: %s; starting it again (attempt %d of %d)", chunk.first, chunk.last, why,
                           chunk.attempts + 1, CHUNK_RETRIES + 1)
            await submit(chunk)
        else:
            logger.error("chunk %d-%d: %s; giving up after %d attempts", chunk.first, chunk.last, why, chunk.attempts)
            finish(chunk, _stand_ins(chunk.first, chunk.last, settings, f"chunk run failed: {why}"))

    def finish(chunk: _Chunk, records: list[TraceRecord]) -> None:
        nonlocal stopped
        done[chunk.first] = records
        for record in records:
            spent.add(record, started=False)
            notify(record)
        logger.info("chunk %d-%d: %d traces", chunk.first, chunk.last, len(records))
        if stopped is None and len(records) < (chunk.last - chunk.first + 1) * settings.generation.rollouts_per_sample:
            stopped = (stop_reason_of([r for r in records if not r.ok]) or spent.reason
                       or "stopped: the teacher rejected the first samples")

    def lost(chunk: _Chunk, run_id: UUID) -> str | None:
        """Why a Running chunk run is lost, or None while its lease says it is alive."""
        holder = lock_holder(store.sub(chunk_folder(chunk.first, chunk.last)))
        if holder is not None and str(run_id) in holder.owner:
            return f"its worker is gone ({holder.describe()})" if holder.is_stale(STALE_AFTER_S) else None
        if time.monotonic() - chunk.running_since > STALE_AFTER_S:  # running, yet never took its lease
            return f"it took no lease within {STALE_AFTER_S:.0f} s of starting"
        return None

    async with get_client() as client:
        while pending or in_flight:
            while pending and len(in_flight) < parallel and stopped is None and not spent.reason:
                await submit(pending.pop())
            if not in_flight:
                break
            await asyncio.sleep(POLL_S)
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(in_flight))),
                                               limit=len(in_flight))
            for run in runs:
                chunk = in_flight[run.id]
                state = run.state
                if state is None:
                    continue
                if state.is_completed():
                    del in_flight[run.id]
                    try:
                        records = await asyncio.to_thread(_handed_off, store, chunk.first, chunk.last)
                    except (OSError, ValueError) as exc:
                        await retry_or_give_up(chunk, f"its records could not be read ({exc})")
                    else:
                        finish(chunk, records)
                elif state.is_final():
                    del in_flight[run.id]
                    await retry_or_give_up(chunk, f"its flow run {run.name} ended {state.name}: {state.message}")
                elif state.is_running():
                    chunk.running_since = chunk.running_since or time.monotonic()
                    why = await asyncio.to_thread(lost, chunk, run.id)
                    if why:
                        del in_flight[run.id]
                        await client.set_flow_run_state(run.id, Crashed(message=why), force=True)
                        await retry_or_give_up(chunk, why)
                elif not chunk.warned and time.monotonic() - chunk.submitted > NO_WORKER_WARNING_S:
                    chunk.warned = True
                    logger.warning("chunk %d-%d waits for a worker: start one with `prefect worker start --pool "
                                   "<the deployment's work pool>`", chunk.first, chunk.last)
    with contextlib.suppress(OSError):
        await asyncio.to_thread(store.fs.rm, store.path(CHUNKS), recursive=True)
    records = [r for first in sorted(done) for r in done[first]]
    if stopped is None and pending:
        stopped = spent.reason
    return records, stopped
