"""What the simulated teacher says on a turn: a tool call, a final answer, or a requested fault.

Deterministic: the randomness comes from ``random.Random`` instances seeded by the sim seed
and a hash of the conversation (its first user text and image, the request's own seed) and,
per turn, the number of assistant turns so far. Nothing depends on global state, so
concurrent requests and replays of the same conversation get the same reply.

A conversation plans 0-3 tool calls up front (turn-independent), makes them on its first
turns, then answers. Tools are only those the request offers; boxes are in absolute pixels
of the image the request actually carried (the last one: a tool output if there is one).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from geodistil.dialects import HERMES, NATIVE, Dialect
from geodistil.sim.guess import Guess, guess
from geodistil.sim.reading import Conversation, image_size

ZOOM, ROTATE, CODE = "image_zoom_in_tool", "image_rotate_tool", "python_code_tool"
MIN_SIDE = 28
_PLAN_WEIGHTS = (30, 35, 25, 10)  # 0, 1, 2, 3 tool calls per conversation
_TOOL_WEIGHTS = {ZOOM: 6, ROTATE: 2, CODE: 2}
_ANGLES = (90, -90, 180, 10, -10, 15, -15, 25, -25, 30, -30)
_GOOD_CODE = (
    "result_image = ImageEnhance.Contrast(image).enhance(1.8)",
    "w, h = image.size\nresult_image = image.crop((w // 2, h // 4, w, 3 * h // 4)).resize((w, h))",
    "result_image = image.rotate(20, expand=True)",
    "result_image = image.filter(ImageFilter.SHARPEN)",
    "gray = ImageOps.grayscale(image)\nresult_image = ImageOps.autocontrast(gray).convert('RGB')\nprint(gray.size)",
    "arr = np.asarray(image).astype(np.float32)\nresult_image = Image.fromarray(np.clip(arr * 1.3, 0, 255).astype(np.uint8))",
)
_BROKEN_CODE = (
    "result_image = image.rotate(90",  # SyntaxError
    "result_image = ImageOps.autocontrast(img)",  # NameError
    "sharper = ImageEnhance.Sharpness(image).enhance(2.0)\nprint(sharper.size)",  # no result_image
)


@dataclass(frozen=True)
class PlannedCall:
    name: str
    arguments_json: str  # broken JSON for a malformed call
    call_id: str


@dataclass
class Reply:
    content: str
    calls: list[PlannedCall] = field(default_factory=list)
    outcome: str = "answers"  # stats counter: answers | tool_calls | malformed | no_box


def _turn_rng(conv: Conversation, seed: int) -> random.Random:
    return random.Random(conv.key(seed, "turn", conv.assistant_turns))


def planned_tool_calls(conv: Conversation, seed: int) -> int:
    """How many tool-call turns this conversation makes before answering."""
    plan = random.Random(conv.key(seed, "plan"))
    return plan.choices(range(len(_PLAN_WEIGHTS)), weights=_PLAN_WEIGHTS)[0]


def _call_id(rng: random.Random) -> str:
    return f"call_{rng.getrandbits(64):016x}"


def _with_index(args: dict[str, Any], index: int) -> dict[str, Any]:
    return {**args, "image_index": index} if index > 0 else args


def _zoom_args(rng: random.Random, size: tuple[int, int], index: int) -> dict[str, Any]:
    """A box where a roadside sign would plausibly be: left or right third, around the horizon."""
    w, h = size
    bw = min(w, max(MIN_SIDE, round(w * rng.uniform(0.2, 0.45))))
    bh = min(h, max(MIN_SIDE, round(h * rng.uniform(0.2, 0.45))))
    cx = w * rng.choice((rng.uniform(0.1, 0.35), rng.uniform(0.65, 0.9)))
    cy = h * rng.uniform(0.3, 0.55)
    x1 = min(max(0, round(cx - bw / 2)), w - bw)
    y1 = min(max(0, round(cy - bh / 2)), h - bh)
    return _with_index({"bbox_2d": [x1, y1, x1 + bw, y1 + bh], "label": "road sign"}, index)


def _tool_call(rng: random.Random, conv: Conversation) -> tuple[str, list[PlannedCall]] | None:
    """Reasoning text and one or two calls on the latest image, or None if no tool can be used."""
    index = len(conv.image_urls) - 1
    size = image_size(conv.image_urls[index]) if index >= 0 else None
    usable = {n: w for n, w in _TOOL_WEIGHTS.items() if n in conv.offered_tools}
    if size is None or min(size) < MIN_SIDE:
        usable.pop(ZOOM, None)
    if index < 0 or not usable:
        return None
    name = rng.choices(list(usable), weights=list(usable.values()))[0]
    if name == ZOOM:
        assert size is not None
        count = 2 if rng.random() < 0.1 else 1  # now and then two regions in one message
        calls = [PlannedCall(ZOOM, json.dumps(_zoom_args(rng, size, index)), _call_id(rng)) for _ in range(count)]
        return "The sign is too small to read; let me zoom in on it.", calls
    if name == ROTATE:
        args = _with_index({"angle": rng.choice(_ANGLES)}, index)
        return "The text looks tilted; rotating the image should make it readable.", \
            [PlannedCall(ROTATE, json.dumps(args), _call_id(rng))]
    code = rng.choice(_BROKEN_CODE) if rng.random() < 0.2 else rng.choice(_GOOD_CODE)
    return "Let me process the image with a little Python to see the details better.", \
        [PlannedCall(CODE, json.dumps(_with_index({"code": code}, index)), _call_id(rng))]


def _malformed(rng: random.Random, conv: Conversation) -> Reply:
    name = ZOOM if ZOOM in conv.offered_tools or not conv.offered_tools else sorted(conv.offered_tools)[0]
    broken = rng.choice(('{"bbox_2d": [120, 80, 420, 360]', "{'angle': 90}", '{"bbox_2d": [10, 20, 300, 400],}'))
    return Reply("Let me look closer.", [PlannedCall(name, broken, _call_id(rng))], "malformed")


def _boxed(rng: random.Random, g: Guess) -> str:
    if rng.random() < 0.15:  # some models write hemispheres instead of signs
        return (f"\\boxed{{{abs(g.lat):.4f}°{'N' if g.lat >= 0 else 'S'}, "
                f"{abs(g.lon):.4f}°{'E' if g.lon >= 0 else 'W'}}}")
    return f"\\boxed{{{g.lat:.4f}, {g.lon:.4f}}}"


def respond(conv: Conversation, seed: int, *, tool_calls: int | None = None,
            malformed: bool = False, no_box: bool = False) -> Reply:
    """This turn's reply; ``tool_calls`` fixes the plan (load tests want a known number of turns),
    ``malformed`` / ``no_box`` are faults drawn by the server."""
    rng = _turn_rng(conv, seed)
    if malformed:
        return _malformed(rng, conv)
    plan = planned_tool_calls(conv, seed) if tool_calls is None else tool_calls
    if not no_box and conv.assistant_turns < plan:
        planned = _tool_call(rng, conv)
        if planned is not None:
            return Reply(planned[0], planned[1], "tool_calls")
    g = guess(conv.clues, random.Random(conv.key(seed, "guess")))
    looked = " The closer look at the image confirms it." if conv.assistant_turns else ""
    if no_box:
        return Reply(f"{g.reasoning}{looked} I think this is near {g.place}, roughly at latitude "
                     f"{g.lat:.2f} and longitude {g.lon:.2f}.", outcome="no_box")
    return Reply(f"{g.reasoning}{looked}\n\n{_boxed(rng, g)}")


def _arguments(call: PlannedCall) -> dict[str, Any] | str:
    """The call's arguments, or the broken JSON as it is for a malformed call."""
    try:
        return json.loads(call.arguments_json)
    except ValueError:
        return call.arguments_json


def _thinking(dialect: Dialect) -> str:
    """Thinking that drafts a call and an answer it then drops: neither may count as made."""
    draft = dialect.call_text(ROTATE, {"angle": 90}) if dialect is not NATIVE else "a rotation"
    return (f"<think>\nWould {draft} help? Perhaps not. A first guess: \\boxed{{0.0, 0.0}}. "
            "Let me look again before I answer.\n</think>\n\n")


def message(reply: Reply, dialect: Dialect, request_tools: bool, think: bool = False) -> tuple[dict[str, Any], str]:
    """The reply as an OpenAI assistant message in ``dialect``, and its finish reason.

    Native calls need the request's ``tools``: without them a server runs no tool parser, so the
    calls stay text in the Qwen/Hermes form the model was prompted with (as vLLM answers).
    """
    content = _thinking(dialect) + reply.content if think else reply.content
    if reply.calls and dialect is NATIVE and request_tools:
        calls = [{"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                 for c in reply.calls]
        return {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"
    writer = HERMES if dialect is NATIVE else dialect
    blocks = [writer.call_text(c.name, _arguments(c)) for c in reply.calls]
    return {"role": "assistant", "content": "\n".join([content, *blocks])}, "stop"
