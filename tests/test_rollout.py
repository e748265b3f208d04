"""The turn logic of one rollout, driven by a scripted teacher in process (fast: no server, no HTTP).

``ScriptedTeacher`` stands in for geodistil's ``TeacherClient`` (not for the openai client): it
replies with the messages a test scripts and keeps every request it was sent, so a test can
show what the teacher saw. The end-to-end rollouts over the simulated teacher are in
test_dialect_rollouts.py and test_teacher_flow.py.
"""

from __future__ import annotations

import asyncio
import errno
import json
from typing import Any, ClassVar

import pytest
from PIL import Image

import geodistil.sandbox
from geodistil.config import (
    GenerationConfig,
    RolloutSettings,
    TeacherConfig,
    ToolsConfig,
)
from geodistil.data import DatasetSpec, open_dataset
from geodistil.errors import (
    SandboxError,
    StoreError,
    TeacherError,
    TeacherLimitReached,
    error_class,
)
from geodistil.generate import FailFast, is_retryable, is_unfinished, run_one
from geodistil.profiles import PROFILES
from geodistil.rollout import NUDGE, Rollout, RolloutContext, rollout
from geodistil.sim import make_demo_dataset
from geodistil.store import TraceStore
from geodistil.teacher import TeacherReply
from geodistil.tools import build_tools
from geodistil.tools.base import ToolOutput
from geodistil.trace import TraceRecord, Usage

ANSWER = "It is Paris. \\boxed{48.8566, 2.3522}"
ZOOM = {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 200, 200]}}


class ScriptedTeacher:
    """Replies in order from ``script`` (a reply's text, a ``TeacherReply``, or an error to raise);
    ``sent`` keeps each request's messages as the teacher received them."""

    def __init__(self, script: list[str | TeacherReply | Exception], dialect: str = "hermes") -> None:
        self.script = list(script)
        self.profile = PROFILES["vllm" if dialect == "hermes" else "openai"]
        self.inference = None  # nothing learnt about a server: the trace keeps the configured provenance
        self.sent: list[list[dict[str, Any]]] = []

    async def server_profile(self):
        return self.profile

    async def complete(self, messages, generation, tools=None, seed=None) -> TeacherReply:
        self.sent.append(json.loads(bytes(messages)))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, str):
            step = reply(step)
        return step

    async def close(self) -> None:
        pass


def reply(content: str, tool_calls: list[dict[str, Any]] | None = None) -> TeacherReply:
    return TeacherReply(content=content, tool_calls=tool_calls, reasoning=None, finish_reason="stop",
                        usage=Usage(prompt_tokens=100, completion_tokens=10, total_tokens=110, requests=1),
                        latency_s=0.01)


def hermes(call: dict[str, Any]) -> str:
    return f"Let me look closer.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return open_dataset(DatasetSpec(path=make_demo_dataset(str(tmp_path_factory.mktemp("demo") / "data"), 2, seed=3)))


def context(teacher: ScriptedTeacher, tool_style: str = "hermes", max_turns: int = 4, max_images: int = 12,
            tools: dict[str, Any] | None = None) -> RolloutContext:
    settings = RolloutSettings(teacher=TeacherConfig(base_url="http://teacher.invalid/v1", tool_style=tool_style),
                               generation=GenerationConfig(max_turns=max_turns),
                               tools=ToolsConfig(max_images=max_images))
    return RolloutContext(settings, teacher, tools if tools is not None else build_tools(settings.tools))  # type: ignore[arg-type]


def run(dataset, teacher: ScriptedTeacher, **options: Any):
    return asyncio.run(rollout(dataset, 0, 0, context(teacher, **options)))


