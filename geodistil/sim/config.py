"""``SimConfig``: how the simulated teacher behaves; field names match the ``geodistil sim`` flags."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geodistil.dialects import ALIASES, DialectName

_RATE = {"ge": 0.0, "le": 1.0}


class SimConfig(BaseModel):
    """Latency, fault rates and tool-call style of the simulated teacher.

    The fault rates are shares of chat-completion requests. 429, 500 and hang exclude one
    another (their sum is at most 1); malformed and no-box apply to the requests that get
    a 200 answer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (0: any free port)")
    latency: float = Field(0.0, ge=0, description="seconds before each answer")
    latency_spread: float = Field(0.0, ge=0, description="random extra seconds, uniform in [0, spread]")
    rate_429: float = Field(0.0, **_RATE, description="share of requests answered 429 with Retry-After")
    rate_500: float = Field(0.0, **_RATE, description="share of requests answered 500")
    rate_hang: float = Field(0.0, **_RATE, description="share of requests never answered")
    rate_malformed: float = Field(0.0, **_RATE, description="share of answers that are a tool call with broken JSON")
    rate_no_box: float = Field(0.0, **_RATE, description="share of answers without \\boxed{}")
    tool_style: DialectName = Field(
        "hermes", description="dialect of the calls: hermes or qwen3_xml text in the content, native OpenAI "
                              "tool_calls (when the request has tools); text: hermes")
    think: bool = Field(False, description="open each reply with <think> reasoning that drafts a call and an answer")
    tool_calls: int | None = Field(
        None, ge=0, le=10, description="tool-call turns per conversation before the answer (default: 0-3, drawn)")
    seed: int = Field(0, description="seeds the answers (with the request content) and the fault draws")

    @field_validator("tool_style", mode="before")
    @classmethod
    def _dialect_alias(cls, value: Any) -> Any:
        return ALIASES.get(value, value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exclusive_faults_fit(self) -> SimConfig:
        if self.rate_429 + self.rate_500 + self.rate_hang > 1.0 + 1e-9:
            raise ValueError("rate_429 + rate_500 + rate_hang must be at most 1")
        return self
