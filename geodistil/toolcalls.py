"""Reading tool calls out of a teacher reply.

Two shapes arrive: Qwen/Hermes text calls ``<tool_call>{"name": .., "arguments": {..}}</tool_call>``
(several per message; also the flat ``{"name": "python_code_tool", "code": ".."}``), and
native OpenAI ``tool_calls``. Anything malformed becomes a ``ToolCallProblem`` that the rollout
sends back to the teacher as a tool error, so the teacher can recover.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    call_id: str | None = None


@dataclass(frozen=True)
class ToolCallProblem:
    """A call the teacher tried to make but that cannot be run."""

    error: str
    raw: str
    name: str | None = None
    call_id: str | None = None


ParsedCall = ToolCall | ToolCallProblem


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*\n?", "", text)
        text = re.sub(r"\n?```$", "", text)
    return text.strip()


def _from_payload(payload: Any, raw: str, call_id: str | None = None) -> ParsedCall:
    if not isinstance(payload, dict):
        return ToolCallProblem(f"a tool call must be a JSON object, got {type(payload).__name__}", raw, call_id=call_id)
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return ToolCallProblem('a tool call needs a "name"', raw, call_id=call_id)
    if "arguments" in payload:
        arguments = payload["arguments"]
        if isinstance(arguments, str):  # some models double-encode
            try:
                arguments = json.loads(arguments)
            except ValueError as exc:
                return ToolCallProblem(f"arguments of {name} are not valid JSON: {exc}", raw, name, call_id)
    else:  # flat form: {"name": "python_code_tool", "code": "..."}
        arguments = {k: v for k, v in payload.items() if k != "name"}
    if not isinstance(arguments, dict):
        return ToolCallProblem(f"arguments of {name} must be a JSON object", raw, name, call_id)
    return ToolCall(name=name, arguments=arguments, call_id=call_id)


def parse_text_tool_calls(text: str | None) -> list[ParsedCall]:
    """Every ``<tool_call>`` block of a reply, in order (an unclosed last block included)."""
    if not text or "<tool_call>" not in text:
        return []
    calls: list[ParsedCall] = []
    for match in _TOOL_CALL.finditer(text):
        raw = match.group(1)
        body = _strip_fences(raw)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            calls.append(ToolCallProblem(f"tool call is not valid JSON ({exc})", raw))
            continue
        calls.append(_from_payload(payload, raw))
    return calls


def parse_native_tool_calls(tool_calls: list[dict[str, Any]] | None) -> list[ParsedCall]:
    """OpenAI ``message.tool_calls`` (as dicts) to calls."""
    calls: list[ParsedCall] = []
    for tc in tool_calls or []:
        fn = tc.get("function") or {}
        call_id = tc.get("id")
        name = fn.get("name")
        raw = fn.get("arguments") or "{}"
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            calls.append(ToolCallProblem(f"arguments of {name} are not valid JSON: {exc}", str(raw), name, call_id))
            continue
        calls.append(_from_payload({"name": name, "arguments": arguments}, str(raw), call_id))
    return calls


def strip_tool_calls(text: str) -> str:
    """The reply text without its ``<tool_call>`` blocks."""
    return _TOOL_CALL.sub("", text).strip()
