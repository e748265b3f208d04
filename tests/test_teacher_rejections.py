"""Each kind of 4xx a real teacher answers, end to end over HTTP against the simulator's emulation:
the stop reason or error it leaves, the requests it costs, and what a re-run sends again."""

import asyncio

import pytest

from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig, ToolsConfig
from geodistil.data import DatasetSpec
from geodistil.generate import generate
from geodistil.sim import SimConfig, SimServer
from geodistil.store import SampleRange, StorageSpec, TraceStore

ZOOM_ONLY = ToolsConfig(enabled=("image_zoom_in_tool",))  # every tool call adds an image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from geodistil.sim.demo_data import make_demo_dataset

    return make_demo_dataset(str(tmp_path_factory.mktemp("d") / "demo"), n=6, seed=11)


def run(dataset: str, out, base_url: str, n: int = 4, concurrency: int = 2, teacher: dict | None = None,
        **generation) -> dict:
    settings = RolloutSettings(
        teacher=TeacherConfig(base_url=base_url, model="sim", max_retries=2, backoff_base_s=0.01, timeout_s=20,
                              **(teacher or {})),
        generation=GenerationConfig(max_concurrency=concurrency, **generation), tools=ZOOM_ONLY)
    return asyncio.run(generate(DatasetSpec(path=dataset), StorageSpec(url=str(out)), settings,
                                SampleRange(num_samples=n)))


def traces(out) -> list:
    return [t for _, t in TraceStore(str(out)).iter_traces()]


def test_a_context_overflow_ends_the_conversation_with_a_last_answer_and_is_never_retried(dataset, tmp_path):
    # one image and the prompt fit, a second image does not: turn 2 overflows
    sim = SimConfig(port=0, profile="vllm", max_context_tokens=2200, tool_calls=1, seed=1)
    with SimServer(sim) as server:
        run(dataset, tmp_path, server.base_url, max_tokens=64)
        first = server.stats()
        run(dataset, tmp_path, server.base_url, max_tokens=64)
        again = server.stats()
    done = traces(tmp_path)
    assert [t.stop_reason for t in done] == ["context_length"] * 4
    assert all(t.ok and t.error_kind is None for t in done)
    assert all(t.parse_success for t in done)  # the last request, without the new image, got the answer
    assert first["context_length"] == 4 and first["requests"] == 3 * 4  # tool call, refused, last answer
    assert sum(t.usage.requests for t in done) == first["requests"]  # the refused ones included
    assert again["requests"] == first["requests"]  # a re-run sends nothing for them


def test_an_image_limit_ends_the_conversation_with_a_last_answer_and_is_never_retried(dataset, tmp_path):
    sim = SimConfig(port=0, profile="vllm", max_images_per_prompt=1, tool_calls=1, seed=2)
    with SimServer(sim) as server:
        run(dataset, tmp_path, server.base_url)
        first = server.stats()
        run(dataset, tmp_path, server.base_url)
        again = server.stats()
    done = traces(tmp_path)
    assert [t.stop_reason for t in done] == ["image_limit"] * 4
    assert all(t.ok and t.parse_success for t in done)
    assert first["image_limit"] == 4 and first["requests"] == 3 * 4
    assert again["requests"] == first["requests"]


def test_refused_parameters_are_corrected_once_for_the_run_and_recorded(dataset, tmp_path):
    # the openai profile sends max_tokens and temperature, which OpenAI's reasoning models refuse
    with SimServer(SimConfig(port=0, profile="openai-reasoning", seed=3)) as server:
        run(dataset, tmp_path, server.base_url, concurrency=4, teacher={"profile": "openai"})
        first = server.stats()
        run(dataset, tmp_path, server.base_url, concurrency=4, teacher={"profile": "openai"})
        again = server.stats()
    done = traces(tmp_path)
    assert all(t.ok for t in done)
    assert first["refused_param"] == 2  # max_tokens, then temperature: once each for all conversations
    assert {tuple(t.teacher.param_corrections) for t in done} == {(
        "max_tokens refused (unsupported_parameter): sending max_completion_tokens",
        "temperature=0.7 refused (unsupported_value): left out, the server's default applies")}
    assert sum(t.usage.requests for t in done) == first["requests"]
    assert again["requests"] == first["requests"]


def test_a_wrong_key_stops_the_run_after_three_samples_and_a_rerun_with_the_right_key_retries_them(
        dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SIM_TEACHER_KEY", "wrong")
    key = {"api_key_env": "SIM_TEACHER_KEY"}
    with SimServer(SimConfig(port=0, api_key="right", seed=4)) as server:
        summary = run(dataset, tmp_path, server.base_url, n=6, concurrency=1, teacher=key)
        refused = server.stats()
        monkeypatch.setenv("SIM_TEACHER_KEY", "right")
        fixed = run(dataset, tmp_path, server.base_url, n=6, concurrency=1, teacher=key)
    assert refused["requests"] == refused["unauthorized"] == 3  # one request each, no retry, then the stop
    assert summary["stopped"].startswith("stopped: the teacher rejected the first 3 samples alike (teacher_auth:http_401)")
    assert summary["total"] == 3
    assert "stopped" not in fixed and fixed["success"] == 6 and fixed["generated"] == 6


def test_a_bad_request_is_neither_retried_nor_generated_again_by_a_rerun(dataset, tmp_path):
    # the simulator refuses to stream with a plain 400, as a server refuses a request it cannot take
    teacher = {"extra_body": {"stream": True}}
    with SimServer(SimConfig(port=0, seed=5)) as server:
        summary = run(dataset, tmp_path, server.base_url, n=6, concurrency=1, teacher=teacher)
        first = server.stats()
        run(dataset, tmp_path, server.base_url, n=3, concurrency=1, teacher=teacher)
        again = server.stats()
    assert first["requests"] == first["bad_request"] == 3 and summary["stopped"]
    assert [t.error_kind for t in traces(tmp_path)] == ["teacher_rejected:http_400"] * 3
    assert again["requests"] == first["requests"]
