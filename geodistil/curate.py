"""Curating a trace store: quality filters with kept rejects, and the difficulty split.

A filter rule is a small class that says ``keep(trace) -> bool | (bool, reason)`` (the
datatrove shape) and declares the ``FilterConfig`` fields it reads (``SETTINGS``) and how a
config turns it on (``from_config``). ``FILTER_RULES`` is the one table of rules, in the order
they run: ``FilterConfig``, the ``geodistil filter`` options and ``filter.json`` are all read
from it, so a new rule is one class here plus its row (see docs/extending.md, "Filter rule").

``run_filter`` walks a store in order, sends each trace through the rules in turn, copies the
kept ones byte for byte under the same names (so they stay ordered and replayable), and
writes ``filter.json`` (how many each rule removed) and ``rejected.jsonl`` (every removed
trace with the rule and the reason), so a filter's effect can be audited.

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
from typing import Any, ClassVar, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from geodistil.dialects import ALIASES
from geodistil.errors import ConfigError
from geodistil.scan import ScannedTrace, scan
from geodistil.scoring import AnswerFormat
from geodistil.store import (
    DIFFICULTIES, DIFFICULTY_FILE, FILTER_MANIFEST, REJECTED, SPLIT_MANIFEST, UNRATED, ManifestRow, TraceStore,
    parse_trace_name,
)
from geodistil.trace import Trace

READABLE = "readable"  # the pseudo-rule every file must pass before the rules: be a readable trace
ANSWER_FORMATS: tuple[AnswerFormat, ...] = get_args(AnswerFormat)


# -- filter rules -------------------------------------------------------------------------

Verdict = bool | tuple[bool, str]


class Rule(Protocol):
    name: str

    def keep(self, trace: Trace) -> Verdict: ...


@dataclass(frozen=True)
class Setting:
    """One ``FilterConfig`` field a rule reads: its type, default and limits, and how the CLI sets it.

    The CLI option is ``--<cli>`` (default: the field's name with dashes); a bool is a
    ``--x/--no-x`` pair, set to the opposite of the field when ``inverted`` (``--keep-errors``
    turns ``no_error`` off, and ``cli_help`` says what the flag does); a tuple is given by
    repeating the option, each value one of ``choices`` when set, and none given keeps the
    default; ``off`` names a flag that sets the field to None (``--any-reward``), ``off_help``
    what it does.
    """

    type: Any
    default: Any
    help: str
    ge: float | None = None
    le: float | None = None
    cli: str | None = None
    inverted: bool = False
    cli_help: str | None = None
    choices: tuple[str, ...] | None = None
    off: str | None = None
    off_help: str | None = None


class FilterRule(Rule, Protocol):
    """A row of the rule table: a rule class with its settings."""

    SETTINGS: ClassVar[dict[str, Setting]]  # FilterConfig field -> its setting, in CLI order
    REMEMBERS_KEPT: ClassVar[bool]  # it must see only the traces every other rule keeps

    @classmethod
    def from_config(cls, config: Any) -> Rule | None:
        """The rule for ``config``, or None when the config turns it off."""
        ...

    @classmethod
    def check(cls, config: Any) -> None:
        """Raise ``ValueError`` for settings that contradict each other."""
        ...


class TableRule:
    """Defaults for a rule of the table: it remembers nothing and checks nothing."""

    SETTINGS: ClassVar[dict[str, Setting]] = {}
    REMEMBERS_KEPT: ClassVar[bool] = False

    @classmethod
    def check(cls, config: Any) -> None:
        return None


@dataclass
class NoError(TableRule):
    name: str = "no_error"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "no_error": Setting(bool, True, "drop traces whose rollout failed", cli="keep-errors", inverted=True,
                            cli_help="keep traces whose rollout failed")}

    @classmethod
    def from_config(cls, config: Any) -> NoError | None:
        return cls() if config.no_error else None

    def keep(self, trace: Trace) -> Verdict:
        return trace.ok or (False, f"{trace.error_kind or 'error'}: {trace.error}")


@dataclass
class ParseSuccess(TableRule):
    name: str = "parse_success"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "parse_success": Setting(bool, True, "drop traces without a parseable \\boxed{lat, lon}", cli="keep-unparsed",
                                 inverted=True, cli_help="keep traces without a parseable answer")}

    @classmethod
    def from_config(cls, config: Any) -> ParseSuccess | None:
        return cls() if config.parse_success else None

    def keep(self, trace: Trace) -> Verdict:
        return trace.parse_success or (False, "no \\boxed{lat, lon} answer could be parsed")


@dataclass
class MinReward(TableRule):
    min_reward: float
    name: str = "min_reward"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "min_reward": Setting(float | None, 0.5, "minimum reward exp(-km/1492.7); 0.5 is about 1035 km", ge=0.0,
                              le=1.0, off="any-reward", off_help="no minimum reward")}

    @classmethod
    def from_config(cls, config: Any) -> MinReward | None:
        return cls(config.min_reward) if config.min_reward is not None else None

    def keep(self, trace: Trace) -> Verdict:
        return trace.reward_score >= self.min_reward or \
            (False, f"reward {trace.reward_score:.3f} < {self.min_reward} ({trace.distance_km:.0f} km off)")


@dataclass
class MaxTurns(TableRule):
    max_turns: int
    name: str = "max_turns"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "max_turns": Setting(int | None, None, "maximum assistant turns", ge=1, le=100)}

    @classmethod
    def from_config(cls, config: Any) -> MaxTurns | None:
        return cls(config.max_turns) if config.max_turns is not None else None

    def keep(self, trace: Trace) -> Verdict:
        return trace.num_turns <= self.max_turns or (False, f"{trace.num_turns} turns > {self.max_turns}")


@dataclass
class RequiredTools(TableRule):
    """Keeps traces with at least one successful call of every required tool (or of any tool)."""

    tools: tuple[str, ...]  # empty: any tool will do
    name: str = "required_tools"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "require_tool_use": Setting(bool, False, "keep only traces with a successful tool call"),
        "required_tools": Setting(tuple[str, ...], (), "a tool every kept trace must call successfully",
                                  cli="required-tool")}

    @classmethod
    def from_config(cls, config: Any) -> RequiredTools | None:
        wanted = config.require_tool_use or config.required_tools
        return cls(tuple(config.required_tools)) if wanted else None

    def keep(self, trace: Trace) -> Verdict:
        used = {c.tool_name for c in trace.tool_calls_log if c.success}
        if not self.tools:
            return bool(used) or (False, "no successful tool call")
        missing = [t for t in self.tools if t not in used]
        return not missing or (False, f"does not use {', '.join(missing)}")


@dataclass
class ForbiddenTools(TableRule):
    tools: tuple[str, ...]
    name: str = "forbidden_tools"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "forbidden_tools": Setting(tuple[str, ...], (), "a tool no kept trace may call", cli="forbidden-tool")}

    @classmethod
    def from_config(cls, config: Any) -> ForbiddenTools | None:
        return cls(tuple(config.forbidden_tools)) if config.forbidden_tools else None

    @classmethod
    def check(cls, config: Any) -> None:
        both = set(getattr(config, "required_tools", ())) & set(config.forbidden_tools)
        if both:
            raise ValueError(f"tools both required and forbidden: {sorted(both)}")

    def keep(self, trace: Trace) -> Verdict:
        used = sorted({c.tool_name for c in trace.tool_calls_log} & set(self.tools))
        return not used or (False, f"calls {', '.join(used)}")


@dataclass
class NoFailedToolCall(TableRule):
    name: str = "no_failed_tool_call"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "no_failed_tool_call": Setting(bool, True, "drop traces with a failed tool call", cli="keep-failed-tool-calls",
                                       inverted=True, cli_help="keep traces with a failed tool call")}

    @classmethod
    def from_config(cls, config: Any) -> NoFailedToolCall | None:
        return cls() if config.no_failed_tool_call else None

    def keep(self, trace: Trace) -> Verdict:
        failed = [c for c in trace.tool_calls_log if not c.success]
        return not failed or (False, f"{len(failed)} failed tool call(s), first: {failed[0].tool_name}: "
                                     f"{failed[0].error}")


@dataclass
class AnswerFormats(TableRule):
    """Keeps answers written in one of ``formats`` (a trace without an answer is ParseSuccess's)."""

    formats: tuple[str, ...]
    name: str = "answer_format"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "answer_formats": Setting(tuple[AnswerFormat, ...], ANSWER_FORMATS,
                                  "an answer format to keep: boxed, glm_box, plain_last_line (default all; the "
                                  "prompt's format ignored)", cli="answer-format", choices=ANSWER_FORMATS)}

    @classmethod
    def from_config(cls, config: Any) -> AnswerFormats | None:
        every = set(config.answer_formats) == set(ANSWER_FORMATS)
        return None if every else cls(tuple(config.answer_formats))

    def keep(self, trace: Trace) -> Verdict:
        fmt = trace.answer_format
        return fmt is None or fmt in self.formats or (False, f"answer written as {fmt}")


@dataclass
class PromptedDialect(TableRule):
    """Drops traces with a tool call in another dialect than the one the teacher was prompted in."""

    name: str = "prompted_dialect"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "prompted_dialect_only": Setting(bool, False, "drop traces with a tool call in another dialect than the "
                                                      "prompted one")}

    @classmethod
    def from_config(cls, config: Any) -> PromptedDialect | None:
        return cls() if config.prompted_dialect_only else None

    def keep(self, trace: Trace) -> Verdict:
        prompted = trace.teacher.tool_style if trace.teacher else None
        prompted = ALIASES.get(prompted, prompted) if prompted else None
        other = sorted({c.dialect for c in trace.tool_calls_log if c.dialect and c.dialect != prompted})
        return not other or (False, f"tool calls in {', '.join(other)}, prompted in {prompted}")


