"""Separating a reply's reasoning from its content: fields, <think> blocks, a lone </think>."""

from geodistil.dialects import HERMES
from geodistil.reasoning import separate
from geodistil.scoring import parse_answer


def test_a_reasoning_field_is_the_reasoning_and_the_content_stays_as_it_is():
    assert separate("  It is Paris. \\boxed{48.85, 2.35}\n", "The sign says Paris.") == (
        "The sign says Paris.", "  It is Paris. \\boxed{48.85, 2.35}\n")


def test_a_reply_without_thinking_has_no_reasoning():
    assert separate("Paris. \\boxed{48.85, 2.35}") == (None, "Paris. \\boxed{48.85, 2.35}")
    assert separate(None) == (None, "")


def test_a_think_block_in_the_content_is_separated():
    assert separate("<think>\nA French sign.\n</think>\n\nParis. \\boxed{48.85, 2.35}") == (
        "A French sign.", "Paris. \\boxed{48.85, 2.35}")


def test_a_lone_closing_think_tag_ends_the_reasoning_that_came_before_it():
    assert separate("The opening tag was in the prompt.\n</think>\n\nParis. \\boxed{48.85, 2.35}") == (
        "The opening tag was in the prompt.", "Paris. \\boxed{48.85, 2.35}")


def test_a_reasoning_field_and_think_in_the_content_are_both_kept():
    assert separate("<think>second</think>answer", "first") == ("first\n\nsecond", "answer")


def test_thinking_cut_off_by_max_tokens_is_all_reasoning():
    assert separate("<think>\nI could call <tool_call>{\"name\": \"image_rotate_tool\"") == (
        'I could call <tool_call>{"name": "image_rotate_tool"', "")


def test_a_tool_call_and_a_box_inside_the_thinking_do_not_count():
    reply = ('<think>Maybe <tool_call>{"name": "image_rotate_tool", "arguments": {"angle": 90}}</tool_call>? '
             "A first guess \\boxed{0, 0}.</think>Lyon, from the sign.")
    reasoning, content = separate(reply)
    assert HERMES.read(content, None).calls == [] and parse_answer(content) is None
    assert "<tool_call>" in reasoning
