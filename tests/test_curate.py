"""Quality filters and the difficulty split: manifests that add up, kept rejects, replayable copies."""

from __future__ import annotations

import json

import pytest

from geodistil.curate import (
    AnswerFormats, DistinctAnswers, FilterConfig, ForbiddenTools, MaxTurns, MinReward, NoError, NoFailedToolCall,
    ParseSuccess, PromptedDialect, RequiredTools, SplitConfig, build_rules, first_refusal, rate_sample,
    read_difficulty, run_filter, run_split,
)
from geodistil.errors import ConfigError
from geodistil.replay import verify_trace
from geodistil.store import TraceStore
from geodistil.trace import TeacherInfo, ToolCallRecord, Trace
from tests.trace_sets import copy_store, damage, direct_scan

# the trace-set fixtures, shared by every module in the session (an import would make one per module)
pytest_plugins = ["tests.fixtures_traces"]


def trace(i=0, r=0, *, reward=0.8, ok=True, parsed=True, turns=2, answer="It is Paris. \\boxed{48.85, 2.35}",
          tools=()):
    return Trace(dataset_path="d", dataset_fingerprint="f", sample_index=i, rollout_index=r, reward_score=reward,
                 distance_km=100, parse_success=parsed, num_turns=turns, final_answer=answer,
                 error=None if ok else "HTTP 500", error_kind=None if ok else "teacher_error",
                 tool_calls_log=[ToolCallRecord(index=k, turn=1, tool_name=n, success=s, error=None if s else "bad box")
                                 for k, (n, s) in enumerate(tools)])


# -- rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, good, bad, reason", [
    (NoError(), trace(), trace(ok=False), "teacher_error: HTTP 500"),
    (ParseSuccess(), trace(), trace(parsed=False), "could be parsed"),
    (MinReward(0.5), trace(reward=0.5), trace(reward=0.49), "reward 0.490 < 0.5"),
    (MaxTurns(3), trace(turns=3), trace(turns=4), "4 turns > 3"),
    (RequiredTools(()), trace(tools=[("zoom", True)]), trace(tools=[("zoom", False)]), "no successful tool call"),
    (RequiredTools(("zoom", "rotate")), trace(tools=[("zoom", True), ("rotate", True)]),
     trace(tools=[("zoom", True)]), "does not use rotate"),
    (ForbiddenTools(("python",)), trace(tools=[("zoom", True)]), trace(tools=[("python", False)]), "calls python"),
    (NoFailedToolCall(), trace(tools=[("zoom", True)]), trace(tools=[("zoom", True), ("zoom", False)]),
     "1 failed tool call(s), first: zoom: bad box"),
])
def test_each_rule_keeps_the_good_trace_and_says_why_it_refuses_the_bad(rule, good, bad, reason):
    assert rule.keep(good) is True
    kept, why = rule.keep(bad)
    assert kept is False and reason in why


def test_near_duplicate_answers_are_dropped_within_a_sample_only():
    rule = DistinctAnswers(0.95)
    assert rule.keep(trace(0, 0, answer="Paris, France. \\boxed{48.85, 2.35}"))
    kept, why = rule.keep(trace(0, 1, answer="Paris, France.  \\boxed{48.86, 2.35}"))
    assert not kept and "rollout 0" in why
    assert rule.keep(trace(0, 2, answer="The signs are Polish: Kraków. \\boxed{50.06, 19.94}")) is True
    assert rule.keep(trace(1, 0, answer="Paris, France. \\boxed{48.85, 2.35}")) is True  # another sample


def test_the_first_refusing_rule_is_the_one_named():
    rules = build_rules(FilterConfig(min_reward=0.5))
    assert first_refusal(rules, trace(ok=False, parsed=False, reward=0.0))[0] == "no_error"
    assert first_refusal(rules, trace(parsed=False, reward=0.0))[0] == "parse_success"
    assert first_refusal(rules, trace()) is None


def answered_as(fmt):
    t = trace()
    t.answer_format = fmt
    return t


def prompted_in(tool_style, *dialects):
    t = trace(tools=[("zoom", True)] * len(dialects))
    t.teacher = TeacherInfo(base_url="u", model="m", tool_style=tool_style, temperature=0, top_p=1, max_tokens=9,
                            seed=0, max_turns=2, box_convention="absolute", tools=[], settings_fingerprint="f")
    for call, dialect in zip(t.tool_calls_log, dialects):
        call.dialect = dialect
    return t


def test_answers_written_in_a_format_not_asked_for_are_dropped_with_the_format():
    [rule] = [r for r in build_rules(FilterConfig(answer_formats=("boxed", "glm_box"))) if isinstance(r, AnswerFormats)]
    assert rule.keep(answered_as("boxed")) is True and rule.keep(answered_as("glm_box")) is True
    assert rule.keep(answered_as("plain_last_line")) == (False, "answer written as plain_last_line")


def test_every_answer_format_is_kept_by_default():
    assert not any(isinstance(r, AnswerFormats) for r in build_rules(FilterConfig()))


