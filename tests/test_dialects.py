"""Tool-call dialects: parsing (odd forms included), prompt block, request tools, result messages,
training render and viewer marks, per dialect, and replies in a dialect other than the selected one."""

import json

import pytest

from geodistil import prompts
from geodistil.config import ToolsConfig
from geodistil.dialects import (
    DIALECTS, HERMES, NATIVE, QWEN3_XML, ToolCall, ToolCallProblem, ToolResult, call_spans, dialect_named,
)
from geodistil.export import training_turns
from geodistil.tools import build_tools, openai_tool_specs
from geodistil.trace import ImagePart, Message, TeacherInfo, TextPart, Trace
from geodistil.viewer.pages import message_html

SPECS = openai_tool_specs(build_tools(ToolsConfig(enabled=("image_zoom_in_tool", "image_rotate_tool"))))
CODE_SPEC = {"type": "function", "function": {"name": "python_code_tool", "parameters": {
    "type": "object", "properties": {"code": {"type": "string"}, "image_index": {"type": "integer"}}}}}


def parse_text_tool_calls(text):
    return HERMES.read(text, None).calls


# -- hermes ---------------------------------------------------------------------------------

def test_text_calls_are_read_in_order():
    text = ('Let me look. <tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 50, 60]}}'
            '</tool_call> and <tool_call>\n{"name": "image_rotate_tool", "arguments": {"angle": 90}}\n</tool_call>')
    calls = parse_text_tool_calls(text)
    assert calls == [ToolCall("image_zoom_in_tool", {"bbox_2d": [1, 2, 50, 60]}, "hermes"),
                     ToolCall("image_rotate_tool", {"angle": 90}, "hermes")]


def test_flat_python_call_is_accepted():
    calls = parse_text_tool_calls('<tool_call>{"name": "python_code_tool", "code": "result_image = image"}</tool_call>')
    assert calls == [ToolCall("python_code_tool", {"code": "result_image = image"}, "hermes")]


def test_malformed_json_becomes_a_problem_not_an_exception():
    [call] = parse_text_tool_calls('<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2</tool_call>')
    assert isinstance(call, ToolCallProblem)
    assert "not valid JSON" in call.error


def test_unclosed_last_call_is_still_read():
    [call] = parse_text_tool_calls('<tool_call>{"name": "image_rotate_tool", "arguments": {"angle": 5}}')
    assert call == ToolCall("image_rotate_tool", {"angle": 5}, "hermes")


def test_missing_name_and_non_object_arguments_are_problems():
    calls = parse_text_tool_calls('<tool_call>{"arguments": {}}</tool_call><tool_call>{"name": "x", "arguments": [1]}</tool_call>')
    assert all(isinstance(c, ToolCallProblem) for c in calls) and len(calls) == 2


def test_native_calls_parse_and_keep_their_id():
    native = [{"id": "c1", "type": "function",
               "function": {"name": "image_rotate_tool", "arguments": json.dumps({"angle": 30})}},
              {"id": "c2", "type": "function", "function": {"name": "image_zoom_in_tool", "arguments": "{bad"}}]
    ok, bad = NATIVE.parse_tool_calls(native)
    assert ok == ToolCall("image_rotate_tool", {"angle": 30}, "native", call_id="c1")
    assert isinstance(bad, ToolCallProblem) and bad.call_id == "c2"


def test_no_calls_in_plain_answer():
    assert parse_text_tool_calls(r"It is Paris. \boxed{48.85, 2.35}") == []
    assert [(s.start, s.end) for s in call_spans("a <tool_call>{}</tool_call> b")] == [(2, 27)]


def test_a_fenced_json_call_inside_the_tags_is_read():
    text = '<tool_call>\n```json\n{"name": "image_rotate_tool", "arguments": {"angle": 90}}\n```\n</tool_call>'
    assert parse_text_tool_calls(text) == [ToolCall("image_rotate_tool", {"angle": 90}, "hermes")]


