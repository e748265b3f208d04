"""Settings as pydantic models: what a run needs, and nothing secret.

The API key is never a field: it is read from the environment (``OPENAI_API_KEY`` or the
variable ``TeacherConfig.api_key_env`` names) at the moment a client is built, or the caller
passes it in (the Prefect tasks resolve the Secret block ``TeacherConfig.api_key_secret``
names), so it cannot end up in a trace, a log line, a Prefect parameter or a cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geodistil.redact import redact_url


class BoxConvention(str, Enum):
    """How a teacher writes ``bbox_2d``: teachers differ, so this is a setting."""

    ABSOLUTE = "absolute"  # pixels of the image the teacher was sent (Qwen2.5-VL)
    REL_1000 = "relative_1000"  # 0..1000 on both axes (Qwen3-VL)
    REL_1 = "relative_1"  # 0..1 on both axes


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeacherConfig(_Model):
    base_url: str | None = Field(None, description="OpenAI-compatible base URL; default $OPENAI_BASE_URL")
    model: str = Field("teacher", description="model name served at base_url")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    api_key_secret: str | None = Field(
        None, description="name of a Prefect Secret block holding the API key (the block's name, never the key); "
                          "when set, it is used instead of the environment variable")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    max_retries: int = Field(6, ge=0, le=20, description="retries on 429 / 5xx / timeouts / connection errors")
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    tool_style: Literal["text", "native"] = Field(
        "text", description="text: <tool_call> JSON in the reply (Qwen/Hermes); native: OpenAI tools"
    )

    def resolved_base_url(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    def api_key(self) -> str:
        # servers such as vLLM accept any key; the openai client insists on one
        return os.environ.get(self.api_key_env) or "EMPTY"


class ImageConfig(_Model):
    max_pixels: int = Field(1024 * 768, ge=28 * 28, description="pixel cap of images sent to the teacher")
    jpeg_quality: int = Field(90, ge=50, le=100)
    image_format: Literal["png", "jpeg"] = "jpeg"


class ToolsConfig(_Model):
    enabled: tuple[str, ...] = ("image_zoom_in_tool", "image_rotate_tool", "python_code_tool")
    box_convention: BoxConvention = BoxConvention.ABSOLUTE
    max_images: int = Field(12, ge=1, description="cap on images per conversation (ref 0 included)")
    code_timeout_s: float = Field(10.0, gt=0, le=60)


class GenerationConfig(_Model):
    max_turns: int = Field(6, ge=1, le=50)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2048, ge=16)
    seed: int | None = 0
    rollouts_per_sample: int = Field(1, ge=1, le=64)
    max_concurrency: int = Field(64, ge=1, le=4096)


class RolloutSettings(_Model):
    """Everything that determines a rollout's result except the sample itself."""

    teacher: TeacherConfig = TeacherConfig()
    generation: GenerationConfig = GenerationConfig()
    tools: ToolsConfig = ToolsConfig()
    image: ImageConfig = ImageConfig()

    def fingerprint(self) -> str:
        """A stable hash of the settings that shape a result (never the key, never concurrency)."""
        from geodistil.prompts import PROMPT_VERSION
        from geodistil.tools import TOOLS_VERSION

        payload: dict[str, Any] = {
            "prompt_version": PROMPT_VERSION,
            "tools_version": TOOLS_VERSION,
            "teacher": {
                "base_url": redact_url(self.teacher.resolved_base_url()),  # a new key is the same teacher
                "model": self.teacher.model,
                "tool_style": self.teacher.tool_style,
            },
            "generation": self.generation.model_dump(exclude={"max_concurrency"}),
            "tools": self.tools.model_dump(mode="json"),
            "image": self.image.model_dump(),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
