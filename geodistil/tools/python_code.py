"""``python_code_tool``: model-written Python on the image, run in the OS-level sandbox.

The code never runs in this process: ``geodistil.sandbox.run_code`` sends it to a locked-down
child (see docs/sandbox.md). Errors of the code come back as ``ToolError`` with the text the
teacher needs to fix it; a sandbox that cannot isolate raises ``SandboxError``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from PIL import Image

from geodistil.config import ToolsConfig
from geodistil.sandbox import run_code
from geodistil.tools.base import ToolError, ToolOutput

MAX_TEXT_CHARS = 2000  # printed output shown to the teacher; more only costs context


def _truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


@dataclass(frozen=True)
class PythonCodeTool:
    timeout_s: float = 10.0
    name: str = "python_code_tool"
    description: str = (
        "Run Python code on an image. Pre-bound names: `image` (the PIL image: the original by "
        "default, or an earlier tool output chosen with image_index), `Image`, `ImageOps`, "
        "`ImageEnhance`, `ImageFilter`, `ImageDraw` (from PIL), `np` (numpy) and `math`. Set "
        "`result_image` to the PIL image to return; anything printed is returned as text. "
        "Use it to crop, rotate, enhance, threshold or measure the image. The code runs in an "
        "isolated sandbox: no files, no network, no other processes, a time and memory limit."
    )

    @classmethod
    def from_config(cls, config: ToolsConfig) -> PythonCodeTool:
        return cls(timeout_s=config.code_timeout_s)

    def settings(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s}  # code that finished in time once must be given as long again

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Python code that sets result_image"},
                "image_index": {
                    "type": "integer",
                    "description": "image bound to `image`: 0 is the original, k the k-th tool output",
                },
            },
            "required": ["code"],
        }

    def apply(self, image: Image.Image, arguments: dict[str, Any]) -> ToolOutput:
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolError(f"code must be a non-empty string of Python, got {code!r}"[:300])
        result = run_code(code, image, timeout=self.timeout_s)
        if not result.ok:
            message = _truncate(result.error or "the code failed")
            if result.stdout.strip():
                message += "\nprinted before the error:\n" + _truncate(result.stdout)
            raise ToolError(message)
        assert result.image is not None
        return ToolOutput(
            image=result.image,
            resolved={"code_sha256": hashlib.sha256(code.encode("utf-8")).hexdigest()},
            text=_truncate(result.stdout) if result.stdout else None,
        )
