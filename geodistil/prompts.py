"""What the teacher is told: system prompt, user prompt and the tools it may call.

``PROMPT_VERSION`` is part of the cache key: bump it whenever a text here changes.
"""

from __future__ import annotations

import json
from typing import Any

PROMPT_VERSION = "1"

SYSTEM_PROMPT = "You are a helpful assistant."

CLUES_HEADER = "Clues:"

INSTRUCTION = (
    "Where was this photo taken? Reason step by step about what you see. "
    "You may call the tools to zoom in, rotate or process the image before you answer. "
    "When you are done, give your final answer as \\boxed{latitude, longitude} "
    "in signed decimal degrees, for example \\boxed{48.8566, 2.3522}."
)

HERMES_TOOLS_TEMPLATE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>\n\n'
    "Each tool returns a new image. Image 0 is the original photo; the k-th image a tool "
    "returns is image k, and a tool can read it through its image_index argument."
)

QWEN3_XML_TOOLS_TEMPLATE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "The functions you can call are listed as JSON within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "To call a function, write one block per call, each parameter on its own lines "
    "(lists and numbers as JSON, text as it is):\n<tool_call>\n<function=FUNCTION_NAME>\n"
    "<parameter=PARAMETER_NAME>\nVALUE\n</parameter>\n</function>\n</tool_call>\n\n"
    "Any reasoning goes before the calls, never after them.\n\n"
    "Each tool returns a new image. Image 0 is the original photo; the k-th image a tool "
    "returns is image k, and a tool can read it through its image_index argument."
)


def _tools_json(tool_specs: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(spec, ensure_ascii=False) for spec in tool_specs)


def hermes_tools_block(tool_specs: list[dict[str, Any]]) -> str:
    """The Qwen/Hermes tool list and call format (what Qwen2.5's chat template writes)."""
    return HERMES_TOOLS_TEMPLATE.format(tools=_tools_json(tool_specs))


def qwen3_xml_tools_block(tool_specs: list[dict[str, Any]]) -> str:
    """The tool list and the Qwen3-Coder XML call format."""
    return QWEN3_XML_TOOLS_TEMPLATE.format(tools=_tools_json(tool_specs))


def user_text(clues: str | None, tools_block: str | None = None) -> str:
    """The text that follows the ``<image>`` in the first user message.

    The system prompt stays exactly ``SYSTEM_PROMPT``; a dialect whose tools travel in the
    prompt puts its ``tools_block`` (``Dialect.prompt_block``) into this message instead.
    """
    parts = []
    if clues and clues.strip():
        parts.append(f"{CLUES_HEADER} {clues.strip()}")
    parts.append(INSTRUCTION)
    if tools_block:
        parts.append(tools_block)
    return "\n\n".join(parts)


def tool_response_text(tool_name: str, output_ref: int | None, size: tuple[int, int] | None,
                       note: str | None = None, error: str | None = None) -> str:
    """The ``<tool_response>`` text that goes back with (or instead of) a tool's image."""
    if error is not None:
        body = f"Error from {tool_name}: {error}"
    else:
        body = f"{tool_name} returned image {output_ref} ({size[0]}x{size[1]})." if size else f"{tool_name} done."
        if note:
            body += f"\n{note}"
    return f"<tool_response>\n{body}\n</tool_response>"