def _normalise(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").lower()).strip()


@dataclass
class DistinctAnswers(TableRule):
    """Drops a rollout whose final answer nearly repeats one already kept for the same sample.

    Traces arrive in (sample, rollout) order, so only the current sample's answers are held.
    It remembers the answers it lets through, which must be the ones kept: ``REMEMBERS_KEPT``
    makes the table run it after every other rule.
    """

    min_similarity: float
    name: str = "near_duplicate_answer"
    _sample: int | None = field(default=None, repr=False)
    _kept: list[tuple[int, str]] = field(default_factory=list, repr=False)
    REMEMBERS_KEPT: ClassVar[bool] = True
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "dedup_answers": Setting(bool, True, "drop rollouts whose final answer nearly repeats a kept one",
                                 cli="dedup"),
        "dedup_similarity": Setting(float, 0.95, "difflib ratio counted as a repeat", ge=0.5, le=1.0)}

    @classmethod
    def from_config(cls, config: Any) -> DistinctAnswers | None:
        return cls(config.dedup_similarity) if config.dedup_answers else None

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


# -- the rule table ---------------------------------------------------------------------------

RuleTable = tuple[type[FilterRule], ...]


def rule_table(*rules: type[FilterRule]) -> RuleTable:
    """The rules in the order they run: as listed, except that a rule which remembers what it
    keeps runs after all the others (so adding a rule anywhere cannot put it before one)."""
    ordered = tuple(r for r in rules if not r.REMEMBERS_KEPT) + tuple(r for r in rules if r.REMEMBERS_KEPT)
    fields = [name for r in ordered for name in r.SETTINGS]
    if len(set(fields)) != len(fields):
        twice = sorted({f for f in fields if fields.count(f) > 1})
        raise ValueError(f"two filter rules declare the same setting: {twice}")
    return ordered


