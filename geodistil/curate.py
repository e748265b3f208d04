"""Curating a trace store: quality filters with kept rejects, and the difficulty split.

A filter rule is a small class that says ``keep(trace) -> bool | (bool, reason)`` (the
datatrove shape). ``run_filter`` walks a store in order, sends each trace through the rules
in turn, copies the kept ones byte for byte under the same names (so they stay ordered and
replayable), and writes ``filter.json`` (how many each rule removed) and ``rejected.jsonl``
(every removed trace with the rule and the reason), so a filter's effect can be audited.

``run_split`` rates each sample by the pass rate over its rollouts (pass = reward at or above
a threshold), or with a single rollout by reward bands, and copies its traces into ``easy/``,
``medium/`` and ``hard/`` sub-stores, with counts in ``split.json`` and the per-sample rating
in ``difficulty.jsonl``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geodistil.dialects import ALIASES
from geodistil.errors import ConfigError
from geodistil.scan import ScannedTrace, scan
from geodistil.scoring import AnswerFormat
from geodistil.store import TraceStore, parse_trace_name
from geodistil.trace import Trace

FILTER_MANIFEST = "filter.json"
REJECTED = "rejected.jsonl"
SPLIT_MANIFEST = "split.json"
DIFFICULTY_FILE = "difficulty.jsonl"
TRACE_MANIFEST = "manifest.json"  # same shape as the generation run's manifest
DIFFICULTIES = ("easy", "medium", "hard")
UNREADABLE = "readable"  # the pseudo-rule that unreadable or missing files fail
ANSWER_FORMATS: tuple[AnswerFormat, ...] = get_args(AnswerFormat)


# -- filter rules -------------------------------------------------------------------------

Verdict = bool | tuple[bool, str]


class Rule(Protocol):
    name: str

    def keep(self, trace: Trace) -> Verdict: ...


@dataclass
class NoError:
    name: str = "no_error"

    def keep(self, trace: Trace) -> Verdict:
        return trace.ok or (False, f"{trace.error_kind or 'error'}: {trace.error}")


@dataclass
class ParseSuccess:
    name: str = "parse_success"

    def keep(self, trace: Trace) -> Verdict:
        return trace.parse_success or (False, "no \\boxed{lat, lon} answer could be parsed")


@dataclass
class MinReward:
    min_reward: float
    name: str = "min_reward"

    def keep(self, trace: Trace) -> Verdict:
        return trace.reward_score >= self.min_reward or \
            (False, f"reward {trace.reward_score:.3f} < {self.min_reward} ({trace.distance_km:.0f} km off)")


@dataclass
class MaxTurns:
    max_turns: int
    name: str = "max_turns"

    def keep(self, trace: Trace) -> Verdict:
        return trace.num_turns <= self.max_turns or (False, f"{trace.num_turns} turns > {self.max_turns}")


@dataclass
class RequiredTools:
    """Keeps traces with at least one successful call of every required tool (or of any tool)."""

    tools: tuple[str, ...]  # empty: any tool will do
    name: str = "required_tools"

    def keep(self, trace: Trace) -> Verdict:
        used = {c.tool_name for c in trace.tool_calls_log if c.success}
        if not self.tools:
            return bool(used) or (False, "no successful tool call")
        missing = [t for t in self.tools if t not in used]
        return not missing or (False, f"does not use {', '.join(missing)}")


@dataclass
class ForbiddenTools:
    tools: tuple[str, ...]
    name: str = "forbidden_tools"

    def keep(self, trace: Trace) -> Verdict:
        used = sorted({c.tool_name for c in trace.tool_calls_log} & set(self.tools))
        return not used or (False, f"calls {', '.join(used)}")


@dataclass
class NoFailedToolCall:
    name: str = "no_failed_tool_call"

    def keep(self, trace: Trace) -> Verdict:
        failed = [c for c in trace.tool_calls_log if not c.success]
        return not failed or (False, f"{len(failed)} failed tool call(s), first: {failed[0].tool_name}: "
                                     f"{failed[0].error}")


@dataclass
class AnswerFormats:
    """Keeps answers written in one of ``formats`` (a trace without an answer is ParseSuccess's)."""

    formats: tuple[str, ...]
    name: str = "answer_format"

    def keep(self, trace: Trace) -> Verdict:
        fmt = trace.answer_format
        return fmt is None or fmt in self.formats or (False, f"answer written as {fmt}")


@dataclass
class PromptedDialect:
    """Drops traces with a tool call in another dialect than the one the teacher was prompted in."""

    name: str = "prompted_dialect"

    def keep(self, trace: Trace) -> Verdict:
        prompted = trace.teacher.tool_style if trace.teacher else None
        prompted = ALIASES.get(prompted, prompted) if prompted else None
        other = sorted({c.dialect for c in trace.tool_calls_log if c.dialect and c.dialect != prompted})
        return not other or (False, f"tool calls in {', '.join(other)}, prompted in {prompted}")


def _normalise(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").lower()).strip()


@dataclass
class DistinctAnswers:
    """Drops a rollout whose final answer nearly repeats one already kept for the same sample.

    Traces arrive in (sample, rollout) order, so only the current sample's answers are held.
    Put it last: it remembers the answers it lets through, which must be the ones kept.
    """

    min_similarity: float
    name: str = "near_duplicate_answer"
    _sample: int | None = field(default=None, repr=False)
    _kept: list[tuple[int, str]] = field(default_factory=list, repr=False)

    def keep(self, trace: Trace) -> Verdict:
        if trace.sample_index != self._sample:
            self._sample, self._kept = trace.sample_index, []
        answer = _normalise(trace.final_answer)
        for rollout, other in self._kept:
            matcher = difflib.SequenceMatcher(None, answer, other, autojunk=False)
            if matcher.real_quick_ratio() >= self.min_similarity and matcher.quick_ratio() >= self.min_similarity:
                similarity = matcher.ratio()
                if similarity >= self.min_similarity:
                    return False, f"final answer {similarity:.2f} similar to rollout {rollout}'s"
        self._kept.append((trace.rollout_index, answer))
        return True


class FilterConfig(BaseModel):
    """Which traces a curated set keeps. Rules run in this order; the first to refuse a trace names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    no_error: bool = Field(True, description="drop traces whose rollout failed")
    parse_success: bool = Field(True, description="drop traces without a parseable \\boxed{lat, lon}")
    min_reward: float | None = Field(0.5, ge=0.0, le=1.0,
                                     description="minimum reward exp(-km/1492.7); 0.5 is about 1035 km")
    max_turns: int | None = Field(None, ge=1, le=100, description="maximum assistant turns")
    require_tool_use: bool = Field(False, description="keep only traces with a successful tool call")
    required_tools: tuple[str, ...] = Field((), description="tools every kept trace must call successfully")
    forbidden_tools: tuple[str, ...] = Field((), description="tools no kept trace may call")
    no_failed_tool_call: bool = Field(True, description="drop traces with a failed tool call")
    answer_formats: tuple[AnswerFormat, ...] = Field(
        ANSWER_FORMATS, description="answer formats to keep: boxed, glm_box, plain_last_line (the prompt's "
                                    "format ignored)")
    prompted_dialect_only: bool = Field(False, description="drop traces with a tool call in another dialect "
                                                           "than the prompted one")
    dedup_answers: bool = Field(True, description="drop rollouts whose final answer nearly repeats a kept one")
    dedup_similarity: float = Field(0.95, ge=0.5, le=1.0, description="difflib ratio counted as a repeat")

    @model_validator(mode="after")
    def _tools_not_both_required_and_forbidden(self) -> FilterConfig:
        both = set(self.required_tools) & set(self.forbidden_tools)
        if both:
            raise ValueError(f"tools both required and forbidden: {sorted(both)}")
        return self


def build_rules(config: FilterConfig) -> list[Rule]:
    rules: list[Rule] = []
    if config.no_error:
        rules.append(NoError())
    if config.parse_success:
        rules.append(ParseSuccess())
    if config.min_reward is not None:
        rules.append(MinReward(config.min_reward))
    if config.max_turns is not None:
        rules.append(MaxTurns(config.max_turns))
    if config.require_tool_use or config.required_tools:
        rules.append(RequiredTools(tuple(config.required_tools)))
    if config.forbidden_tools:
        rules.append(ForbiddenTools(tuple(config.forbidden_tools)))
    if config.no_failed_tool_call:
        rules.append(NoFailedToolCall())
    if set(config.answer_formats) != set(ANSWER_FORMATS):
        rules.append(AnswerFormats(tuple(config.answer_formats)))
    if config.prompted_dialect_only:
        rules.append(PromptedDialect())
    if config.dedup_answers:
        rules.append(DistinctAnswers(config.dedup_similarity))
    return rules


def first_refusal(rules: Iterable[Rule], trace: Trace) -> tuple[str, str] | None:
    """(rule name, reason) of the first rule that refuses ``trace``, or None if all keep it."""
    for rule in rules:
        verdict = rule.keep(trace)
        kept, reason = verdict if isinstance(verdict, tuple) else (verdict, "")
        if not kept:
            return rule.name, reason or rule.name
    return None


# -- writing curated stores -----------------------------------------------------------------

def _check_distinct(src: TraceStore, dest: TraceStore) -> None:
    if type(src.fs) is type(dest.fs) and src.root.rstrip("/") == dest.root.rstrip("/"):
        raise ConfigError(f"the destination {dest.url} is the source store: curated sets go elsewhere")


def _manifest_row(item: ScannedTrace) -> dict[str, Any]:
    trace = item.trace
    assert trace is not None
    return {"name": item.name, "sample_index": trace.sample_index, "rollout_index": trace.rollout_index,
            "ok": trace.ok, "error_kind": trace.error_kind}


def _finish_store(dest: TraceStore, rows: Sequence[dict[str, Any]]) -> int:
    """Write the store's manifest and remove trace files left by an earlier run; returns how many."""
    names = {row["name"] for row in rows}
    stale = [n for n in dest.trace_names() if n not in names]
    for name in stale:
        dest.fs.rm(dest.path(name))
    dest.write_json(TRACE_MANIFEST, {"traces": list(rows)})
    return len(stale)


def _reject_row(item: ScannedTrace, rule: str, reason: str) -> str:
    key = parse_trace_name(item.name) or (None, None)
    return json.dumps({"name": item.name, "sample_index": key[0], "rollout_index": key[1],
                       "rule": rule, "reason": reason})


def run_filter(src: TraceStore, dest: TraceStore, config: FilterConfig = FilterConfig(),
               workers: int = 8) -> dict[str, Any]:
    """Copy the traces every rule keeps from ``src`` to ``dest``; returns the filter manifest.

    ``total == kept + sum(removed.values())`` always: an unreadable or missing file counts
    against the ``readable`` pseudo-rule, so nothing leaves silently.
    """
    _check_distinct(src, dest)
    rules = build_rules(config)
    removed = {UNREADABLE: 0, **{rule.name: 0 for rule in rules}}
    rejected: list[str] = []
    kept: list[dict[str, Any]] = []  # manifest rows, not the traces: a store may not fit in memory
    for item in scan(src, workers=workers):
        if item.trace is None or item.raw is None:
            refusal = (UNREADABLE, str(item.error))
        else:
            refusal = first_refusal(rules, item.trace)
        if refusal is None:
            dest.write_bytes(item.name, item.raw)  # type: ignore[arg-type]
            kept.append(_manifest_row(item))
            continue
        removed[refusal[0]] += 1
        rejected.append(_reject_row(item, *refusal))
    dest.write_bytes(REJECTED, ("\n".join(rejected) + "\n" if rejected else "").encode())
    manifest = {
        "source": src.url, "dest": dest.url, "config": config.model_dump(mode="json"),
        "total": len(kept) + len(rejected), "kept": len(kept), "removed": removed,
        "rejected_file": REJECTED, "stale_removed": _finish_store(dest, kept),
    }
    dest.write_json(FILTER_MANIFEST, manifest)
    return manifest


# -- difficulty split ---------------------------------------------------------------------

class SplitConfig(BaseModel):
    """How a sample's difficulty is rated. Rewards: 0.8 is about 333 km, 0.6 about 762 km, 0.4 about 1368 km."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["auto", "pass_rate", "reward_bands"] = Field(
        "auto", description="auto: pass rate when a sample has several rollouts, else reward bands")
    pass_reward: float = Field(0.6, ge=0.0, le=1.0, description="a rollout passes at or above this reward")
    easy_min_pass_rate: float = Field(0.75, ge=0.0, le=1.0, description="easy: pass rate at least this")
    hard_max_pass_rate: float = Field(0.25, ge=0.0, le=1.0, description="hard: pass rate at most this")
    easy_min_reward: float = Field(0.8, ge=0.0, le=1.0, description="one rollout: easy at or above this reward")
    hard_max_reward: float = Field(0.4, ge=0.0, le=1.0, description="one rollout: hard below this reward")

    @model_validator(mode="after")
    def _bands_in_order(self) -> SplitConfig:
        if self.hard_max_pass_rate >= self.easy_min_pass_rate:
            raise ValueError("hard_max_pass_rate must be below easy_min_pass_rate")
        if self.hard_max_reward > self.easy_min_reward:
            raise ValueError("hard_max_reward must not exceed easy_min_reward")
        return self


@dataclass
class SampleRating:
    sample_index: int
    difficulty: str  # easy | medium | hard | unrated (no rollout finished without error)
    method: str
    rollouts: int  # rollouts rated (finished without error)
    pass_rate: float | None
    mean_reward: float | None


def rate_sample(sample_index: int, rewards: Sequence[float], config: SplitConfig = SplitConfig()) -> SampleRating:
    """The difficulty of one sample from the rewards of its error-free rollouts."""
    if not rewards:
        return SampleRating(sample_index, "unrated", "none", 0, None, None)
    mean = sum(rewards) / len(rewards)
    rate = sum(r >= config.pass_reward for r in rewards) / len(rewards)
    method = config.method if config.method != "auto" else ("pass_rate" if len(rewards) > 1 else "reward_bands")
    if method == "pass_rate":
        bucket = "easy" if rate >= config.easy_min_pass_rate else "hard" if rate <= config.hard_max_pass_rate \
            else "medium"
    else:
        bucket = "easy" if mean >= config.easy_min_reward else "hard" if mean < config.hard_max_reward \
            else "medium"
    return SampleRating(sample_index, bucket, method, len(rewards), rate, mean)


def rate_store(store: TraceStore, config: SplitConfig = SplitConfig(), workers: int = 8
               ) -> tuple[dict[int, SampleRating], list[str]]:
    """Every sample's rating, and the unreadable files (by message) met on the way."""
    rewards: dict[int, list[float]] = {}
    problems: list[str] = []
    for item in scan(store, workers=workers):
        if item.trace is None:
            problems.append(str(item.error))
            continue
        bucket = rewards.setdefault(item.trace.sample_index, [])
        if item.trace.ok:  # a teacher outage says nothing about how hard the image is
            bucket.append(item.trace.reward_score)
    return {i: rate_sample(i, r, config) for i, r in sorted(rewards.items())}, problems


def run_split(src: TraceStore, dest: TraceStore, config: SplitConfig = SplitConfig(),
              difficulty_source: TraceStore | None = None, workers: int = 8) -> dict[str, Any]:
    """Copy ``src``'s traces into ``dest/easy``, ``dest/medium``, ``dest/hard``; returns ``split.json``.

    Ratings come from ``difficulty_source`` (default ``src``): split a filtered set by the
    ratings of the full run it came from, since the filter removed the failing rollouts a
    pass rate needs. Traces of a sample with no rating are not copied and are counted as
    ``unrated``.
    """
    _check_distinct(src, dest)
    ratings, rating_problems = rate_store(difficulty_source or src, config, workers)
    subs = {b: dest.sub(b) for b in DIFFICULTIES}
    kept: dict[str, list[dict[str, Any]]] = {b: [] for b in DIFFICULTIES}
    counts = {b: {"samples": 0, "traces": 0} for b in (*DIFFICULTIES, "unrated")}
    seen: dict[str, set[int]] = {b: set() for b in counts}
    problems: list[str] = []
    for item in scan(src, workers=workers):
        if item.trace is None or item.raw is None:
            problems.append(str(item.error))
            continue
        rating = ratings.get(item.trace.sample_index)
        bucket = rating.difficulty if rating is not None else "unrated"
        counts[bucket]["traces"] += 1
        seen[bucket].add(item.trace.sample_index)
        if bucket != "unrated":
            subs[bucket].write_bytes(item.name, item.raw)
            kept[bucket].append(_manifest_row(item))
    for bucket, samples in seen.items():
        counts[bucket]["samples"] = len(samples)
    stale = sum(_finish_store(subs[b], kept[b]) for b in DIFFICULTIES)
    dest.write_bytes(DIFFICULTY_FILE, "".join(json.dumps(r.__dict__) + "\n" for r in ratings.values()).encode())
    manifest = {
        "source": src.url, "dest": dest.url, "difficulty_source": (difficulty_source or src).url,
        "config": config.model_dump(mode="json"), "counts": counts,
        "total": sum(c["traces"] for c in counts.values()) + len(problems),
        "unreadable": len(problems), "unreadable_traces": problems[:1000],
        "difficulty_source_unreadable": len(rating_problems) if difficulty_source is not None else None,
        "ratings_file": DIFFICULTY_FILE, "stale_removed": stale,
    }
    dest.write_json(SPLIT_MANIFEST, manifest)
    return manifest


def split_buckets(store: TraceStore) -> list[str] | None:
    """The bucket sub-folders of a store written by ``run_split``, or None for any other store."""
    return list(DIFFICULTIES) if store.exists(SPLIT_MANIFEST) else None


def read_difficulty(store: TraceStore) -> dict[int, str]:
    """Sample index -> difficulty, from a split store's ``difficulty.jsonl``."""
    lines = store.read_bytes(DIFFICULTY_FILE).decode().splitlines()
    return {row["sample_index"]: row["difficulty"] for row in map(json.loads, filter(None, lines))}