def test_calls_in_another_dialect_than_the_prompted_one_are_dropped_when_asked():
    rule = PromptedDialect()
    assert rule.keep(prompted_in("hermes", "hermes", "hermes")) is True
    assert rule.keep(prompted_in("text", "hermes")) is True  # traces made before dialects had names
    assert rule.keep(prompted_in("hermes", "hermes", "qwen3_xml")) == (
        False, "tool calls in qwen3_xml, prompted in hermes")
    assert any(isinstance(r, PromptedDialect) for r in build_rules(FilterConfig(prompted_dialect_only=True)))


def test_a_tool_cannot_be_both_required_and_forbidden():
    with pytest.raises(ValueError, match="both required and forbidden"):
        FilterConfig(required_tools=("zoom",), forbidden_tools=("zoom",))


# -- filtering a generated set ------------------------------------------------------------

def assert_filter_manifest_adds_up(src: TraceStore, dest: TraceStore, manifest: dict, expected_total: int) -> None:
    assert manifest["total"] == expected_total
    assert manifest["kept"] + sum(manifest["removed"].values()) == manifest["total"]
    rejected = [json.loads(line) for line in dest.read_bytes("rejected.jsonl").decode().splitlines()]
    assert len(rejected) == sum(manifest["removed"].values())
    for rule, count in manifest["removed"].items():
        assert sum(r["rule"] == rule for r in rejected) == count
    kept = dest.trace_names()
    assert len(kept) == manifest["kept"]
    assert not set(kept) & {r["name"] for r in rejected}
    assert kept == sorted(kept, key=lambda n: (int(n[6:11]), n))  # still in sample order
    for name in kept:
        assert dest.read_bytes(name) == src.read_bytes(name)  # byte copies, never rewritten
    assert [row["name"] for row in dest.read_json("manifest.json")["traces"]] == kept
    assert dest.read_json("filter.json") == manifest


def test_filter_manifest_adds_up_and_kept_traces_are_byte_copies(small_set, tmp_path):
    dest = TraceStore(str(tmp_path / "curated"))
    manifest = run_filter(small_set.store, dest, FilterConfig(min_reward=0.3))
    assert_filter_manifest_adds_up(small_set.store, dest, manifest, small_set.samples * small_set.rollouts)
    removed = manifest["removed"]
    assert removed["no_error"] and removed["parse_success"] and removed["min_reward"]  # the set's faults
    assert removed["no_failed_tool_call"] and removed["near_duplicate_answer"]
    for name, item in dest.iter_traces():  # every kept trace passes every rule
        assert first_refusal(build_rules(FilterConfig(min_reward=0.3, dedup_answers=False)), item) is None


def test_kept_traces_still_replay(small_set, tmp_path):
    dest = TraceStore(str(tmp_path / "curated"))
    run_filter(small_set.store, dest)
    results = [verify_trace(t, name) for name, t in list(dest.iter_traces())[:6]]
    assert results and all(r.ok and r.images >= 1 for r in results)


@pytest.mark.slow
def test_filter_manifest_adds_up_on_100_samples_x_4_rollouts(big_set, tmp_path):
    dest = TraceStore(str(tmp_path / "curated"))
    manifest = run_filter(big_set.store, dest)
    assert_filter_manifest_adds_up(big_set.store, dest, manifest, 400)
    assert 0 < manifest["kept"] < 400


def test_unreadable_and_missing_traces_are_rejected_by_name(small_set, tmp_path):
    src = copy_store(small_set, tmp_path / "damaged")
    broken = damage(src)
    dest = TraceStore(str(tmp_path / "curated"))
    manifest = run_filter(src, dest)
    assert manifest["removed"]["readable"] == 3
    assert manifest["total"] == small_set.samples * small_set.rollouts  # the missing file is counted too
    rows = {r["name"]: r for r in map(json.loads, dest.read_bytes("rejected.jsonl").decode().splitlines())}
    for name, why in broken.items():
        assert rows[name]["rule"] == "readable" and why in rows[name]["reason"]


def test_filtering_again_into_the_same_folder_leaves_no_stale_traces(small_set, tmp_path):
    dest = TraceStore(str(tmp_path / "curated"))
    loose = run_filter(small_set.store, dest, FilterConfig(min_reward=0.0, dedup_answers=False))
    strict = run_filter(small_set.store, dest, FilterConfig(min_reward=0.9))
    assert strict["kept"] < loose["kept"]
    assert strict["stale_removed"] == loose["kept"] - strict["kept"]
    assert len(dest.trace_names()) == strict["kept"]


def test_the_source_is_never_the_destination(small_set):
    with pytest.raises(ConfigError, match="is the source store"):
        run_filter(small_set.store, TraceStore(small_set.url + "/"))


