"""Rollouts in each tool-call dialect, end to end: the simulated teacher over HTTP, the real client,
the tools, the trace store and replay. Also replies in a dialect other than the selected one, and
replies that think in ``<think>`` before they act."""

from __future__ import annotations

import asyncio

import pytest

from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.generate import generate
from geodistil.replay import verify_trace
from geodistil.sim import SimConfig, SimServer, make_demo_dataset
from geodistil.store import StorageSpec, TraceStore
from geodistil.trace import Trace

SAMPLES = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    return make_demo_dataset(str(tmp_path_factory.mktemp("demo") / "data"), SAMPLES, seed=5)


def run(demo: str, out, teacher_dialect: str, sim: SimConfig) -> list[Trace]:
    """Every sample rolled out against a simulated teacher configured by ``sim``; the traces in order."""
    with SimServer(sim) as server:
        settings = RolloutSettings(
            teacher=TeacherConfig(base_url=server.base_url, tool_style=teacher_dialect, max_retries=2, timeout_s=30),
            generation=GenerationConfig(max_concurrency=4))
        asyncio.run(generate(DatasetSpec(path=demo), StorageSpec(url=str(out)), settings))
    traces = [trace for _, trace in TraceStore(str(out)).iter_traces()]
    assert len(traces) == SAMPLES
    return traces


def calls_of(traces: list[Trace]):
    return [call for trace in traces for call in trace.tool_calls_log]


@pytest.mark.parametrize("dialect", ["hermes", "qwen3_xml", "native"])
def test_a_rollout_in_each_dialect_runs_its_tools_answers_and_replays(demo, tmp_path, dialect):
    traces = run(demo, tmp_path, dialect, SimConfig(port=0, seed=2, tool_style=dialect, tool_calls=1))
    assert all(t.ok and t.stop_reason == "answered" and t.answer_format == "boxed" for t in traces)
    calls = calls_of(traces)
    assert calls and {c.dialect for c in calls} == {dialect}
    assert any(c.success for c in calls)
    assert all(verify_trace(t).ok for t in traces)
    tool_messages = [m for t in traces for m in t.messages if m.role == "tool"]
    assert bool(tool_messages) == (dialect == "native")  # only native results travel in tool messages


def test_qwen3_xml_replies_are_run_while_hermes_is_selected_and_recorded_as_qwen3_xml(demo, tmp_path):
    traces = run(demo, tmp_path, "hermes", SimConfig(port=0, seed=2, tool_style="qwen3_xml", tool_calls=1))
    calls = calls_of(traces)
    assert calls and {c.dialect for c in calls} == {"qwen3_xml"} and any(c.success for c in calls)
    assert all(t.teacher.tool_style == "hermes" for t in traces)


def test_hermes_text_is_run_while_native_is_selected_and_the_server_has_no_tool_parser(demo, tmp_path):
    # vLLM without --tool-call-parser: the request carries tools, the reply carries the calls as text
    traces = run(demo, tmp_path, "native", SimConfig(port=0, seed=2, tool_style="hermes", tool_calls=1))
    calls = calls_of(traces)
    assert calls and {c.dialect for c in calls} == {"hermes"} and any(c.success for c in calls)
    assert not [m for t in traces for m in t.messages if m.role == "tool"]  # no call ids to answer


def test_thinking_is_kept_apart_and_calls_and_answers_drafted_in_it_do_not_count(demo, tmp_path):
    # every reply opens with <think> drafting a rotate call and \boxed{0.0, 0.0}
    traces = run(demo, tmp_path, "hermes", SimConfig(port=0, seed=2, tool_calls=1, think=True))
    for trace in traces:
        assistant = [m for m in trace.messages if m.role == "assistant"]
        assert all(m.reasoning and "<think>" not in (m.content or "") for m in assistant)
        # the sim plans one tool turn, then answers: a drafted call run would add a turn
        assert trace.stop_reason == "answered" and trace.num_turns == 2
        assert {c.turn for c in trace.tool_calls_log} == {1}
        assert trace.prediction is not None and (trace.prediction.lat, trace.prediction.lon) != (0.0, 0.0)
