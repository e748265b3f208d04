"""The tool registry: which tools a rollout offers, built from ``ToolsConfig`` or from a trace.

A tool is a name, a JSON schema (``parameters``), a pure ``apply(image, arguments)`` and the
settings it ran with (``settings()``, recorded in every trace). ``_KINDS`` is the one place
that maps names to implementations; the python code tool is imported lazily because it
starts sandbox workers. ``TOOLS_VERSION`` (bump it when a tool's pixels change for the same
arguments) is defined in ``geodistil.config``, below the tools, and re-exported here.
docs/extending.md says how to add a tool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geodistil.config import TOOLS_VERSION, ToolsConfig
from geodistil.errors import ConfigError
from geodistil.tools.base import Tool, ToolError, ToolKind, ToolOutput, input_ref_of
from geodistil.tools.rotate import RotateTool
from geodistil.tools.zoom import ZoomInTool

__all__ = ["TOOLS_VERSION", "TOOL_NAMES", "Tool", "ToolError", "ToolKind", "ToolOutput", "build_tools",
           "input_ref_of", "openai_tool_specs", "tool_from_settings"]


def _python_code_tool() -> ToolKind:
    from geodistil.tools.python_code import PythonCodeTool

    return PythonCodeTool


_KINDS: dict[str, Callable[[], ToolKind]] = {
    "image_zoom_in_tool": lambda: ZoomInTool,
    "image_rotate_tool": lambda: RotateTool,
    "python_code_tool": _python_code_tool,
}
TOOL_NAMES = tuple(_KINDS)


def _kind(name: str) -> ToolKind:
    if name not in _KINDS:
        raise ConfigError(f"unknown tool {name!r}; known: {list(_KINDS)}")
    return _KINDS[name]()


def build_tools(config: ToolsConfig) -> dict[str, Tool]:
    """The enabled tools by name, in the order the config lists them."""
    unknown = [n for n in config.enabled if n not in _KINDS]
    if unknown:
        raise ConfigError(f"unknown tools {unknown}; known: {list(_KINDS)}")
    return {name: _kind(name).from_config(config) for name in config.enabled}


def tool_from_settings(name: str, settings: dict[str, Any]) -> Tool:
    """The tool ``name`` as a trace recorded it (``Tool.settings()``)."""
    return _kind(name)(**settings)


def openai_tool_specs(tools: dict[str, Tool]) -> list[dict[str, Any]]:
    """The tools in OpenAI's ``tools=[{"type": "function", ...}]`` shape."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools.values()
    ]