def test_filter_and_split_on_s3_equal_the_local_run(small_set, s3, tmp_path):
    remote = s3.upload(small_set, "curate/traces")
    local = run_filter(small_set.store, TraceStore(str(tmp_path / "curated")))
    on_s3 = run_filter(remote, TraceStore(f"s3://{s3.bucket}/curate/curated", s3.options))
    assert (on_s3["kept"], on_s3["removed"]) == (local["kept"], local["removed"])
    curated = TraceStore(f"s3://{s3.bucket}/curate/curated", s3.options)
    assert curated.trace_names() == TraceStore(str(tmp_path / "curated")).trace_names()
    split_local = run_split(TraceStore(str(tmp_path / "curated")), TraceStore(str(tmp_path / "split")),
                            difficulty_source=small_set.store)
    split_s3 = run_split(curated, TraceStore(f"s3://{s3.bucket}/curate/split", s3.options), difficulty_source=remote)
    assert split_s3["counts"] == split_local["counts"]


# -- difficulty split -----------------------------------------------------------------------

def test_pass_rate_over_rollouts_rates_a_sample():
    config = SplitConfig()  # pass at reward 0.6; easy at a pass rate of 0.75, hard at 0.25 or less
    assert rate_sample(0, [0.9, 0.8, 0.7, 0.1], config).difficulty == "easy"
    assert rate_sample(0, [0.9, 0.8, 0.1, 0.1], config).difficulty == "medium"
    assert rate_sample(0, [0.9, 0.1, 0.1, 0.1], config).difficulty == "hard"
    assert rate_sample(0, [], config).difficulty == "unrated"


def test_one_rollout_is_rated_by_reward_bands():
    config = SplitConfig()
    assert [rate_sample(0, [r], config).difficulty for r in (0.85, 0.6, 0.3)] == ["easy", "medium", "hard"]
    assert rate_sample(0, [0.85], config).method == "reward_bands"


def test_thresholds_must_be_in_order():
    with pytest.raises(ValueError):
        SplitConfig(easy_min_pass_rate=0.3, hard_max_pass_rate=0.5)


def test_split_counts_add_up_and_every_sample_lands_in_one_bucket(small_set, tmp_path):
    dest = TraceStore(str(tmp_path / "split"))
    manifest = run_split(small_set.store, dest)
    counts = manifest["counts"]
    assert sum(c["traces"] for c in counts.values()) == manifest["total"] == small_set.samples * small_set.rollouts
    assert sum(c["samples"] for c in counts.values()) == small_set.samples
    samples_by_bucket = {}
    for bucket in ("easy", "medium", "hard"):
        names = dest.sub(bucket).trace_names()
        assert len(names) == counts[bucket]["traces"]
        samples_by_bucket[bucket] = {int(n[6:11]) for n in names}
        for name in names:
            assert dest.sub(bucket).read_bytes(name) == small_set.store.read_bytes(name)
    assert not (samples_by_bucket["easy"] & samples_by_bucket["medium"]) and \
        not (samples_by_bucket["medium"] & samples_by_bucket["hard"])
    difficulty = read_difficulty(dest)
    assert all(difficulty[s] == b for b, samples in samples_by_bucket.items() for s in samples)
    # the ratings agree with the rule applied to the raw files
    rows = direct_scan(small_set.url)
    for index, bucket in difficulty.items():
        rewards = [r["reward_score"] for r in rows if r["sample_index"] == index and r["error"] is None]
        rate = sum(x >= 0.6 for x in rewards) / len(rewards)
        assert bucket == ("easy" if rate >= 0.75 else "hard" if rate <= 0.25 else "medium")


def test_a_filtered_set_is_split_by_the_ratings_of_the_full_run(small_set, tmp_path):
    curated = TraceStore(str(tmp_path / "curated"))
    run_filter(small_set.store, curated)
    from_full = run_split(curated, TraceStore(str(tmp_path / "a")), difficulty_source=small_set.store)
    from_self = run_split(curated, TraceStore(str(tmp_path / "b")))
    assert read_difficulty(TraceStore(str(tmp_path / "a"))) != read_difficulty(TraceStore(str(tmp_path / "b")))
    assert sum(c["traces"] for c in from_full["counts"].values()) == len(curated.trace_names())
    assert from_self["counts"]["hard"]["traces"] <= from_full["counts"]["hard"]["traces"]


def test_single_rollout_sets_split_by_reward_bands(single_rollout_set, tmp_path):
    manifest = run_split(single_rollout_set.store, TraceStore(str(tmp_path / "split")))
    ratings = [json.loads(line) for line in
               TraceStore(str(tmp_path / "split")).read_bytes("difficulty.jsonl").decode().splitlines()]
    assert {r["method"] for r in ratings} == {"reward_bands"}
    assert sum(c["samples"] for c in manifest["counts"].values()) == single_rollout_set.samples


def test_split_reports_bad_traces_by_name_and_goes_on(small_set, tmp_path):
    src = copy_store(small_set, tmp_path / "damaged")
    broken = damage(src)
    manifest = run_split(src, TraceStore(str(tmp_path / "split")))
    assert manifest["unreadable"] == 3
    assert manifest["total"] == small_set.samples * small_set.rollouts
    for name, why in broken.items():
        assert any(p.startswith(name) and why in p for p in manifest["unreadable_traces"])
