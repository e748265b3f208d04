"""What a tool is: a name, a JSON schema, a pure ``apply(image, arguments)`` and its settings.

A tool's settings are whatever besides the arguments decides its output (zoom's box
convention, the code tool's time limit). The tool says them itself (``settings()``, its
constructor's keyword arguments as JSON); every trace records them, and replay builds the
tool back from them (``Kind(**settings)``), so a trace replays with what ran, whatever
today's defaults are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from PIL import Image

from geodistil.errors import ToolError

if TYPE_CHECKING:
    from geodistil.config import ToolsConfig

__all__ = ["Tool", "ToolError", "ToolKind", "ToolOutput", "input_ref_of"]


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
        """Pure: the same image, arguments and settings always give the same pixels. Raises ToolError."""
        ...

    def settings(self) -> dict[str, Any]:
        """What the tool runs with besides the arguments, as JSON keyword arguments of its class:
        recorded in every trace, and ``type(tool)(**tool.settings()) == tool``."""
        ...


class ToolKind(Protocol):
    """A tool's class, as the registry keeps it: built from the run's config, or from a trace's settings."""

    def from_config(self, config: ToolsConfig) -> Tool: ...

    def __call__(self, **settings: Any) -> Tool: ...


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