def texts(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def test_an_answer_on_the_first_turn_ends_the_conversation_scored(dataset):
    teacher = ScriptedTeacher([ANSWER])
    trace = run(dataset, teacher)
    assert (trace.stop_reason, trace.num_turns, trace.parse_success) == ("answered", 1, True)
    assert [m.role for m in trace.messages] == ["system", "user", "assistant"]
    assert trace.prediction.lat == pytest.approx(48.8566) and trace.distance_km is not None
    assert trace.usage.requests == 1 and len(teacher.sent) == 1 and trace.error is None


def test_a_tool_call_then_an_answer_records_the_call_and_sends_its_image_back(dataset):
    teacher = ScriptedTeacher([hermes(ZOOM), ANSWER])
    trace = run(dataset, teacher)
    assert (trace.stop_reason, trace.num_turns) == ("answered", 2)
    [call] = trace.tool_calls_log
    assert call.success and call.tool_name == "image_zoom_in_tool" and (call.input_ref, call.output_ref) == (0, 1)
    assert call.output_sha256 == trace.images[1].sha256
    result = teacher.sent[1][-1]  # what the teacher got back: the tool's text and its image
    assert result["role"] == "user" and "image_zoom_in_tool returned image 1" in texts(result)
    assert any(p.get("type") == "image_url" for p in result["content"])


def test_the_nudge_asks_for_the_answer_after_a_reply_without_one_but_not_at_the_last_turn(dataset):
    teacher = ScriptedTeacher(["Hmm, Europe somewhere.", "Still thinking.", "No idea."])
    trace = run(dataset, teacher, max_turns=3)
    assert (trace.stop_reason, trace.num_turns, trace.parse_success) == ("max_turns", 3, False)
    roles = [(m.role, m.content) for m in trace.messages[2:]]
    assert roles == [("assistant", "Hmm, Europe somewhere."), ("user", NUDGE), ("assistant", "Still thinking."),
                     ("user", NUDGE), ("assistant", "No idea.")]  # no nudge after the last turn
    assert texts(teacher.sent[1][-1]) == NUDGE


def test_a_nudged_teacher_that_answers_ends_answered(dataset):
    trace = run(dataset, ScriptedTeacher(["Europe, I think.", ANSWER]))
    assert (trace.stop_reason, trace.num_turns, trace.parse_success) == ("answered", 2, True)


def test_the_image_cap_refuses_the_call_as_a_tool_error_and_ends_with_image_limit(dataset):
    teacher = ScriptedTeacher([hermes(ZOOM), hermes(ZOOM), hermes(ZOOM)])
    trace = run(dataset, teacher, max_turns=3, max_images=2)  # ref 0 and one tool output
    first, second, third = trace.tool_calls_log
    assert first.success and not second.success and not third.success
    assert second.error == "image limit of 2 reached; answer now"
    assert len(trace.images) == 2 and trace.stop_reason == "image_limit"
    assert "image limit of 2 reached" in texts(teacher.sent[2][-1])  # the teacher is told, and may answer


def test_a_malformed_tool_call_goes_back_as_a_tool_error_and_the_teacher_recovers(dataset):
    broken = "<tool_call>\n{\"name\": \"image_zoom_in_tool\", \"arguments\": {\"bbox_2d\": [0, 0,\n</tool_call>"
    teacher = ScriptedTeacher([broken, hermes(ZOOM), ANSWER])
    trace = run(dataset, teacher)
    bad, good = trace.tool_calls_log
    assert not bad.success and bad.error and bad.output_ref is None
    assert good.success and good.output_ref == 1
    assert (trace.stop_reason, trace.num_turns) == ("answered", 3)
    assert "Error from" in texts(teacher.sent[1][-1])


def test_native_calls_answer_in_tool_messages_with_their_ids(dataset):
    call = {"id": "call_1", "type": "function",
            "function": {"name": ZOOM["name"], "arguments": json.dumps(ZOOM["arguments"])}}
    teacher = ScriptedTeacher([reply("", [call]), ANSWER], dialect="native")
    trace = run(dataset, teacher, tool_style="native")
    [record] = trace.tool_calls_log
    assert record.success and record.dialect == "native" and record.call_id == "call_1"
    tool_message = next(m for m in teacher.sent[1] if m["role"] == "tool")
    assert tool_message["tool_call_id"] == "call_1" and "returned image 1" in tool_message["content"]
    assert trace.stop_reason == "answered"


def test_text_dialect_calls_answer_in_a_user_message_and_send_no_tool_messages(dataset):
    teacher = ScriptedTeacher([hermes(ZOOM), ANSWER])
    trace = run(dataset, teacher, tool_style="hermes")
    assert trace.tool_calls_log[0].dialect == "hermes"
    assert not any(m["role"] == "tool" for m in teacher.sent[1])
    assert "<tool_response>" in texts(teacher.sent[1][-1])


def test_a_context_limit_ends_with_its_stop_reason_and_a_last_request_without_the_images(dataset):
    limit = TeacherLimitReached("too long", "context_length", 400)
    teacher = ScriptedTeacher([hermes(ZOOM), limit, ANSWER])
    trace = run(dataset, teacher)
    assert trace.stop_reason == "context_length" and trace.parse_success and trace.error is None
    last_request = texts(teacher.sent[2][-1])
    assert "(The images could not be sent.)" in last_request and NUDGE in last_request


def test_a_teacher_failure_is_an_error_trace_with_the_kind_of_its_class(dataset):
    trace = run(dataset, ScriptedTeacher([TeacherError("teacher answered HTTP 503", kind="http_503")]))
    assert (trace.stop_reason, trace.error_kind) == ("error", "teacher_error:http_503")
    assert error_class(trace.error_kind) is TeacherError


def test_the_rollout_object_owns_the_conversation_and_the_trace_it_builds(dataset):
    run_ = Rollout(dataset, 1, 0, context(ScriptedTeacher([hermes(ZOOM), ANSWER])))
    trace = asyncio.run(run_.run())
    assert trace is run_.trace and trace.sample_index == 1
    assert trace.messages == run_.convo.stored and len(run_.convo.images) == len(trace.images) == 2


# infrastructure failures: the machine's, not the teacher's ------------------------------------
class BrokenSandboxTool:
    """A tool whose sandbox breaks mid-job, as ``geodistil.sandbox`` reports it."""

    name = "python_code_tool"
    description = "run code"
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}

    def apply(self, image: Image.Image, arguments: dict[str, Any]) -> ToolOutput:
        raise SandboxError("a sandbox worker failed and was replaced: BrokenPipeError: [Errno 32] Broken pipe")

    def settings(self) -> dict[str, Any]:
        return {}