FILTER_RULES: RuleTable = rule_table(
    NoError, ParseSuccess, MinReward, MaxTurns, RequiredTools, ForbiddenTools, NoFailedToolCall, AnswerFormats,
    PromptedDialect, DistinctAnswers,
)


class FilterConfigBase(BaseModel):
    """Which traces a curated set keeps: one field per setting of the rule table, in its order.
    Rules run in that order; the first to refuse a trace names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: ClassVar[RuleTable] = ()

    @model_validator(mode="after")
    def _settings_agree(self) -> FilterConfigBase:
        for rule in self.rules:
            rule.check(self)
        return self


def filter_config(rules: RuleTable, name: str = "FilterConfig") -> type[FilterConfigBase]:
    """The config model of a rule table: each rule's settings as fields with their limits."""
    fields: dict[str, Any] = {
        key: (s.type, Field(s.default, description=s.help, ge=s.ge, le=s.le))
        for rule in rules for key, s in rule.SETTINGS.items()
    }
    model = create_model(name, __base__=FilterConfigBase, __module__=__name__, __doc__=FilterConfigBase.__doc__,
                         **fields)
    model.rules = rules
    return model


FilterConfig = filter_config(FILTER_RULES)


def build_rules(config: FilterConfigBase) -> list[Rule]:
    """The rules ``config`` turns on, in the order of its table."""
    return [rule for cls in type(config).rules if (rule := cls.from_config(config)) is not None]


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


