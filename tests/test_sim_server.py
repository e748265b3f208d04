"""The simulated teacher, over real HTTP with the real ``openai`` client (no mocks)."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from geodistil import prompts
from geodistil.config import ToolsConfig
from geodistil.dialects import HERMES, NATIVE, ParsedCall, ToolCall, ToolCallProblem, dialect_named
from geodistil.images import image_data_url
from geodistil.scoring import haversine_km, parse_answer
from geodistil.sim import SimConfig, SimServer
from geodistil.sim.demo_data import demo_row
from geodistil.tools import build_tools, openai_tool_specs
from geodistil.tools.zoom import ZoomInTool

PYTHON = "python_code_tool"
PYTHON_SPEC = {"type": "function", "function": {
    "name": PYTHON, "description": "run Python on the image",
    "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}


def specs(names: tuple[str, ...] = ("image_zoom_in_tool", "image_rotate_tool")) -> list[dict[str, Any]]:
    """OpenAI tool specs from the registry (the python tool's spec written out: its module may be absent)."""
    image_tools = openai_tool_specs(build_tools(ToolsConfig(enabled=tuple(n for n in names if n != PYTHON))))
    return image_tools + ([PYTHON_SPEC] if PYTHON in names else [])


def first_messages(clues: str, image: Image.Image, tool_specs: list[dict[str, Any]] | None,
                   style: str = "hermes") -> list[dict[str, Any]]:
    """The opening of a conversation as ``geodistil.rollout`` sends it."""
    tools_block = dialect_named(style).prompt_block(tool_specs or [])
    return [
        {"role": "system", "content": prompts.SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(image).decode()}},
                                     {"type": "text", "text": prompts.user_text(clues, tools_block)}]},
    ]


def text_calls(content: str | None) -> list[ParsedCall]:
    """The text tool calls of a reply, as the rollout reads them."""
    return HERMES.read(content or "", None).calls