def test_a_fenced_json_call_without_tags_is_read():
    text = 'I will rotate it.\n```json\n{"name": "image_rotate_tool", "arguments": {"angle": -90}}\n```'
    assert parse_text_tool_calls(text) == [ToolCall("image_rotate_tool", {"angle": -90}, "hermes")]


def test_fenced_json_that_is_not_a_call_is_not_read_as_one():
    assert parse_text_tool_calls('The sign:\n```json\n{"city": "Lyon", "km": 5}\n```\n\\boxed{45.76, 4.84}') == []


# -- qwen3_xml ------------------------------------------------------------------------------

QWEN3_CALL = ("I need a closer look.\n<tool_call>\n<function=image_zoom_in_tool>\n<parameter=bbox_2d>\n[10, 20, 300, 400]\n"
              "</parameter>\n<parameter=label>\nroad sign\n</parameter>\n<parameter=image_index>\n1\n</parameter>\n"
              "</function>\n</tool_call>")


def test_qwen3_xml_values_are_typed_by_the_tool_schema():
    [call] = QWEN3_XML.read(QWEN3_CALL, None, SPECS).calls
    assert call == ToolCall("image_zoom_in_tool", {"bbox_2d": [10, 20, 300, 400], "label": "road sign",
                                                   "image_index": 1}, "qwen3_xml")


def test_qwen3_xml_numbers_follow_vllm_integral_floats_become_ints():
    text = "<tool_call><function=image_rotate_tool><parameter=angle>90.0</parameter></function></tool_call>"
    [call] = QWEN3_XML.read(text, None, SPECS).calls
    assert call.arguments == {"angle": 90} and isinstance(call.arguments["angle"], int)


def test_qwen3_xml_string_values_stay_strings_even_when_they_look_like_json():
    text = "<tool_call><function=image_zoom_in_tool><parameter=label>[1, 2]</parameter></function></tool_call>"
    [call] = QWEN3_XML.read(text, None, SPECS).calls
    assert call.arguments == {"label": "[1, 2]"}


def test_qwen3_xml_multiline_code_is_kept_verbatim_less_the_template_newlines():
    code = "w, h = image.size\n\nif w > h:\n    result_image = image.rotate(90)\nelse:\n    result_image = image\n"
    text = f"<tool_call>\n<function=python_code_tool>\n<parameter=code>\n{code}\n</parameter>\n</function>\n</tool_call>"
    [call] = QWEN3_XML.read(text, None, [CODE_SPEC]).calls
    assert call.arguments == {"code": code}  # one newline stripped each side: the code's own last one stays


def test_qwen3_xml_without_a_schema_decodes_json_values_and_keeps_text():
    text = ("<tool_call><function=image_zoom_in_tool><parameter=bbox_2d>[1, 2, 3, 4]</parameter>"
            "<parameter=scale>2.5</parameter><parameter=label>a sign</parameter>"
            "<parameter=extra>{\"k\": 1}</parameter><parameter=none>null</parameter></function></tool_call>")
    [call] = QWEN3_XML.read(text, None).calls
    assert call.arguments == {"bbox_2d": [1, 2, 3, 4], "scale": 2.5, "label": "a sign", "extra": {"k": 1},
                              "none": None}


def test_qwen3_xml_unclosed_tags_end_at_the_next_parameter_and_the_reply_end():
    text = "<tool_call>\n<function=image_zoom_in_tool>\n<parameter=label>\nsign\n<parameter=bbox_2d>\n[1, 2, 30, 40]\n"
    [call] = QWEN3_XML.read(text, None, SPECS).calls
    assert call.arguments == {"label": "sign", "bbox_2d": [1, 2, 30, 40]}


def test_qwen3_xml_several_calls_in_one_reply_are_read_in_order():
    text = ("<tool_call>\n<function=image_rotate_tool>\n<parameter=angle>\n90\n</parameter>\n</function>\n</tool_call>\n"
            "<tool_call>\n<function=image_rotate_tool>\n<parameter=angle>\n-15\n</parameter>\n</function>\n</tool_call>")
    calls = QWEN3_XML.read(text, None, SPECS).calls
    assert [c.arguments for c in calls] == [{"angle": 90}, {"angle": -15}]