CODE = {"name": "python_code_tool", "arguments": {"code": "result_image = image"}}


def test_a_broken_sandbox_ends_the_sample_retryably_and_is_never_shown_to_the_teacher(dataset):
    teacher = ScriptedTeacher([hermes(CODE), ANSWER])
    trace = run(dataset, teacher, tools={"python_code_tool": BrokenSandboxTool()})
    assert (trace.stop_reason, trace.error_kind) == ("error", "sandbox_error")
    assert trace.error == ("sample 0: the code sandbox failed: a sandbox worker failed and was replaced: "
                           "BrokenPipeError: [Errno 32] Broken pipe")
    assert len(teacher.sent) == 1  # the teacher never saw the failure as its code's mistake
    record = TraceRecord.of(trace, "trace_00000.json")
    assert is_retryable(record) and is_unfinished(record)


def test_a_sandbox_that_cannot_start_ends_the_sample_and_stops_the_run(dataset, monkeypatch):
    monkeypatch.setattr(geodistil.sandbox.sys, "platform", "darwin")  # the real tool, on a machine it refuses
    teacher = ScriptedTeacher([hermes(CODE), ANSWER])
    trace = run(dataset, teacher, tools=build_tools(ToolsConfig()))
    monkeypatch.undo()
    assert (trace.stop_reason, trace.error_kind) == ("error", "sandbox_unavailable")
    assert "\n" not in trace.error and "the code sandbox needs Linux" in trace.error
    assert len(teacher.sent) == 1 and trace.tool_calls_log == []
    record = TraceRecord.of(trace, "trace_00000.json")
    assert not is_retryable(record) and is_unfinished(record)  # a re-run on a fixed machine generates it
    fail_fast = FailFast(after=3)
    fail_fast.add(record)
    assert fail_fast.reason == trace.error  # the run stops starting samples, with that one line


def test_a_full_disk_stops_with_a_store_error_naming_the_sample(dataset, tmp_path):
    class FullStore(TraceStore):
        def write_bytes(self, name: str, data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", name)

    store = FullStore(str(tmp_path / "out"))
    ctx = context(ScriptedTeacher([ANSWER]))
    with pytest.raises(StoreError) as raised:
        asyncio.run(run_one(dataset, 0, 0, ctx, store))
    assert str(raised.value) == f"cannot write the trace of sample 0 to {store.url}: No space left on device"
    assert raised.value.stops_run and not raised.value.retryable
