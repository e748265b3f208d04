import json

from geodistil.toolcalls import (
    ToolCall, ToolCallProblem, parse_native_tool_calls, parse_text_tool_calls, strip_tool_calls,
)


def test_text_calls_are_read_in_order():
    text = ('Let me look. <tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 50, 60]}}'
            '</tool_call> and <tool_call>\n{"name": "image_rotate_tool", "arguments": {"angle": 90}}\n</tool_call>')
    calls = parse_text_tool_calls(text)
    assert calls == [ToolCall("image_zoom_in_tool", {"bbox_2d": [1, 2, 50, 60]}),
                     ToolCall("image_rotate_tool", {"angle": 90})]


def test_flat_python_call_is_accepted():
    calls = parse_text_tool_calls('<tool_call>{"name": "python_code_tool", "code": "result_image = image"}</tool_call>')
    assert calls == [ToolCall("python_code_tool", {"code": "result_image = image"})]


def test_malformed_json_becomes_a_problem_not_an_exception():
    [call] = parse_text_tool_calls('<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2</tool_call>')
    assert isinstance(call, ToolCallProblem)
    assert "not valid JSON" in call.error


def test_unclosed_last_call_is_still_read():
    [call] = parse_text_tool_calls('<tool_call>{"name": "image_rotate_tool", "arguments": {"angle": 5}}')
    assert call == ToolCall("image_rotate_tool", {"angle": 5})


def test_missing_name_and_non_object_arguments_are_problems():
    calls = parse_text_tool_calls('<tool_call>{"arguments": {}}</tool_call><tool_call>{"name": "x", "arguments": [1]}</tool_call>')
    assert all(isinstance(c, ToolCallProblem) for c in calls) and len(calls) == 2


def test_native_calls_parse_and_keep_their_id():
    native = [{"id": "c1", "type": "function",
               "function": {"name": "image_rotate_tool", "arguments": json.dumps({"angle": 30})}},
              {"id": "c2", "type": "function", "function": {"name": "image_zoom_in_tool", "arguments": "{bad"}}]
    ok, bad = parse_native_tool_calls(native)
    assert ok == ToolCall("image_rotate_tool", {"angle": 30}, call_id="c1")
    assert isinstance(bad, ToolCallProblem) and bad.call_id == "c2"


def test_no_calls_in_plain_answer():
    assert parse_text_tool_calls(r"It is Paris. \boxed{48.85, 2.35}") == []
    assert strip_tool_calls('a <tool_call>{}</tool_call> b') == "a  b"