def test_qwen3_xml_function_without_tool_call_tags_is_read_as_vllm_does():
    text = "Rotating.\n<function=image_rotate_tool>\n<parameter=angle>\n180\n</parameter>\n</function>"
    assert QWEN3_XML.read(text, None, SPECS).calls == [ToolCall("image_rotate_tool", {"angle": 180}, "qwen3_xml")]


@pytest.mark.parametrize("body", ["<function=>\n</function>", "<function=image_rotate_tool</function>",
                                  "<function=image_rotate_tool>\n<parameter=angle 90</parameter>\n</function>"])
def test_qwen3_xml_tags_without_a_name_or_closing_bracket_are_problems(body):
    [call] = QWEN3_XML.read(f"<tool_call>\n{body}\n</tool_call>", None, SPECS).calls
    assert isinstance(call, ToolCallProblem) and call.dialect == "qwen3_xml"


# -- a reply in another dialect than the selected one ---------------------------------------

def test_qwen3_xml_is_recognised_while_hermes_is_selected_and_recorded_as_such():
    reading = HERMES.read(QWEN3_CALL, None, SPECS)
    assert [c.dialect for c in reading.calls] == ["qwen3_xml"] and reading.calls[0].arguments["bbox_2d"][2] == 300


def test_hermes_text_is_read_while_native_is_selected_and_the_server_returned_no_tool_calls():
    reading = NATIVE.read('<tool_call>{"name": "image_rotate_tool", "arguments": {"angle": 90}}</tool_call>', None)
    assert reading.calls == [ToolCall("image_rotate_tool", {"angle": 90}, "hermes")]
    assert reading.dialect is HERMES  # no call id: the results go back as text, not as tool messages


def test_native_tool_calls_are_read_whatever_dialect_is_selected():
    native = [{"id": "c9", "type": "function", "function": {"name": "image_rotate_tool", "arguments": '{"angle": 5}'}}]
    for dialect in (HERMES, QWEN3_XML):
        reading = dialect.read("", native, SPECS)
        assert reading.calls == [ToolCall("image_rotate_tool", {"angle": 5}, "native", "c9")]
        assert reading.dialect is NATIVE


def test_text_is_the_old_name_of_hermes_and_unknown_names_say_what_is_known():
    assert dialect_named("text") is HERMES
    with pytest.raises(ValueError, match="hermes, qwen3_xml, native"):
        dialect_named("xml")


# -- prompt block and request tools ---------------------------------------------------------

def test_text_dialects_put_the_tools_in_the_prompt_and_send_no_tools():
    for dialect, call_format in ((HERMES, '{"name": <function-name>'), (QWEN3_XML, "<function=FUNCTION_NAME>")):
        block = dialect.prompt_block(SPECS)
        assert call_format in block and json.dumps(SPECS[0]) in block
        assert dialect.request_tools(SPECS) is None
        assert block in prompts.user_text("Clue", block)


def test_native_sends_the_tools_in_the_request_and_none_in_the_prompt():
    assert NATIVE.prompt_block(SPECS) is None and NATIVE.request_tools(SPECS) == SPECS
    assert "# Tools" not in prompts.user_text("Clue", NATIVE.prompt_block(SPECS))


def test_no_tools_no_block():
    assert all(d.prompt_block([]) is None and d.request_tools([]) is None for d in DIALECTS.values())


# -- result messages ------------------------------------------------------------------------

RESULTS = [ToolResult("c1", "<tool_response>\nzoom returned image 1\n</tool_response>", 1),
           ToolResult("c2", "<tool_response>\nError from rotate: bad angle\n</tool_response>", None)]