def ask(client: openai.OpenAI, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    return client.chat.completions.create(model="teacher", messages=messages, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(port=0, seed=7)) as server:
        yield server


@pytest.fixture(scope="module")
def client(sim: SimServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        yield c


def run_conversation(client: openai.OpenAI, clues: str, image: Image.Image, max_turns: int = 6) -> str:
    """Play the rollout's part: apply each tool call for real, send its image back, until an answer."""
    return converse(client, clues, image, max_turns)[0]


def converse(client: openai.OpenAI, clues: str, image: Image.Image, max_turns: int = 6) -> tuple[str, int]:
    """The final answer and the number of tool-call turns before it."""
    tool_specs = specs()
    messages = first_messages(clues, image, tool_specs)
    images = [image]
    for turn in range(max_turns):
        content = ask(client, messages).choices[0].message.content or ""
        calls = text_calls(content)
        if not calls:
            return content, turn
        messages.append({"role": "assistant", "content": content})
        parts: list[dict[str, Any]] = []
        for call in calls:
            assert isinstance(call, ToolCall)
            tool = build_tools(ToolsConfig())[call.name]
            out = tool.apply(images[int(call.arguments.get("image_index", 0))], call.arguments).image
            images.append(out)
            parts += [{"type": "image_url", "image_url": {"url": image_data_url(out).decode()}},
                      {"type": "text", "text": prompts.tool_response_text(call.name, len(images) - 1, out.size)}]
        messages.append({"role": "user", "content": parts})
    raise AssertionError("the simulated teacher never answered")


def test_answers_parse_and_are_near_the_truth_when_the_city_is_in_the_clues(client: openai.OpenAI) -> None:
    rows = [r for r in (demo_row(i, seed=0) for i in range(30)) if r.clue_level == "city"][:6]
    assert rows
    for row in rows:
        answer = run_conversation(client, row.clues, Image.open(io.BytesIO(row.image_jpeg)))
        prediction = parse_answer(answer)
        assert prediction is not None, answer
        assert haversine_km(*prediction, row.latitude, row.longitude) < 80


def test_vaguer_clues_give_larger_errors(client: openai.OpenAI) -> None:
    image = Image.new("RGB", (1024, 768), "gray")
    truth = (45.764, 4.836)  # Lyon
    errors = {}
    for clues in ("A road sign reads 'Lyon 5 km'.", "A temperate landscape somewhere in Europe."):
        distances = []
        for k in range(8):
            answer = run_conversation(client, f"{clues} Photo {k}.", image)
            prediction = parse_answer(answer)
            assert prediction is not None
            distances.append(haversine_km(*prediction, *truth))
        errors[clues] = sum(distances) / len(distances)
    assert errors["A road sign reads 'Lyon 5 km'."] < 30 < errors["A temperate landscape somewhere in Europe."]


def test_tool_calls_have_valid_boxes_for_the_sent_image_size(client: openai.OpenAI) -> None:
    zoom = ZoomInTool()
    boxes = 0
    for size in ((1024, 768), (333, 219), (60, 1000)):
        image = Image.new("RGB", size, "white")
        for k in range(25):
            messages = first_messages(f"A road sign reads 'Lyon {k} km'.", image, specs())
            content = ask(client, messages).choices[0].message.content or ""
            for call in text_calls(content):
                assert isinstance(call, ToolCall)
                if call.name == "image_zoom_in_tool":
                    x1, y1, x2, y2 = call.arguments["bbox_2d"]
                    assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
                    zoom.resolve_box(call.arguments["bbox_2d"], size)  # raises ToolError if invalid
                    boxes += 1
    assert boxes >= 10


def test_zoom_after_a_tool_output_uses_that_images_size_and_index(client: openai.OpenAI) -> None:
    original, crop = Image.new("RGB", (1024, 768), "white"), Image.new("RGB", (200, 150), "white")
    checked = 0
    for k in range(40):
        messages = first_messages(f"Signs say 'Nice {k} km'.", original, specs())
        messages += [{"role": "assistant", "content": "<tool_call>{}</tool_call>"},
                     {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(crop).decode()}},
                                                  {"type": "text", "text": "<tool_response>image 1</tool_response>"}]}]
        for call in text_calls(ask(client, messages).choices[0].message.content):
            if isinstance(call, ToolCall) and call.name == "image_zoom_in_tool":
                assert call.arguments["image_index"] == 1
                ZoomInTool().resolve_box(call.arguments["bbox_2d"], crop.size)
                checked += 1
    assert checked >= 1


def test_only_tools_named_in_the_text_tools_block_are_called(client: openai.OpenAI) -> None:
    image = Image.new("RGB", (640, 480), "white")
    names = set()
    for k in range(30):
        content = ask(client, first_messages(f"Clue {k}: Paris.", image, specs(("image_rotate_tool",))))\
            .choices[0].message.content
        names |= {c.name for c in text_calls(content) if isinstance(c, ToolCall)}
    assert names == {"image_rotate_tool"}


def test_without_offered_tools_it_answers_at_once(client: openai.OpenAI) -> None:
    image = Image.new("RGB", (640, 480), "white")
    for k in range(15):
        content = ask(client, first_messages(f"Clue {k}: Berlin.", image, None)).choices[0].message.content
        assert text_calls(content) == [] and parse_answer(content) is not None


def test_python_code_calls_carry_code_and_some_of_it_is_broken(client: openai.OpenAI) -> None:
    image = Image.new("RGB", (640, 480), "white")
    codes = []
    for k in range(60):
        content = ask(client, first_messages(f"Clue {k}: Madrid.", image, specs((PYTHON,))))\
            .choices[0].message.content
        codes += [c.arguments["code"] for c in text_calls(content) if isinstance(c, ToolCall)]

    def compiles(code: str) -> bool:
        try:
            compile(code, "<sim>", "exec")
        except SyntaxError:
            return False
        return True

    assert codes and all("result_image" in c or "print" in c for c in codes)
    assert any(compiles(c) and "result_image =" in c for c in codes)


def test_usage_is_reported(client: openai.OpenAI) -> None:
    reply = ask(client, first_messages("Paris", Image.new("RGB", (64, 64)), None))
    assert reply.usage is not None and reply.usage.prompt_tokens > 1000
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")


