"""Aggregation: a store's summary agrees with a direct scan of its files, and bad files are named."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest

from geodistil.curate import run_split
from geodistil.geo import country_of
from geodistil.stats import SummaryBuilder, aggregate_store, run_aggregate, summarize
from geodistil.store import TraceStore
from geodistil.trace import LatLon, ToolCallRecord, Trace, TraceRecord
from tests.trace_sets import copy_store, damage, direct_scan

# the trace-set fixtures, shared by every module in the session (an import would make one per module)
pytest_plugins = ["tests.fixtures_traces"]


def expected_from_files(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["error"] is None]
    calls = Counter(c["tool_name"] for r in rows for c in r["tool_calls_log"])
    truth = [(r, country_of(r["ground_truth"]["lat"], r["ground_truth"]["lon"])) for r in ok]
    evaluated = [(r, c) for r, c in truth if c is not None]
    return {
        "total": len(rows),
        "success": len(ok),
        "failed": len(rows) - len(ok),
        "error_kinds": dict(Counter(r["error_kind"] for r in rows if r["error"] is not None)),
        "parse_success": sum(r["parse_success"] for r in ok),
        "mean_distance_km": statistics.fmean(r["distance_km"] for r in ok),
        "median_distance_km": statistics.median(r["distance_km"] for r in ok),
        "mean_reward": statistics.fmean(r["reward_score"] for r in ok),
        "accuracy": {f"{t}km": sum(r["distance_km"] <= t for r in ok) / len(ok) for t in (1, 25, 200, 750, 2500)},
        "country_accuracy": sum(r["prediction"] is not None and
                                country_of(r["prediction"]["lat"], r["prediction"]["lon"]) == c
                                for r, c in evaluated) / len(evaluated),
        "tool_calls": sum(calls.values()),
        "tool_calls_by_name": dict(calls),
        "tool_errors": sum(not c["success"] for r in rows for c in r["tool_calls_log"]),
        "traces_using": {name: sum(any(c["tool_name"] == name for c in r["tool_calls_log"]) for r in rows)
                         for name in calls},
        "turns": dict(Counter(str(r["num_turns"]) for r in ok)),
        "stop_reasons": dict(Counter(r["stop_reason"] for r in rows)),
        "prompt_tokens": sum(r["usage"]["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["usage"]["completion_tokens"] for r in rows),
        "max_latency": max(r["latency_s"] for r in rows),
    }


def assert_summary_matches_files(summary: dict, url: str) -> None:
    expected = expected_from_files(direct_scan(url))
    for key in ("total", "success", "failed", "error_kinds", "parse_success", "tool_calls", "tool_calls_by_name",
                "turns", "stop_reasons", "prompt_tokens", "completion_tokens"):
        assert summary[key] == expected[key], key
    for key in ("mean_distance_km", "median_distance_km", "mean_reward", "country_accuracy"):
        assert summary[key] == pytest.approx(expected[key]), key
    assert summary["mean_geoscore"] == pytest.approx(5000 * expected["mean_reward"])
    assert summary["accuracy"] == pytest.approx(expected["accuracy"])
    assert summary["tool_error_rate"] == pytest.approx(expected["tool_errors"] / expected["tool_calls"])
    for name, use in summary["tool_use"].items():
        assert use["traces"] == expected["traces_using"][name]
        assert use["share_of_traces"] == pytest.approx(expected["traces_using"][name] / expected["total"])
    assert summary["latency_s"]["max"] == pytest.approx(expected["max_latency"])
    assert summary["unreadable"] == 0


def test_summary_counts_equal_a_direct_scan_of_the_files(small_set):
    summary = aggregate_store(small_set.store)
    assert summary["total"] == small_set.samples * small_set.rollouts
    assert summary["failed"] > 0 and summary["parse_success"] < summary["success"]  # the set has faults to count
    assert_summary_matches_files(summary, small_set.url)


@pytest.mark.slow
def test_summary_counts_equal_a_direct_scan_on_100_samples_x_4_rollouts(big_set):
    summary = aggregate_store(big_set.store)
    assert summary["total"] == 400
    assert_summary_matches_files(summary, big_set.url)


def test_summary_on_s3_equals_the_local_one(small_set, s3):
    remote = s3.upload(small_set, "stats/traces")
    local, on_s3 = aggregate_store(small_set.store), aggregate_store(remote)
    assert {k: v for k, v in on_s3.items() if k != "store"} == {k: v for k, v in local.items() if k != "store"}
    run_aggregate(remote)
    assert remote.read_json("summary.json")["total"] == local["total"]
    assert remote.read_bytes("report.html").startswith(b"<!doctype html>")


def test_bad_traces_are_reported_by_name_and_skipped(small_set, tmp_path):
    store = copy_store(small_set, tmp_path / "damaged")
    broken = damage(store)
    summary = aggregate_store(store)
    assert summary["unreadable"] == 3
    assert summary["total"] == small_set.samples * small_set.rollouts - 3
    for name, why in broken.items():
        assert any(p.startswith(name) and why in p for p in summary["unreadable_traces"]), (name, summary)


def test_run_aggregate_keeps_the_generation_run_facts_and_writes_the_report(small_set, tmp_path):
    store = copy_store(small_set, tmp_path / "copy")
    fingerprint = store.read_json("summary.json")["dataset_fingerprint"]
    summary = run_aggregate(store)
    assert store.read_json("summary.json") == summary
    assert summary["dataset_fingerprint"] == fingerprint
    assert store.read_bytes("report.html").count(b'id="plot-') == 6


def test_a_split_store_is_summarised_per_difficulty(small_set, tmp_path):
    split = TraceStore(str(tmp_path / "split"))
    manifest = run_split(small_set.store, split)
    summary = aggregate_store(split)
    buckets = summary["by_difficulty"]
    assert {b: s["total"] for b, s in buckets.items()} == \
        {b: c["traces"] for b, c in manifest["counts"].items() if c["traces"] and b != "unrated"}
    assert summary["total"] == sum(s["total"] for s in buckets.values())


def make_trace(i, distance, reward, *, ok=True, parsed=True, truth=(48.8566, 2.3522), pred=None, tools=()):
    return Trace(dataset_path="d", dataset_fingerprint="f", sample_index=i, parse_success=parsed,
                 distance_km=distance, reward_score=reward, stop_reason="answered" if ok else "error",
                 error=None if ok else "boom", error_kind=None if ok else "teacher_error", num_turns=2,
                 ground_truth=LatLon(lat=truth[0], lon=truth[1]),
                 prediction=LatLon(lat=pred[0], lon=pred[1]) if pred else None,
                 tool_calls_log=[ToolCallRecord(index=k, turn=1, tool_name=n, success=s) for k, (n, s) in
                                 enumerate(tools)])


def test_accuracy_geoscore_and_country_on_hand_built_traces():
    traces = [
        make_trace(0, 0.5, 0.9997, pred=(48.86, 2.35)),  # Paris: same country, street level
        make_trace(1, 392.0, 0.769, pred=(45.76, 4.84)),  # Lyon: same country
        make_trace(2, 264.0, 0.838, pred=(50.85, 4.35)),  # Brussels: another country
        make_trace(3, 20000.0, 0.0, parsed=False),  # no answer: counts against every accuracy
        make_trace(4, 20000.0, 0.0, ok=False),  # failed: not in the accuracies at all
    ]
    s = summarize(traces)
    assert (s["total"], s["success"], s["failed"], s["parse_success"]) == (5, 4, 1, 3)
    assert s["accuracy"] == {"1km": 0.25, "25km": 0.25, "200km": 0.25, "750km": 0.75, "2500km": 0.75}
    assert s["country_accuracy"] == pytest.approx(2 / 4)
    assert s["mean_geoscore"] == pytest.approx(5000 * (0.9997 + 0.769 + 0.838) / 4)


def test_tool_use_counts_traces_calls_and_failures_per_tool():
    traces = [make_trace(0, 1, 1, tools=[("zoom", True), ("zoom", False)]), make_trace(1, 1, 1, tools=[("rotate", True)]),
              make_trace(2, 1, 1)]
    use = summarize(traces)["tool_use"]
    assert use["zoom"] == {"traces": 1, "share_of_traces": 1 / 3, "calls": 2, "calls_per_trace": 2 / 3,
                           "errors": 1, "error_rate": 0.5}
    assert use["rotate"]["errors"] == 0


def test_records_give_the_same_counts_as_traces_but_no_country_accuracy(small_set):
    traces = [t for _, t in small_set.store.iter_traces()]
    from_traces = summarize(traces)
    builder = SummaryBuilder()
    for t in traces:
        builder.add(TraceRecord.of(t, ""))
    from_records = builder.result()
    for key in ("total", "success", "failed", "parse_success", "accuracy", "tool_calls_by_name", "turns",
                "tokens", "distance_cdf"):
        assert from_records[key] == from_traces[key], key
    assert from_records["country_accuracy"] is None and from_traces["country_accuracy"] is not None


def test_distance_cdf_and_reward_histogram_describe_the_successful_traces(small_set):
    s = aggregate_store(small_set.store)
    cdf = s["distance_cdf"]
    assert cdf["km"][0] == 1 and cdf["km"][-1] == pytest.approx(20000)
    assert cdf["share"] == sorted(cdf["share"]) and cdf["share"][-1] == 1.0
    assert sum(s["reward_histogram"]["counts"]) == s["success"]
