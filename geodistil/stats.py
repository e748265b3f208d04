"""Run summaries: counts, parse rate, distances, rewards, threshold accuracies, tool use.

``SummaryBuilder`` folds traces in one at a time, so a run of 100000 samples never holds
its traces in memory; ``summarize`` is the one-call form.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from geodistil.scoring import THRESHOLDS_KM
from geodistil.trace import Trace, TraceRecord


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
    tool_names: Counter[str] = field(default_factory=Counter)
    turns: Counter[int] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, trace: Trace | TraceRecord) -> None:
        if isinstance(trace, Trace):
            trace = TraceRecord.of(trace, "")
        self.total += 1
        self.stop_reasons[trace.stop_reason] += 1
        self.tool_calls += sum(trace.tools.values())
        self.tool_errors += trace.tool_errors
        self.tool_names.update(trace.tools)
        self.prompt_tokens += trace.prompt_tokens
        self.completion_tokens += trace.completion_tokens
        if not trace.ok:
            self.failed += 1
            self.error_kinds[trace.error_kind or "unknown"] += 1
            return
        self.success += 1
        self.parsed += trace.parse_success
        self.turns[trace.num_turns] += 1
        self.distances.append(trace.distance_km)
        self.rewards.append(trace.reward_score)

    def result(self) -> dict[str, Any]:
        n = self.success
        return {
            "total": self.total,
            "success": self.success,
            "failed": self.failed,
            "error_kinds": dict(self.error_kinds),
            "parse_success": self.parsed,
            "parse_success_rate": self.parsed / n if n else 0.0,
            "mean_distance_km": statistics.fmean(self.distances) if n else None,
            "median_distance_km": statistics.median(self.distances) if n else None,
            "mean_reward": statistics.fmean(self.rewards) if n else None,
            "accuracy": {f"{t:g}km": (sum(d <= t for d in self.distances) / n if n else 0.0)
                         for t in THRESHOLDS_KM},
            "tool_calls": self.tool_calls,
            "mean_tool_calls": self.tool_calls / self.total if self.total else 0.0,
            "tool_error_rate": self.tool_errors / self.tool_calls if self.tool_calls else 0.0,
            "tool_calls_by_name": dict(self.tool_names),
            "turns": {str(k): v for k, v in sorted(self.turns.items())},
            "stop_reasons": dict(self.stop_reasons),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def summarize(traces: Iterable[Trace | TraceRecord]) -> dict[str, Any]:
    builder = SummaryBuilder()
    for trace in traces:
        builder.add(trace)
    return builder.result()
