"""Run summaries: counts, parse rate, distances, rewards, accuracies, tool use, tokens, latency.

``SummaryBuilder`` folds traces in one at a time, so a run of 100000 samples holds a few
numbers per trace and never the traces themselves; ``summarize`` is the one-call form and
``aggregate_store`` the whole-store form (with unreadable files reported by name, and one
summary per difficulty bucket when the store has been split).

A builder accepts full ``Trace`` objects or the small ``TraceRecord`` the generation flow
keeps. A record has no coordinates and no per-tool errors, so country accuracy and per-tool
error rates are ``None`` in a summary built from records alone.

The summary is plain JSON and carries its own distributions (distance CDF, reward histogram),
so the HTML report can be drawn again from ``summary.json`` alone.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geodistil.errors import TraceError
from geodistil.geo import country_of
from geodistil.scan import scan
from geodistil.scoring import NO_PARSE_DISTANCE_KM, THRESHOLDS_KM
from geodistil.store import DIFFICULTIES, REPORT, UNRATED, RunFacts, Summary, TraceStore
from geodistil.trace import Trace, TraceRecord

GEOSCORE_MAX = 5000  # a GeoGuessr round's best score: GeoScore = 5000 x reward
PERCENTILES = (50, 90, 99)
CDF_KM: tuple[float, ...] = tuple(float(x) for x in np.geomspace(1.0, NO_PARSE_DISTANCE_KM, 57))
REWARD_BINS = 20
MAX_LISTED_PROBLEMS = 1000  # names of unreadable traces kept in the summary; the count is always exact


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), **{f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES},
            "max": float(arr.max())}


@dataclass
class SummaryBuilder:
    total: int = 0
    success: int = 0
    failed: int = 0
    parsed: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    distances: list[float] = field(default_factory=list)  # successful traces only
    rewards: list[float] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)
    stop_reasons: Counter[str] = field(default_factory=Counter)
    tool_names: Counter[str] = field(default_factory=Counter)  # calls by tool
    turns: Counter[int] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced: int = 0  # traces with a cost
    # per-trace distributions (all traces)
    prompt_tokens_each: list[int] = field(default_factory=list)
    completion_tokens_each: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    traces_using: Counter[str] = field(default_factory=Counter)  # traces that call each tool
    traces_using_any: int = 0
    # known only from full traces
    full_traces: int = 0
    tool_errors_by_name: Counter[str] = field(default_factory=Counter)
    country_evaluated: int = 0
    country_correct: int = 0
    teachers: Counter[str] = field(default_factory=Counter)
    datasets: Counter[str] = field(default_factory=Counter)
    # files that could not be read, by message naming the file
    unreadable: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, trace: Trace | TraceRecord) -> None:
        latency = trace.latency_s  # before a record rounds it
        if isinstance(trace, Trace):
            self._add_trace_only(trace)
            trace = TraceRecord.of(trace, "")
        self.total += 1
        self.stop_reasons[trace.stop_reason] += 1
        self.tool_calls += sum(trace.tools.values())
        self.tool_errors += trace.tool_errors
        self.tool_names.update(trace.tools)
        self.traces_using.update(trace.tools.keys())
        self.traces_using_any += bool(trace.tools)
        self.prompt_tokens += trace.prompt_tokens
        self.completion_tokens += trace.completion_tokens
        if trace.cost_usd is not None:
            self.cost_usd += trace.cost_usd
            self.priced += 1
        self.prompt_tokens_each.append(trace.prompt_tokens)
        self.completion_tokens_each.append(trace.completion_tokens)
        self.latencies.append(latency)
        if not trace.ok:
            self.failed += 1
            self.error_kinds[trace.error_kind or "unknown"] += 1
            return
        self.success += 1
        self.parsed += trace.parse_success
        self.turns[trace.num_turns] += 1
        self.distances.append(trace.distance_km)
        self.rewards.append(trace.reward_score)

    def _add_trace_only(self, trace: Trace) -> None:
        self.full_traces += 1
        self.tool_errors_by_name.update(c.tool_name for c in trace.tool_calls_log if not c.success)
        if trace.teacher is not None:
            self.teachers[trace.teacher.model] += 1
        self.datasets[trace.dataset_path] += 1
        if not trace.ok or trace.ground_truth is None:
            return
        truth = country_of(trace.ground_truth.lat, trace.ground_truth.lon)
        if truth is None:  # open sea or far from any town: no country to compare with
            return
        self.country_evaluated += 1
        if trace.prediction is not None:
            self.country_correct += country_of(trace.prediction.lat, trace.prediction.lon) == truth

    def add_unreadable(self, error: TraceError | str) -> None:
        """Count a file that is not a readable trace; its message names it."""
        self.unreadable += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(str(error))

    def _tool_use(self) -> dict[str, dict[str, Any]]:
        n, exact = self.total, self.full_traces == self.total
        return {
            name: {
                "traces": self.traces_using[name],
                "share_of_traces": self.traces_using[name] / n if n else 0.0,
                "calls": calls,
                "calls_per_trace": calls / n if n else 0.0,
                "errors": self.tool_errors_by_name[name] if exact else None,
                "error_rate": (self.tool_errors_by_name[name] / calls if calls else 0.0) if exact else None,
            }
            for name, calls in sorted(self.tool_names.items(), key=lambda kv: (-kv[1], kv[0]))
        }

    def _distance_cdf(self) -> dict[str, list[float]]:
        arr = np.sort(np.asarray(self.distances, dtype=float))
        shares = np.searchsorted(arr, CDF_KM, side="right") / len(arr) if len(arr) else np.zeros(len(CDF_KM))
        return {"km": list(CDF_KM), "share": [round(float(s), 6) for s in shares]}

    def _reward_histogram(self) -> dict[str, list[float]]:
        counts, edges = np.histogram(np.asarray(self.rewards, dtype=float), bins=REWARD_BINS, range=(0.0, 1.0))
        return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}

    def result(self) -> dict[str, Any]:
        """The summary as the JSON ``summary.json`` holds."""
        return self.summary().to_json()

    def summary(self, facts: RunFacts | None = None) -> Summary:
        """The summary, with a run's ``facts`` when given."""
        n = self.success
        mean_reward = statistics.fmean(self.rewards) if n else None
        turn_values = [t for t, c in self.turns.items() for _ in range(c)]
        country_known = self.full_traces == self.total and self.country_evaluated > 0
        return Summary(**{
            "total": self.total,
            "success": self.success,
            "failed": self.failed,
            "unreadable": self.unreadable,
            "unreadable_traces": list(self.problems),
            "error_kinds": dict(self.error_kinds),
            "parse_success": self.parsed,
            "parse_success_rate": self.parsed / n if n else 0.0,
            "mean_distance_km": statistics.fmean(self.distances) if n else None,
            "median_distance_km": statistics.median(self.distances) if n else None,
            "mean_reward": mean_reward,
            "mean_geoscore": GEOSCORE_MAX * mean_reward if mean_reward is not None else None,
            "accuracy": {f"{t:g}km": (sum(d <= t for d in self.distances) / n if n else 0.0)
                         for t in THRESHOLDS_KM},
            "country_accuracy": self.country_correct / self.country_evaluated if country_known else None,
            "country_evaluated": self.country_evaluated if self.full_traces == self.total else None,
            "tool_calls": self.tool_calls,
            "mean_tool_calls": self.tool_calls / self.total if self.total else 0.0,
            "tool_error_rate": self.tool_errors / self.tool_calls if self.tool_calls else 0.0,
            "tool_calls_by_name": dict(self.tool_names),
            "traces_using_tools": self.traces_using_any / self.total if self.total else 0.0,
            "tool_use": self._tool_use(),
            "turns": {str(k): v for k, v in sorted(self.turns.items())},
            "mean_turns": statistics.fmean(turn_values) if turn_values else None,
            "stop_reasons": dict(self.stop_reasons),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd if self.priced else None,  # None: no trace has a price
            "tokens": {"prompt": _percentiles([float(t) for t in self.prompt_tokens_each]),
                       "completion": _percentiles([float(t) for t in self.completion_tokens_each])},
            "latency_s": _percentiles(self.latencies),
            "distance_cdf": self._distance_cdf(),
            "reward_histogram": self._reward_histogram(),
            "teachers": dict(self.teachers),
            "datasets": dict(self.datasets),
            **(facts.to_json() if facts is not None else {}),
        })


