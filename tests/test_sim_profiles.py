"""Each server profile end to end over HTTP against the simulator emulating that server:
``auto`` recognises it, the parameters sent are all accepted, and its tool-call dialect is spoken."""

import asyncio
import subprocess
import sys

import httpx
import pytest

from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.generate import generate
from geodistil.sim import SimConfig, SimServer
from geodistil.store import SampleRange, StorageSpec, TraceStore


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from geodistil.sim.demo_data import make_demo_dataset

    return make_demo_dataset(str(tmp_path_factory.mktemp("d") / "demo"), n=3, seed=12)


@pytest.mark.parametrize("profile, model, style, optional", [
    ("vllm", "Qwen/Qwen2.5-VL-7B-Instruct", "hermes", {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}),
    ("sglang", "Qwen/Qwen2.5-VL-7B-Instruct", "hermes", {"repetition_penalty": 1.05}),
    ("openai", "gpt-4.1", "native", {}),
    ("openai-reasoning", "o3", "native", {"reasoning_effort": "low"}),
    ("gemini", "gemini-2.5-flash", "native", {"reasoning_effort": "low"}),
    ("llama-cpp", "qwen2.5-vl-3b.gguf", "hermes", {"top_k": 40, "repetition_penalty": 1.1}),
])
def test_auto_talks_to_each_emulated_server_with_parameters_it_accepts(dataset, tmp_path, profile, model, style,
                                                                        optional):
    with SimServer(SimConfig(port=0, profile=profile, tool_calls=1, seed=5)) as server:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=server.base_url, model=model, timeout_s=20),
                                   generation=GenerationConfig(max_concurrency=3, **optional))
        asyncio.run(generate(DatasetSpec(path=dataset), StorageSpec(url=str(tmp_path)), settings,
                             SampleRange(num_samples=3)))
        stats = server.stats()
    done = [t for _, t in TraceStore(str(tmp_path)).iter_traces()]
    assert stats["refused_param"] == 0
    assert all(t.ok and t.teacher.profile == profile and t.teacher.tool_style == style for t in done)
    assert all(t.tool_calls_log for t in done)  # the tool call was read in the server's dialect
    assert stats["tool_calls"] == 3


@pytest.mark.parametrize("profile", ["vllm", "sglang", "openai", "openai-reasoning", "gemini", "llama-cpp"])
def test_each_emulated_servers_context_overflow_ends_the_conversation(dataset, tmp_path, profile):
    # the opening request alone is over the limit: nothing to leave out, the conversation ends there
    with SimServer(SimConfig(port=0, profile=profile, max_context_tokens=500, seed=7)) as server:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=server.base_url, model="m", profile=profile,
                                                         timeout_s=20))
        asyncio.run(generate(DatasetSpec(path=dataset), StorageSpec(url=str(tmp_path)), settings,
                             SampleRange(num_samples=2)))
        stats = server.stats()
    done = [t for _, t in TraceStore(str(tmp_path)).iter_traces()]
    assert [(t.stop_reason, t.error_kind, t.usage.requests) for t in done] == [("context_length", None, 1)] * 2
    assert stats["requests"] == stats["context_length"] == 2


@pytest.mark.parametrize("profile", ["vllm", "llama-cpp", "openai", "gemini"])
def test_each_emulated_servers_answer_to_a_wrong_key_is_an_auth_error(dataset, tmp_path, profile, monkeypatch):
    monkeypatch.setenv("SIM_KEY", "wrong")
    with SimServer(SimConfig(port=0, profile=profile, api_key="right")) as server:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=server.base_url, model="m", profile=profile,
                                                         api_key_env="SIM_KEY", timeout_s=20))
        asyncio.run(generate(DatasetSpec(path=dataset), StorageSpec(url=str(tmp_path)), settings,
                             SampleRange(num_samples=1)))
    (_, trace), = TraceStore(str(tmp_path)).iter_traces()
    assert trace.error_kind.startswith("teacher_auth:")


def test_the_emulated_vllm_announces_its_context_limit_and_owner():
    with SimServer(SimConfig(port=0, profile="vllm", max_context_tokens=8192)) as server:
        entry = httpx.get(f"{server.base_url}/models").json()["data"][0]
    assert entry["owned_by"] == "vllm" and entry["max_model_len"] == 8192


def test_the_emulated_llama_cpp_tells_its_context_in_props():
    with SimServer(SimConfig(port=0, profile="llama-cpp", max_context_tokens=2048)) as server:
        props = httpx.get(f"{server.url}/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 2048


def test_the_emulated_vllm_returns_reasoning_content_and_the_trace_keeps_it(dataset, tmp_path):
    with SimServer(SimConfig(port=0, profile="vllm", reasoning=True, seed=6)) as server:
        settings = RolloutSettings(teacher=TeacherConfig(base_url=server.base_url, model="m", timeout_s=20))
        asyncio.run(generate(DatasetSpec(path=dataset), StorageSpec(url=str(tmp_path)), settings,
                             SampleRange(num_samples=1)))
    (_, trace), = TraceStore(str(tmp_path)).iter_traces()
    assert all(m.reasoning for m in trace.messages if m.role == "assistant")


def test_an_image_limit_is_only_emulated_for_a_server_that_has_one():
    with pytest.raises(ValueError, match="no per-prompt image limit"):
        SimConfig(profile="openai", max_images_per_prompt=2)


def test_an_unknown_profile_is_named_in_one_line_by_the_sim_command():
    result = subprocess.run([sys.executable, "-m", "geodistil.cli", "sim", "--profile", "vlm"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert result.stdout.strip().startswith("profile: Input should be 'vllm'")
