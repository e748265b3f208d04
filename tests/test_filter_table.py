"""The filter-rule table: one declaration per rule, read by FilterConfig, the CLI and filter.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import typer
from typer.testing import CliRunner

from geodistil.cli.curate import filter_command
from geodistil.curate import (
    FILTER_RULES, READABLE, DistinctAnswers, FilterConfig, MinReward, Setting, TableRule, Verdict, build_rules,
    filter_config, rule_table, run_filter,
)
from geodistil.store import FILTER_MANIFEST, REJECTED, TraceStore
from geodistil.trace import Trace
from tests.trace_sets import copy_store, damage

pytest_plugins = ["tests.fixtures_traces"]


@dataclass
class ShortAnswer(TableRule):
    """A rule defined here, as a new rule would be in geodistil/curate.py: class, settings, row."""

    max_chars: int
    name: str = "short_answer"
    SETTINGS: ClassVar[dict[str, Setting]] = {
        "max_answer_chars": Setting(int | None, None, "longest final answer kept", ge=1)}

    @classmethod
    def from_config(cls, config: Any) -> ShortAnswer | None:
        return cls(config.max_answer_chars) if config.max_answer_chars is not None else None

    def keep(self, trace: Trace) -> Verdict:
        n = len(trace.final_answer or "")
        return n <= self.max_chars or (False, f"answer of {n} characters > {self.max_chars}")


WITH_SHORT = filter_config(rule_table(*FILTER_RULES, ShortAnswer), name="FilterConfigWithShortAnswer")


def test_a_rule_added_after_the_duplicate_rule_still_runs_before_it():
    names = [r.name for r in build_rules(WITH_SHORT(max_answer_chars=10))]
    assert names[-2:] == ["short_answer", "near_duplicate_answer"]
    assert [r.name for r in build_rules(FilterConfig())][-1] == DistinctAnswers.name


def test_the_config_has_one_field_per_setting_of_the_table_in_its_order():
    assert list(FilterConfig.model_fields) == [key for rule in FILTER_RULES for key in rule.SETTINGS]
    assert list(WITH_SHORT.model_fields)[-3:] == ["max_answer_chars", "dedup_answers", "dedup_similarity"]
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        WITH_SHORT(max_answer_chars=0)  # the setting's limits are the field's


def test_two_rules_may_not_declare_the_same_setting():
    @dataclass
    class OtherMinReward(MinReward):
        name: str = "other_min_reward"

    with pytest.raises(ValueError, match="min_reward"):
        rule_table(*FILTER_RULES, OtherMinReward)


def test_a_rule_defined_in_a_test_is_applied_by_run_filter_and_named_in_its_manifest(small_set, tmp_path):
    limit = 60
    dest = TraceStore(str(tmp_path / "curated"))
    manifest = run_filter(small_set.store, dest, WITH_SHORT(max_answer_chars=limit, min_reward=None))
    assert list(manifest["removed"]) == [READABLE, "no_error", "parse_success", "no_failed_tool_call",
                                         "short_answer", "near_duplicate_answer"]
    assert manifest["config"]["max_answer_chars"] == limit
    rejected = [json.loads(line) for line in dest.read_bytes(REJECTED).decode().splitlines()]
    short = [r for r in rejected if r["rule"] == "short_answer"]
    assert short and len(short) == manifest["removed"]["short_answer"]
    for row in short:  # each one is long, and passed the rules before it
        trace = small_set.store.read_trace(row["name"])
        assert len(trace.final_answer) > limit and trace.ok and trace.parse_success
    for _, trace in dest.iter_traces():
        assert len(trace.final_answer or "") <= limit


def test_the_filter_command_has_an_option_for_every_setting_of_the_table(small_set, tmp_path):
    app = typer.Typer()
    app.command("filter")(filter_command(WITH_SHORT))
    app.command("other")(lambda: None)  # two commands: the first argument names the command
    dest = tmp_path / "curated"
    result = CliRunner().invoke(app, ["filter", small_set.url, str(dest), "--max-answer-chars", "60", "--any-reward"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((dest / FILTER_MANIFEST).read_text())
    assert manifest["config"]["max_answer_chars"] == 60 and manifest["removed"]["short_answer"] > 0


def test_todays_filter_flags_give_the_config_they_always_gave(small_set, tmp_path):
    from geodistil.cli import app

    flags = ["--any-reward", "--max-turns", "4", "--require-tool-use", "--forbidden-tool", "python_code_tool",
             "--keep-errors", "--keep-unparsed", "--keep-failed-tool-calls", "--answer-format", "boxed",
             "--prompted-dialect-only", "--no-dedup", "--dedup-similarity", "0.9"]
    dest = tmp_path / "curated"
    result = CliRunner().invoke(app, ["filter", small_set.url, str(dest), *flags])
    assert result.exit_code == 0, result.output
    expected = FilterConfig(no_error=False, parse_success=False, min_reward=None, max_turns=4, require_tool_use=True,
                            forbidden_tools=("python_code_tool",), no_failed_tool_call=False,
                            answer_formats=("boxed",), prompted_dialect_only=True, dedup_answers=False,
                            dedup_similarity=0.9)
    assert json.loads((dest / FILTER_MANIFEST).read_text())["config"] == expected.model_dump(mode="json")


def test_contradicting_filter_flags_end_in_one_line(small_set, tmp_path):
    from geodistil.cli import app

    result = CliRunner().invoke(app, ["filter", small_set.url, str(tmp_path / "c"), "--required-tool", "zoom",
                                      "--forbidden-tool", "zoom"])
    assert result.exit_code == 2
    assert "tools both required and forbidden" in result.output and "Traceback" not in result.output


def test_an_unreadable_file_is_removed_by_the_readable_pseudo_rule(small_set, tmp_path):
    # the pseudo-rule is named, like every rule, after what a trace must be to pass it
    src = copy_store(small_set, tmp_path / "damaged")
    broken = damage(src)
    dest = TraceStore(str(tmp_path / "curated"))
    manifest = run_filter(src, dest)
    assert READABLE == "readable" and list(manifest["removed"])[0] == READABLE
    rows = [json.loads(line) for line in dest.read_bytes(REJECTED).decode().splitlines()]
    rules = {row["name"]: row["rule"] for row in rows}
    assert {rules[name] for name in broken} == {READABLE}