def summarize(traces: Iterable[Trace | TraceRecord]) -> dict[str, Any]:
    builder = SummaryBuilder()
    for trace in traces:
        builder.add(trace)
    return builder.result()


@dataclass
class Aggregation:
    """A whole store's summary, with one builder per difficulty bucket when there is a split."""

    overall: SummaryBuilder = field(default_factory=SummaryBuilder)
    buckets: dict[str, SummaryBuilder] = field(default_factory=dict)

    def add(self, trace: Trace, bucket: str | None = None) -> None:
        self.overall.add(trace)
        if bucket is not None:
            self.buckets.setdefault(bucket, SummaryBuilder()).add(trace)

    def summary(self, order: Iterable[str] = (), store: str | None = None) -> Summary:
        summary = self.overall.summary()
        if store is not None:
            summary = Summary(store=store, **summary.to_json())  # first, as summary.json has it
        if self.buckets:
            names = [b for b in order if b in self.buckets] + sorted(set(self.buckets) - set(order))
            summary.by_difficulty = {b: self.buckets[b].summary() for b in names}
        return summary


def aggregate_store(store: TraceStore, difficulty: Mapping[int, str] | None = None, workers: int = 8
                    ) -> dict[str, Any]:
    """Summarise every trace of a store in order; unreadable or missing files are listed by name.

    A store written by the difficulty split (``split.json`` beside ``easy/``, ``medium/``,
    ``hard/``) is summarised over its buckets, with one summary per bucket. Otherwise
    ``difficulty`` (sample index -> bucket, e.g. from ``curate.read_difficulty``) buckets
    the store's own traces. Returns the summary's JSON (see ``store.Summary``).
    """
    return _aggregate(store, difficulty, workers).to_json()


