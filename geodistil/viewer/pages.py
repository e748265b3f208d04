"""What the trace page shows, worked out from a trace: turns, tool cards, image checks, the map.

Kept apart from the HTML so the page template only lays things out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from geodistil.dialects import call_spans
from geodistil.replay import Rebuilt
from geodistil.scoring import read_answer
from geodistil.trace import ImagePart, ToolCallRecord, Trace
from geodistil.viewer.numbers import is_finite, number_text
from geodistil.viewer.worldmap import map_view

ZOOM, ROTATE, CODE = "image_zoom_in_tool", "image_rotate_tool", "python_code_tool"


@dataclass
class ImageView:
    ref: int
    size: tuple[int, int] | None
    check: str  # "ok" | "bad" | "unknown" (replay failed)
    caption: str = ""


@dataclass
class ToolCard:
    call: ToolCallRecord
    arguments: str  # pretty JSON
    input: ImageView | None = None
    output: ImageView | None = None
    box: dict[str, float] | None = None  # percent of the input image: left, top, width, height
    box_px: str | None = None  # as JSON, so a non-finite value reads NaN or Infinity
    angle: float | None = None  # as applied (normalised to [0, 360))
    asked_angle: float | None = None  # as the teacher wrote it
    code: str | None = None


@dataclass
class Block:
    """One message of the conversation, with the tool calls it made."""

    role: str
    turn: int
    text: str
    reasoning: str | None = None
    images: list[ImageView] = field(default_factory=list)
    thumbnails: list[ImageView] = field(default_factory=list)  # tool outputs already shown in a card
    native_calls: str | None = None
    cards: list[ToolCard] = field(default_factory=list)


def message_html(text: str) -> Markup:
    """Escaped message text with the answer and the text tool calls (in whatever dialect) marked out."""
    marks = [(s.start, s.end, f'<span class="tc" data-dialect="{s.dialect}">', "</span>") for s in call_spans(text)]
    answer = read_answer(text)
    if answer is not None and not any(start <= answer.span[0] < end for start, end, _, _ in marks):
        marks.append((*answer.span, f'<mark class="answer" data-format="{answer.format}">', "</mark>"))
    html, at = [], 0
    for start, end, open_tag, close_tag in sorted(marks):
        html += [str(escape(text[at:start])), open_tag, str(escape(text[start:end])), close_tag]
        at = end
    html.append(str(escape(text[at:])))
    return Markup("".join(html))


def _image_view(ref: int, trace: Trace, rebuilt: Rebuilt) -> ImageView:
    record = next((r for r in trace.images if r.ref == ref), None)
    size = tuple(record.size) if record else None
    if rebuilt.error or ref >= len(rebuilt.checks):
        check = "unknown"
    else:
        check = "ok" if rebuilt.checks[ref].ok else "bad"
    return ImageView(ref=ref, size=size, check=check)  # type: ignore[arg-type]


def _box_percent(box_px: list[Any], size: tuple[int, int] | None) -> dict[str, float] | None:
    """The box as percent of the image, or None when there is nothing sound to draw."""
    if not size or min(size) <= 0 or len(box_px) != 4 or \
            not all(isinstance(v, (int, float)) and is_finite(v) for v in box_px):
        return None
    w, h = size
    left, top, right, bottom = (float(v) for v in box_px)
    return {"left": 100 * left / w, "top": 100 * top / h, "width": 100 * (right - left) / w,
            "height": 100 * (bottom - top) / h}


def tool_card(call: ToolCallRecord, trace: Trace, rebuilt: Rebuilt) -> ToolCard:
    card = ToolCard(call=call, arguments=json.dumps(call.tool_arguments, indent=1, ensure_ascii=False))
    if call.input_ref is not None:
        card.input = _image_view(call.input_ref, trace, rebuilt)
    if call.output_ref is not None:
        card.output = _image_view(call.output_ref, trace, rebuilt)
    resolved = call.resolved or {}
    if call.tool_name == ZOOM and isinstance(resolved.get("box_px"), list) and resolved["box_px"] and \
            card.input is not None:
        card.box_px = json.dumps(resolved["box_px"])
        card.box = _box_percent(resolved["box_px"], card.input.size)
    if call.tool_name == ROTATE:
        card.angle = _number(resolved.get("angle_deg", call.tool_arguments.get("angle")))
        card.asked_angle = _number(call.tool_arguments.get("angle"))
    if call.tool_name == CODE:
        code = call.tool_arguments.get("code")
        card.code = code if isinstance(code, str) else None
    return card


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def blocks(trace: Trace, rebuilt: Rebuilt) -> list[Block]:
    """The conversation as blocks; each assistant turn carries the cards of the calls it made."""
    cards_by_turn: dict[int, list[ToolCard]] = {}
    for call in trace.tool_calls_log:
        cards_by_turn.setdefault(call.turn, []).append(tool_card(call, trace, rebuilt))
    shown_in_cards = {c.output_ref for c in trace.tool_calls_log if c.output_ref is not None}
    out: list[Block] = []
    turn = 0
    for message in trace.messages:
        if message.role == "assistant":
            turn += 1
        block = Block(role=message.role, turn=turn, text=message.text(), reasoning=message.reasoning)
        if isinstance(message.content, list):
            for part in message.content:
                if isinstance(part, ImagePart):
                    view = _image_view(part.ref, trace, rebuilt)
                    (block.thumbnails if part.ref in shown_in_cards else block.images).append(view)
        if message.tool_calls:
            block.native_calls = json.dumps(message.tool_calls, indent=1, ensure_ascii=False)
        if message.role == "assistant":
            block.cards = cards_by_turn.pop(turn, [])
        out.append(block)
    for leftover in cards_by_turn.values():  # calls whose turn has no message (a cut-off trace)
        out.append(Block(role="tool", turn=leftover[0].call.turn, text="", cards=leftover))
    return out


def trace_context(name: str, trace: Trace, rebuilt: Rebuilt) -> dict[str, Any]:
    truth = (trace.ground_truth.lat, trace.ground_truth.lon) if trace.ground_truth else None
    prediction = (trace.prediction.lat, trace.prediction.lon) if trace.prediction else None
    checks = [_image_view(r.ref, trace, rebuilt) for r in trace.images]
    teacher = trace.teacher
    # provenance without the endpoint: a URL may carry credentials in odd setups; the model is what matters
    provenance = {
        "model": teacher.model if teacher else None,
        "tool style": teacher.tool_style if teacher else None,
        "sampling": (f"temperature {number_text(teacher.temperature)}, top_p {number_text(teacher.top_p)}, "
                     f"max_tokens {teacher.max_tokens}, seed {teacher.seed}") if teacher else None,
        "box convention": teacher.box_convention if teacher else None,
        "tokens": f"{trace.usage.prompt_tokens} prompt, {trace.usage.completion_tokens} completion "
                  f"in {trace.usage.requests} requests ({trace.usage.retries} retries)",
        "teacher latency": f"{number_text(trace.latency_s, '.2f')} s",
        "dataset": f"{trace.dataset_path} [{trace.dataset_split or '-'}] {trace.dataset_fingerprint}",
        "geodistil": trace.geodistil_version or None,
        "started": trace.started_at.isoformat(timespec="seconds"),
    }
    return {
        "name": name, "trace": trace, "blocks": blocks(trace, rebuilt), "checks": checks,
        "replay_error": rebuilt.error, "map": map_view(truth, prediction),
        "checks_ok": sum(c.check == "ok" for c in checks), "checks_bad": sum(c.check == "bad" for c in checks),
        "provenance": {k: v for k, v in provenance.items() if v is not None},
    }
