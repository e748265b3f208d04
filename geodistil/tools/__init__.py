"""The tool registry: which tools a rollout offers, built from ``ToolsConfig``.

A tool is a name, a JSON schema (``parameters``) and a pure ``apply(image, arguments)``.
``build_tools`` is the one place that maps names to implementations; the python code tool
is imported lazily because it starts sandbox workers. ``TOOLS_VERSION`` (bump it when a tool's
pixels change for the same arguments) is defined in ``geodistil.config``, below the tools, and
re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geodistil.config import TOOLS_VERSION, ToolsConfig
from geodistil.errors import ConfigError
from geodistil.tools.base import Tool, ToolError, ToolOutput, input_ref_of
from geodistil.tools.rotate import RotateTool
from geodistil.tools.zoom import ZoomInTool

__all__ = ["TOOLS_VERSION", "Tool", "ToolError", "ToolOutput", "build_tools", "openai_tool_specs", "input_ref_of", "TOOL_NAMES"]


def _python_code_tool(config: ToolsConfig) -> Tool:
    from geodistil.tools.python_code import PythonCodeTool

    return PythonCodeTool(timeout_s=config.code_timeout_s)


_FACTORIES: dict[str, Callable[[ToolsConfig], Tool]] = {
    "image_zoom_in_tool": lambda c: ZoomInTool(box_convention=c.box_convention),
    "image_rotate_tool": lambda c: RotateTool(),
    "python_code_tool": _python_code_tool,
}
TOOL_NAMES = tuple(_FACTORIES)


def build_tools(config: ToolsConfig) -> dict[str, Tool]:
    """The enabled tools by name, in the order the config lists them."""
    unknown = [n for n in config.enabled if n not in _FACTORIES]
    if unknown:
        raise ConfigError(f"unknown tools {unknown}; known: {list(_FACTORIES)}")
    return {name: _FACTORIES[name](config) for name in config.enabled}


def openai_tool_specs(tools: dict[str, Tool]) -> list[dict[str, Any]]:
    """The tools in OpenAI's ``tools=[{"type": "function", ...}]`` shape."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools.values()
    ]