def _aggregate(store: TraceStore, difficulty: Mapping[int, str] | None, workers: int) -> Summary:
    agg = Aggregation()
    buckets = store.split_buckets() if difficulty is None else None
    parts = [(store.sub(b), b) for b in buckets] if buckets else [(store, None)]
    for part, bucket in parts:
        for item in scan(part, workers=workers):
            if item.trace is None:
                problem = str(item.error or f"{item.name}: unreadable")
                agg.overall.add_unreadable(f"{bucket}/{problem}" if bucket else problem)
                continue
            if bucket is None and difficulty is not None:
                agg.add(item.trace, difficulty.get(item.trace.sample_index, UNRATED))
            else:
                agg.add(item.trace, bucket)
    return agg.summary(order=(*DIFFICULTIES, UNRATED), store=store.url)


_RUN_KEYS = set(RunFacts.model_fields) - {"stopped"}  # the run's facts, but not why it once stopped


def run_aggregate(store: TraceStore, difficulty: Mapping[int, str] | None = None, report: bool = True,
                  workers: int = 8) -> dict[str, Any]:
    """Summarise a store and write ``summary.json`` (and ``report.html``) into it; returns its JSON.

    The generation run's own facts (dataset fingerprint, settings fingerprint, how many traces
    it generated or reused) are kept from an earlier ``summary.json`` of the store.
    """
    summary = _aggregate(store, difficulty, workers)
    earlier = store.read_summary()
    if earlier is not None:
        kept = earlier.model_dump(include=_RUN_KEYS, exclude_unset=True)
        summary = Summary(**{**summary.to_json(), **kept})
    store.write_summary(summary)
    if report:
        from geodistil.report import render_report

        store.write_bytes(REPORT, render_report(summary).encode())
    return summary.to_json()