@pytest.mark.parametrize("dialect", [HERMES, QWEN3_XML])
def test_text_dialects_send_results_as_one_user_message_of_images_and_responses(dialect):
    [message] = dialect.result_messages(RESULTS)
    assert message.role == "user"
    assert message.content == [ImagePart(ref=1), TextPart(text=RESULTS[0].text), TextPart(text=RESULTS[1].text)]


def test_native_sends_tool_messages_then_a_user_message_with_the_images():
    tool1, tool2, user = NATIVE.result_messages(RESULTS)
    assert (tool1.role, tool1.tool_call_id, tool1.content) == ("tool", "c1", RESULTS[0].text)
    assert (tool2.role, tool2.tool_call_id) == ("tool", "c2")
    assert user.role == "user" and user.content[0] == ImagePart(ref=1)
    assert user.content[1].text == "The images above are the tool outputs, in order."


def test_native_results_without_images_still_end_in_a_user_message():
    *tools, user = NATIVE.result_messages(RESULTS[1:])
    assert [m.role for m in tools] == ["tool"] and user.content == [TextPart(text="See the tool results above.")]


# -- training render ------------------------------------------------------------------------

def test_hermes_and_native_render_a_call_as_hermes_text():
    expected = '<tool_call>\n{"name": "image_rotate_tool", "arguments": {"angle": 90}}\n</tool_call>'
    assert HERMES.call_text("image_rotate_tool", {"angle": 90}) == expected
    assert NATIVE.call_text("image_rotate_tool", {"angle": 90}) == expected


def test_qwen3_xml_renders_a_call_that_it_reads_back_unchanged():
    arguments = {"bbox_2d": [10, 20, 300, 400], "label": "road sign", "image_index": 1}
    text = QWEN3_XML.call_text("image_zoom_in_tool", arguments)
    assert text.startswith("<tool_call>\n<function=image_zoom_in_tool>\n<parameter=bbox_2d>\n[10, 20, 300, 400]\n")
    assert QWEN3_XML.read(text, None, SPECS).calls == [ToolCall("image_zoom_in_tool", arguments, "qwen3_xml")]


def test_export_writes_native_calls_of_a_qwen3_xml_trace_in_its_dialect():
    call = {"id": "c1", "type": "function", "function": {"name": "image_rotate_tool", "arguments": '{"angle": 90}'}}
    teacher = TeacherInfo(base_url="u", model="m", tool_style="qwen3_xml", temperature=0, top_p=1, max_tokens=9,
                          seed=0, max_turns=2, box_convention="absolute", tools=[], settings_fingerprint="f")
    trace = Trace(dataset_path="d", dataset_fingerprint="f", sample_index=0, teacher=teacher, messages=[
        Message(role="user", content=[ImagePart(ref=0), TextPart(text="Where?")]),
        Message(role="assistant", content=None, tool_calls=[call])])
    assert training_turns(trace)[-1].text() == QWEN3_XML.call_text("image_rotate_tool", {"angle": 90})


# -- viewer ---------------------------------------------------------------------------------

def test_viewer_marks_calls_of_each_dialect_and_the_answer():
    text = ('Look <tool_call>{"name": "image_rotate_tool", "arguments": {"angle": 90}}</tool_call> then '
            + QWEN3_CALL + " <b>so</b> \\boxed{45.76, 4.84}")
    html = str(message_html(text))
    assert '<span class="tc" data-dialect="hermes">&lt;tool_call&gt;{&#34;name&#34;' in html
    assert '<span class="tc" data-dialect="qwen3_xml">&lt;tool_call&gt;\n&lt;function=image_zoom_in_tool&gt;' in html
    assert '<mark class="answer" data-format="boxed">\\boxed{45.76, 4.84}</mark>' in html
    assert "&lt;b&gt;so&lt;/b&gt;" in html and "<b>" not in html


def test_viewer_marks_an_answer_written_as_a_glm_box():
    html = str(message_html("It is Lyon. <|begin_of_box|>45.76, 4.84<|end_of_box|>"))
    assert '<mark class="answer" data-format="glm_box">&lt;|begin_of_box|&gt;45.76, 4.84' in html
