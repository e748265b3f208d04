"""Generating traces for a range of samples: bounded concurrency, ordered names, resumable.

This is the plain-library driver (no Prefect): ``generate`` runs a set of (sample, rollout)
keys with at most ``max_concurrency`` conversations in flight, writes each trace as soon as
it is done, and finishes with an ordered manifest and a summary (``geodistil.store``'s layout). The Prefect
flows in ``flows/`` wrap ``run_one`` per sample instead, for retries, caching and the UI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from geodistil.config import RolloutSettings
from geodistil.data import DatasetSpec, GeoDataset, open_dataset
from geodistil.errors import StoreError, TeacherRejected, TraceError, error_class
from geodistil.rollout import RolloutContext, rollout
from geodistil.stats import SummaryBuilder
from geodistil.store import ManifestRow, RunFacts, SampleRange, StorageSpec, TraceStore, trace_name
from geodistil.trace import TraceRecord

FAIL_FAST_AFTER = 3

log = logging.getLogger(__name__)


def is_retryable(record: TraceRecord) -> bool:
    """A failed sample worth another try within this run (Prefect's task retries): a transient error."""
    cls = error_class(record.error_kind)
    return not record.ok and cls is not None and cls.retryable


def is_unfinished(record: TraceRecord) -> bool:
    """A failed sample that a re-run of the same settings generates again (a broken row, a
    rejected request or a limit does not; a transient error or a bad key does)."""
    cls = error_class(record.error_kind)
    return not record.ok and cls is not None and cls.rerun


def stops_run(record: TraceRecord) -> bool:
    """A sample failed by something no later sample escapes (the teacher unreachable past
    ``max_outage_s``, no code sandbox on this machine, a store that cannot be written)."""
    cls = error_class(record.error_kind)
    return not record.ok and cls is not None and cls.stops_run


class Budget:
    """Says when to stop starting samples: the run's cost (or tokens) so far, with every sample in
    flight and one more at the mean so far, would pass ``max_cost_usd`` (``max_tokens_total``).
    Traces reused from an earlier run count, so a re-run with the same budget starts nothing and
    one with a larger budget goes on."""

    def __init__(self, max_cost_usd: float | None, max_tokens_total: int | None, cost_usd: float = 0.0,
                 tokens: int = 0, done: int = 0) -> None:
        """``cost_usd``, ``tokens`` and ``done`` carry what earlier parts of the run spent (the flow's chunks)."""
        self.max_cost_usd, self.max_tokens_total = max_cost_usd, max_tokens_total
        self.cost_usd, self.tokens, self.done, self.in_flight = cost_usd, tokens, done, 0

    def start(self) -> None:
        self.in_flight += 1

    def add(self, record: TraceRecord, started: bool) -> None:
        self.in_flight = max(0, self.in_flight - started)  # a driver that does not call start() has none
        self.done += 1
        self.cost_usd += record.cost_usd or 0.0
        self.tokens += record.prompt_tokens + record.completion_tokens

    @property
    def reason(self) -> str | None:
        if not self.done:
            return None
        ahead = self.in_flight + 1
        if self.max_cost_usd is not None and self.cost_usd * (1 + ahead / self.done) > self.max_cost_usd:
            return (f"stopped: the budget of ${self.max_cost_usd:g} would be passed (${self.cost_usd:.4f} spent on "
                    f"{self.done} samples); run the same command with a larger --max-cost to go on")
        if self.max_tokens_total is not None and self.tokens * (1 + ahead / self.done) > self.max_tokens_total:
            return (f"stopped: the budget of {self.max_tokens_total} tokens would be passed ({self.tokens} used on "
                    f"{self.done} samples); run the same command with a larger --max-tokens-total to go on")
        return None


class FailFast:
    """Says when to stop starting samples: the first ``after`` samples to finish were all
    rejected by the teacher the same way (a 4xx no retry fixes: a bad flag, a bad key, a
    wrong model name), so every later one would be too. Judged once, on those first samples:
    a run that got going is never stopped by that. At any time, a sample failed because the
    teacher was unreachable for longer than ``max_outage_s``, or any other failure whose class
    ``stops_run`` (no code sandbox here, a store that cannot be written), stops the run too.
    """

    def __init__(self, after: int = FAIL_FAST_AFTER, budget: Budget | None = None) -> None:
        self.after = after
        self.budget = budget or Budget(None, None)
        self.rejected: str | None = None
        self._first: list[TraceRecord] = []

    @property
    def reason(self) -> str | None:
        return self.rejected or self.budget.reason

    def add(self, record: TraceRecord, started: bool = True) -> None:
        """A finished sample; ``started`` False for a trace reused from an earlier run (it counts
        in the budget only)."""
        self.budget.add(record, started)
        if not started:
            return
        if self.rejected is None and stops_run(record):
            self.rejected = record.error
            log.error("%s", self.rejected)
        if len(self._first) >= self.after:
            return
        self._first.append(record)
        if len(self._first) == self.after and self.rejected is None:
            self.rejected = stop_reason_of(self._first)
            if self.rejected:
                log.error("%s", self.rejected)


def stop_reason_of(records: list[TraceRecord]) -> str | None:
    """The one-line reason to stop, if one of ``records`` failed in a way that ``stops_run`` or
    they were all rejected by the teacher with one kind."""
    fatal = next((r for r in records if stops_run(r)), None)
    if fatal is not None:
        return fatal.error
    kinds = {r.error_kind for r in records}
    cls = error_class(next(iter(kinds))) if len(kinds) == 1 else None
    if not records or any(r.ok for r in records) or cls is None or not issubclass(cls, TeacherRejected):
        return None
    return (f"stopped: the teacher rejected the first {len(records)} samples alike ({records[0].error_kind}), "
            f"so it would reject the rest: {records[0].error}")


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
    return None if is_unfinished(record) else record


async def run_one(dataset: GeoDataset, sample_index: int, rollout_index: int, ctx: RolloutContext,
                  store: TraceStore) -> TraceRecord:
    """Roll out one (sample, rollout), write its trace atomically, return its small record.

    Raises ``StoreError`` when the trace cannot be written (a full disk): no record can say so.
    """
    trace = await rollout(dataset, sample_index, rollout_index, ctx)
    try:
        name = await asyncio.to_thread(store.write_trace, trace, ctx.settings.generation.rollouts_per_sample)
    except OSError as exc:
        raise unwritable(store, f"the trace of sample {sample_index}", exc) from exc
    return TraceRecord.of(trace, name)


def write_outputs(store: TraceStore, records: Iterable[TraceRecord],
                  facts: RunFacts | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the ordered manifest and the summary, both with the run's facts; return the summary's JSON."""
    facts = RunFacts.model_validate(facts) if isinstance(facts, Mapping) else facts
    ordered = sorted(records, key=lambda r: (r.sample_index, r.rollout_index))
    builder = SummaryBuilder()
    for record in ordered:
        builder.add(record)
    summary = builder.summary(facts)
    store.write_manifest((ManifestRow.of(r.name, r) for r in ordered), facts)
    store.write_summary(summary)
    return summary.to_json()


async def write_outputs_or_stop(store: TraceStore, records: Iterable[TraceRecord],
                                facts: RunFacts | Mapping[str, Any]) -> dict[str, Any]:
    """``write_outputs`` off the event loop; ``StoreError`` if the store cannot take them (a full disk)."""
    try:
        return await asyncio.to_thread(write_outputs, store, records, facts)
    except OSError as exc:
        raise unwritable(store, "the manifest and summary", exc) from exc


def unwritable(store: TraceStore, what: str, exc: OSError) -> StoreError:
    """The one line for a store that refused a write (``No space left on device``, ``Permission denied``)."""
    return StoreError(f"cannot write {what} to {store.url}: {exc.strerror or type(exc).__name__}")


async def generate(
    dataset: DatasetSpec,
    storage: StorageSpec,
    settings: RolloutSettings,
    samples: SampleRange = SampleRange(),
    resume: bool = True,
    on_record: Callable[[TraceRecord], None] | None = None,
) -> dict[str, Any]:
    """Generate traces for a range of samples; returns the run summary.

    When the teacher rejects the first samples alike (``FailFast``), has been unreachable
    for longer than ``max_outage_s``, or the budget would be passed (``Budget``), no further
    sample is started and the summary's
    ``stopped`` says why; the same command resumes the run. A store that cannot be written
    (a full disk) stops the run too, with ``StoreError``.
    """
    ds = await asyncio.to_thread(open_dataset, dataset)
    store = storage.store()
    rollouts = settings.generation.rollouts_per_sample
    fingerprint = settings.fingerprint()
    keys = plan_keys(samples.indices(len(ds)), rollouts)
    existing = store.trace_keys() if resume else set()
    records: list[TraceRecord] = []
    requested = 0
    fail_fast = FailFast(budget=Budget(settings.teacher.max_cost_usd, settings.teacher.max_tokens_total))
    stopped: list[str] = []  # why workers stopped starting samples
    store_failures: list[StoreError] = []  # the store refused a trace: no summary can be written either

    ctx = RolloutContext.create(settings)
    try:
        async def worker() -> None:
            nonlocal requested
            for index, r in keys:  # one shared iterator: never more keys in memory than workers
                name = trace_name(index, r, rollouts)
                record = None
                if (index, r) in existing:
                    record = await asyncio.to_thread(finished_record, store, name, fingerprint)
                started = record is None
                if started:
                    if why := fail_fast.reason:
                        stopped.append(why)
                        return
                    requested += 1
                    fail_fast.budget.start()
                    try:
                        record = await run_one(ds, index, r, ctx, store)
                    except StoreError as exc:
                        store_failures.append(exc)
                        fail_fast.rejected = fail_fast.rejected or str(exc)  # every worker stops starting samples
                        return
                fail_fast.add(record, started)
                records.append(record)
                if on_record is not None:
                    on_record(record)

        await asyncio.gather(*(worker() for _ in range(settings.generation.max_concurrency)))
    finally:
        await ctx.close()
    if store_failures:
        raise store_failures[0]
    why = fail_fast.rejected or (stopped[0] if stopped else None)
    facts = RunFacts(dataset_path=ds.path, dataset_fingerprint=ds.fingerprint, settings_fingerprint=fingerprint,
                     generated=requested, reused=len(records) - requested, **({"stopped": why} if why else {}))
    return await write_outputs_or_stop(store, records, facts)
