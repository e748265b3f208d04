"""What a tool is: a name, a JSON schema and a pure ``apply(image, arguments)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from geodistil.errors import ToolError

__all__ = ["Tool", "ToolOutput", "ToolError", "input_ref_of"]


@dataclass
class ToolOutput:
    image: Image.Image
    resolved: dict[str, Any] | None = None  # what the arguments resolved to (e.g. pixel box)
    text: str | None = None  # extra text shown to the teacher (e.g. printed output)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments

    def apply(self, image: Image.Image, arguments: dict[str, Any]) -> ToolOutput:
        """Pure: the same image and arguments always give the same pixels. Raises ToolError."""
        ...


def input_ref_of(arguments: dict[str, Any], available: int) -> int:
    """Which image a call reads: ``image_index`` (0 = the original as sent), default 0."""
    raw = arguments.get("image_index", 0)
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ToolError(f"image_index must be an integer, got {raw!r}")
    try:
        ref = int(raw)
    except ValueError as exc:
        raise ToolError(f"image_index must be an integer, got {raw!r}") from exc
    if not 0 <= ref < available:
        raise ToolError(f"image_index {ref} does not exist (images 0..{available - 1} are available)")
    return ref
