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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geodistil.dialects import ALIASES, DialectName
from geodistil.errors import ConfigError
from geodistil.profiles import OPTIONAL, PROFILE_CHOICES
from geodistil.redact import looks_secret, redact_url

if TYPE_CHECKING:
    from geodistil.prices import Price

ENV_PREFIX = "env:"


def is_literal_secret(name: str, value: Any) -> bool:
    """A secret-looking field given as its value rather than as ``env:VARIABLE``."""
    return looks_secret(name) and not (isinstance(value, str) and value.startswith(ENV_PREFIX))


def _resolve_env(where: str, value: Any) -> Any:
    if not (isinstance(value, str) and value.startswith(ENV_PREFIX)):
        return value
    variable = value.removeprefix(ENV_PREFIX)
    if variable not in os.environ:
        raise ConfigError(f"{where}: environment variable {variable} is not set")
    return os.environ[variable]


def _no_literal_secrets(where: str, mapping: dict[str, Any] | None) -> None:
    for name, value in (mapping or {}).items():
        if is_literal_secret(name, value):
            raise ValueError(f"{where} {name} looks secret: give its value as env:VARIABLE, never literally")


def redacted(mapping: dict[str, Any] | None) -> dict[str, Any]:
    """``mapping`` as it may be shown: the values of secret-looking names replaced."""
    return {k: ("<redacted>" if looks_secret(k) else v) for k, v in (mapping or {}).items()}


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
    backoff_max_s: float = Field(60.0, gt=0, description="cap on a backoff, a Retry-After and a probe interval")
    rpm: float | None = Field(None, gt=0, description="requests per minute to keep to (default: the limit the "
                                                      "server announces, else one learnt from its 429s)")
    tpm: float | None = Field(None, gt=0, description="tokens per minute to keep to (default: the server's announced)")
    price_input: float | None = Field(None, ge=0, description="dollars per million input tokens (default: "
                                                             "geodistil.prices for the model)")
    price_cached_input: float | None = Field(None, ge=0, description="dollars per million cached input tokens "
                                                                    "(default: the input price)")
    price_output: float | None = Field(None, ge=0, description="dollars per million output tokens")
    max_cost_usd: float | None = Field(None, gt=0, description="budget: no sample starts once the run's cost, "
                                                               "with the next sample's expected cost, would pass it")
    max_tokens_total: int | None = Field(None, gt=0, description="budget in tokens (prompt plus completion)")
    max_outage_s: float = Field(1800.0, gt=0, description="how long requests wait for a teacher that stopped "
                                                          "answering before its samples become error traces")
    profile: Literal[PROFILE_CHOICES] = Field(  # type: ignore[valid-type]
        "auto", description="server profile deciding the request parameters (see geodistil.profiles); "
                            "auto: from the model name, the base URL and /v1/models")
    tool_style: DialectName | None = Field(
        None, description="tool-call dialect: hermes (<tool_call> JSON, Qwen/InternVL), qwen3_xml "
                          "(<tool_call><function=..>, Qwen3-Coder), native (OpenAI tools); text: hermes; "
                          "default: the server profile's")
    extra_body: dict[str, Any] | None = Field(
        None, description="more request parameters, sent as they are (e.g. {'chat_template_kwargs': ...}); "
                          "a secret-looking one must be 'env:VARIABLE', read when the request is built")
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra HTTP headers; a secret-looking one (Authorization, *key*, "
                                          "*token*, *secret*) must be 'env:VARIABLE', read when the client is built")

    @field_validator("headers")
    @classmethod
    def _headers_hold_no_secret(cls, headers: dict[str, str]) -> dict[str, str]:
        _no_literal_secrets("header", headers)
        return headers

    @field_validator("extra_body")
    @classmethod
    def _extra_body_holds_no_secret(cls, extra_body: dict[str, Any] | None) -> dict[str, Any] | None:
        _no_literal_secrets("extra_body field", extra_body)
        return extra_body

    @field_validator("tool_style", mode="before")
    @classmethod
    def _dialect_alias(cls, value: Any) -> Any:
        return ALIASES.get(value, value) if isinstance(value, str) else value

    def resolved_base_url(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    def resolved_headers(self) -> dict[str, str]:
        """The headers to send, ``env:`` values read from the environment now."""
        return {name: _resolve_env(f"header {name}", value) for name, value in self.headers.items()}

    def resolved_extra_body(self) -> dict[str, Any]:
        """``extra_body`` to send, ``env:`` values of secret-looking fields read from the environment now."""
        return {name: _resolve_env(f"extra_body field {name}", value) if looks_secret(name) else value
                for name, value in (self.extra_body or {}).items()}

    def price(self) -> "Price | None":
        """The price of this teacher's tokens: the table's (``geodistil.prices``) with the flags given over it.
        A flag over no table entry needs its partner (``_price_is_complete``)."""
        from geodistil.prices import Price, price_of

        table = price_of(self.model)
        if self.price_input is None and self.price_output is None:
            return table
        base = table or Price(input=0.0, output=0.0)
        cached = self.price_cached_input
        if cached is None and self.price_input is None:
            cached = base.cached_input  # the table's cache discount holds for the table's input price only
        return Price(input=base.input if self.price_input is None else self.price_input,
                     output=base.output if self.price_output is None else self.price_output, cached_input=cached)

    @model_validator(mode="after")
    def _price_is_complete(self) -> "TeacherConfig":
        from geodistil.prices import price_of

        if (self.price_input is None) != (self.price_output is None) and price_of(self.model) is None:
            raise ValueError(f"no price known for {self.model}: give both price_input and price_output")
        if self.max_cost_usd is not None and self.price() is None:
            raise ValueError(f"max_cost_usd needs a price, and none is known for {self.model}: "
                             "give price_input and price_output")
        return self

    def api_key(self) -> str:
        # servers such as vLLM accept any key; the openai client insists on one
        return os.environ.get(self.api_key_env) or "EMPTY"


class ImageConfig(_Model):
    max_pixels: int = Field(1024 * 768, ge=28 * 28, description="pixel cap of images sent to the teacher")
    max_decoded_pixels: int = Field(
        50_000_000, ge=28 * 28, description="pixel cap of a dataset image once decoded (a JPEG decodes at a reduced "
        "scale first); a larger one is that sample's error, so memory per sample stays bounded")
    jpeg_quality: int = Field(90, ge=50, le=100)
    image_format: Literal["png", "jpeg"] = "jpeg"
    text_only: bool = Field(
        False, description="a teacher that takes no images (a text-only model; llama-cpp-python answers 500 to "
                           "any list content): messages go as plain text, the prompt carries the clues, tool results "
                           "are described in words; the images are still rebuilt and hashed for the trace")


# bump whenever a tool's pixels change for the same arguments (2: bilinear rotation); it is part
# of the settings fingerprint and recorded in every trace, so replay can say why hashes differ.
# It lives here, below the tools, because the fingerprint needs it and the tools need this module.
TOOLS_VERSION = "2"


class ToolsConfig(_Model):
    enabled: tuple[str, ...] = ("image_zoom_in_tool", "image_rotate_tool", "python_code_tool")
    box_convention: BoxConvention = BoxConvention.ABSOLUTE
    max_images: int = Field(12, ge=1, description="cap on images per conversation (ref 0 included)")
    code_timeout_s: float = Field(10.0, gt=0, le=60)


class GenerationConfig(_Model):
    max_turns: int = Field(6, ge=1, le=50)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2048, ge=1, description="completion tokens per turn (max_completion_tokens where the "
                                                       "server wants that name)")
    seed: int | None = 0
    top_k: int | None = Field(None, ge=-1, description="vLLM, SGLang, llama.cpp")
    repetition_penalty: float | None = Field(None, gt=0, description="vLLM, SGLang, llama.cpp (repeat_penalty)")
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = Field(
        None, description="OpenAI reasoning models, Gemini; vLLM / SGLang pass it to the chat template")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="vLLM, SGLang, llama.cpp, e.g. {'enable_thinking': false}")
    mm_processor_kwargs: dict[str, Any] | None = Field(None, description="vLLM, SGLang, e.g. {'max_pixels': 1003520}")
    rollouts_per_sample: int = Field(1, ge=1, le=64)
    max_concurrency: int = Field(64, ge=1, le=4096)

    def optional(self) -> dict[str, Any]:
        """The settings only some servers take (``geodistil.profiles.OPTIONAL``), None when not set."""
        return {name: getattr(self, name) for name in OPTIONAL}


class RolloutSettings(_Model):
    """Everything that determines a rollout's result except the sample itself."""

    teacher: TeacherConfig = TeacherConfig()
    generation: GenerationConfig = GenerationConfig()
    tools: ToolsConfig = ToolsConfig()
    image: ImageConfig = ImageConfig()

    def fingerprint(self) -> str:
        """A stable hash of the settings that shape a result (never the key, never concurrency)."""
        from geodistil.prompts import PROMPT_VERSION

        payload: dict[str, Any] = {
            "prompt_version": PROMPT_VERSION,
            "tools_version": TOOLS_VERSION,
            "teacher": {
                "base_url": redact_url(self.teacher.resolved_base_url()),  # a new key is the same teacher
                "model": self.teacher.model,
                "tool_style": self.teacher.tool_style,
                "profile": self.teacher.profile,
                "extra_body": self.teacher.extra_body,
            },
            "generation": self.generation.model_dump(exclude={"max_concurrency"}),
            "tools": self.tools.model_dump(mode="json"),
            "image": self.image.model_dump(),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