def _manifest_row(item: ScannedTrace) -> ManifestRow:
    assert item.trace is not None
    return ManifestRow.of(item.name, item.trace)


def _finish_store(dest: TraceStore, rows: Sequence[ManifestRow]) -> int:
    """Write the store's manifest and remove trace files left by an earlier run; returns how many."""
    names = {row.name for row in rows}
    stale = [n for n in dest.trace_names() if n not in names]
    for name in stale:
        dest.fs.rm(dest.path(name))
    dest.write_manifest(rows)
    return len(stale)


def _reject_row(item: ScannedTrace, rule: str, reason: str) -> str:
    key = parse_trace_name(item.name) or (None, None)
    return json.dumps({"name": item.name, "sample_index": key[0], "rollout_index": key[1],
                       "rule": rule, "reason": reason})


def run_filter(src: TraceStore, dest: TraceStore, config: FilterConfigBase = FilterConfig(),
               workers: int = 8) -> dict[str, Any]:
    """Copy the traces every rule keeps from ``src`` to ``dest``; returns the filter manifest.

    ``total == kept + sum(removed.values())`` always: an unreadable or missing file counts
    against the ``readable`` pseudo-rule (``READABLE``), so nothing leaves silently.
    """
    _check_distinct(src, dest)
    rules = build_rules(config)
    removed = {READABLE: 0, **{rule.name: 0 for rule in rules}}
    rejected: list[str] = []
    kept: list[ManifestRow] = []  # manifest rows, not the traces: a store may not fit in memory
    for item in scan(src, workers=workers):
        if item.trace is None or item.raw is None:
            refusal = (READABLE, str(item.error))
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
        return SampleRating(sample_index, UNRATED, "none", 0, None, None)
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
    kept: dict[str, list[ManifestRow]] = {b: [] for b in DIFFICULTIES}
    counts = {b: {"samples": 0, "traces": 0} for b in (*DIFFICULTIES, UNRATED)}
    seen: dict[str, set[int]] = {b: set() for b in counts}
    problems: list[str] = []
    for item in scan(src, workers=workers):
        if item.trace is None or item.raw is None:
            problems.append(str(item.error))
            continue
        rating = ratings.get(item.trace.sample_index)
        bucket = rating.difficulty if rating is not None else UNRATED
        counts[bucket]["traces"] += 1
        seen[bucket].add(item.trace.sample_index)
        if bucket != UNRATED:
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


def read_difficulty(store: TraceStore) -> dict[int, str]:
    """Sample index -> difficulty, from a split store's ``difficulty.jsonl``."""
    lines = store.read_bytes(DIFFICULTY_FILE).decode().splitlines()
    return {row["sample_index"]: row["difficulty"] for row in map(json.loads, filter(None, lines))}