def test_models_lists_the_simulated_teacher(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["geodistil-sim"]


def test_a_request_without_messages_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        ask(client, [])


def test_tool_calls_option_fixes_the_number_of_tool_turns() -> None:
    with SimServer(SimConfig(port=0, tool_calls=2)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        for k in range(5):
            answer, tool_turns = converse(c, f"A road sign reads 'Oslo {k} km'.", Image.new("RGB", (640, 480)))
            assert tool_turns == 2 and parse_answer(answer) is not None


def test_429_carries_retry_after() -> None:
    with SimServer(SimConfig(port=0, rate_429=1.0)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        with pytest.raises(openai.RateLimitError) as caught:
            ask(c, first_messages("Paris", Image.new("RGB", (64, 64)), None))
        assert caught.value.response.headers["retry-after"] == "1"
        assert sim.stats()["429"] == 1


def test_rate_500_gives_500() -> None:
    with SimServer(SimConfig(port=0, rate_500=1.0)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as caught:
            ask(c, first_messages("Paris", Image.new("RGB", (64, 64)), None))
        assert caught.value.status_code == 500


def test_hang_gives_no_answer_until_the_client_gives_up() -> None:
    with SimServer(SimConfig(port=0, rate_hang=1.0)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0, timeout=1.0) as c:
        start = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            ask(c, first_messages("Paris", Image.new("RGB", (64, 64)), None))
        assert time.perf_counter() - start >= 0.9
        assert sim.stats()["hang"] == 1


def test_malformed_gives_unparseable_tool_json() -> None:
    with SimServer(SimConfig(port=0, rate_malformed=1.0)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        for k in range(5):
            content = ask(c, first_messages(f"Paris {k}", Image.new("RGB", (640, 480)), specs()))\
                .choices[0].message.content
            calls = text_calls(content)
            assert calls and all(isinstance(call, ToolCallProblem) for call in calls)
        assert sim.stats()["malformed"] == 5


def test_no_box_gives_no_boxed() -> None:
    with SimServer(SimConfig(port=0, rate_no_box=1.0)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        for k in range(5):
            content = ask(c, first_messages(f"Paris {k}", Image.new("RGB", (640, 480)), specs()))\
                .choices[0].message.content
            assert "\\boxed" not in content and parse_answer(content) is None
            assert text_calls(content) == []


def test_native_style_returns_tool_calls() -> None:
    with SimServer(SimConfig(port=0, tool_style="native")) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        found = []
        for k in range(20):
            messages = first_messages(f"Paris {k}", Image.new("RGB", (640, 480)), specs(), style="native")
            choice = ask(c, messages, tools=specs()).choices[0]
            assert "<tool_call>" not in (choice.message.content or "")
            if choice.message.tool_calls:
                assert choice.finish_reason == "tool_calls"
                raw = [tc.model_dump() for tc in choice.message.tool_calls]
                assert all(tc["type"] == "function" and tc["id"] for tc in raw)
                found += NATIVE.parse_tool_calls(raw)
        assert found and all(isinstance(call, ToolCall) for call in found)
        assert {call.name for call in found} <= {"image_zoom_in_tool", "image_rotate_tool"}


def test_native_style_calls_only_tools_the_request_offers() -> None:
    with SimServer(SimConfig(port=0, tool_style="native")) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        names = set()
        for k in range(30):
            messages = first_messages(f"Paris {k}", Image.new("RGB", (640, 480)), None, style="native")
            choice = ask(c, messages, tools=specs(("image_rotate_tool",))).choices[0]
            names |= {tc.function.name for tc in choice.message.tool_calls or []}
        assert names == {"image_rotate_tool"}


def test_stats_count_every_request() -> None:
    with SimServer(SimConfig(port=0, rate_429=0.3, rate_500=0.3)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        for k in range(20):
            try:
                ask(c, first_messages(f"Paris {k}", Image.new("RGB", (64, 64)), None))
            except (openai.RateLimitError, openai.InternalServerError):
                pass
        with pytest.raises(openai.BadRequestError):
            ask(c, [])
        stats = sim.stats()
    assert stats["requests"] == 21
    assert stats["ok"] + stats["429"] + stats["500"] + stats["bad_request"] == 21
    assert stats["429"] > 0 and stats["500"] > 0


@functools.cache
def _replies(seed: int) -> tuple[str, ...]:
    with SimServer(SimConfig(port=0, seed=seed)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        out = []
        for k in range(6):
            row = demo_row(k, seed=1)
            messages = first_messages(row.clues, Image.open(io.BytesIO(row.image_jpeg)), specs())
            out.append(ask(c, messages).choices[0].message.content or "")
            out.append(ask(c, messages).choices[0].message.content or "")  # a replay, same server
        return tuple(out)


def test_the_same_seed_and_request_give_the_same_reply() -> None:
    first, second = _replies(seed=11), _replies.__wrapped__(seed=11)  # two servers, one seed
    assert first == second
    assert first[0::2] == first[1::2]


def test_another_seed_gives_other_replies() -> None:
    assert _replies(seed=11) != _replies(seed=12)


def test_concurrent_requests_are_served_in_parallel() -> None:
    messages = first_messages("Rome", Image.new("RGB", (64, 64), "white"), specs())

    async def burst(base_url: str, n: int) -> list[str]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60) as c:
            calls = [c.chat.completions.create(model="t", messages=messages, seed=k)  # type: ignore[arg-type]
                     for k in range(n)]
            return [r.choices[0].message.content or "" for r in await asyncio.gather(*calls)]

    with SimServer(SimConfig(port=0, latency=1.0)) as sim:
        replies = asyncio.run(burst(sim.base_url, 200))
        stats = sim.stats()
    assert len(replies) == 200 and stats["requests"] == 200
    # each request sleeps 1 s inside the server, so this many at once means they overlapped
    # (wall time is not asserted: it measures the machine's load more than the server)
    assert stats["max_in_flight"] >= 150


def test_sim_server_runs_in_a_subprocess_too() -> None:
    with SimServer(SimConfig(port=0, seed=3), subprocess=True) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        content = ask(c, first_messages("Lyon", Image.new("RGB", (64, 64)), None)).choices[0].message.content
        assert parse_answer(content) is not None
        assert sim.stats()["requests"] == 1


def test_the_package_exports_what_it_means_to() -> None:
    import geodistil.sim

    assert sorted(geodistil.sim.__all__) == ["SimConfig", "SimServer", "create_app", "make_demo_dataset", "serve"]
    assert all(hasattr(geodistil.sim, name) for name in geodistil.sim.__all__)


def test_config_rejects_fault_rates_over_one() -> None:
    with pytest.raises(ValueError):
        SimConfig(rate_429=0.6, rate_500=0.6)
    assert json.loads(SimConfig().model_dump_json())["tool_style"] == "hermes"


def test_qwen3_xml_style_writes_xml_calls_that_the_dialect_reads() -> None:
    with SimServer(SimConfig(port=0, tool_style="qwen3_xml", tool_calls=1)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        for k in range(5):
            messages = first_messages(f"Paris {k}", Image.new("RGB", (640, 480)), specs(), style="qwen3_xml")
            content = ask(c, messages).choices[0].message.content
            assert "<function=" in content
            calls = dialect_named("qwen3_xml").read(content, None, specs()).calls
            assert calls and all(isinstance(call, ToolCall) and call.dialect == "qwen3_xml" for call in calls)


def test_native_style_writes_text_calls_when_the_request_has_no_tools() -> None:
    # a server runs its tool parser only for requests with tools: without them the calls stay text
    with SimServer(SimConfig(port=0, tool_style="native", tool_calls=1)) as sim, \
            openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        choice = ask(c, first_messages("Paris", Image.new("RGB", (640, 480)), specs())).choices[0]
        assert not choice.message.tool_calls and choice.finish_reason == "stop"
        assert text_calls(choice.message.content)


def test_think_is_off_unless_asked_also_in_a_subprocess() -> None:
    for think in (False, True):
        with SimServer(SimConfig(port=0, think=think), subprocess=True) as sim, \
                openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
            content = ask(c, first_messages("Lyon", Image.new("RGB", (64, 64)), None)).choices[0].message.content
            assert content.startswith("<think>") is think
