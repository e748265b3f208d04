"""``SimConfig``: how the simulated teacher behaves; field names match the ``geodistil sim`` flags."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geodistil.dialects import ALIASES, DialectName

from geodistil.sim.emulation import EMULATIONS

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
    profile: Literal["vllm", "sglang", "openai", "openai-reasoning", "gemini", "llama-cpp"] | None = Field(
        None, description="real server to emulate: the parameters it refuses, its error messages, its /v1/models "
                          "(see geodistil.sim.emulation); default: accept everything")
    tool_style: DialectName = Field(
        "hermes", description="dialect of the calls: hermes or qwen3_xml text in the content, native OpenAI "
                              "tool_calls (when the request has tools); text: hermes; default: the profile's")
    think: bool = Field(False, description="open each reply with <think> reasoning that drafts a call and an answer")
    max_context_tokens: int | None = Field(
        None, ge=1, description="context limit (estimated prompt tokens, plus max tokens where the server counts "
                                "them), answered with the profile's 400")
    max_images_per_prompt: int | None = Field(
        None, ge=0, description="images per request (vLLM's --limit-mm-per-prompt, SGLang's "
                              "--limit-mm-data-per-request), answered with that server's 400")
    api_key: str | None = Field(None, description="answer 401 unless the request carries this bearer key")
    rpm_limit: float | None = Field(
        None, gt=0, description="requests per minute taken (a 1 s bucket); more are answered 429 as OpenAI does")
    tpm_limit: float | None = Field(
        None, gt=0, description="prompt tokens (estimated) plus max tokens per minute taken; more are answered 429")
    announce_limits: bool = Field(True, description="send OpenAI's x-ratelimit-* headers with rpm_limit / tpm_limit")
    retry_after: float | None = Field(
        None, ge=0, description="Retry-After of every 429, seconds (default: 1 for rate_429, the wait for the "
                                "limiter's next free slot)")
    known_models_only: bool = Field(
        False, description="answer 404 in OpenAI's shape (model_not_found) to a request for any model but the "
                           "sim's own (default: any model name is served)")
    reasoning: bool = Field(False, description="return a reasoning field where the profile's server has one")
    tool_calls: int | None = Field(
        None, ge=0, le=10, description="tool-call turns per conversation before the answer (default: 0-3, drawn)")
    seed: int = Field(0, description="seeds the answers (with the request content) and the fault draws")

    @field_validator("tool_style", mode="before")
    @classmethod
    def _dialect_alias(cls, value: Any) -> Any:
        return ALIASES.get(value, value) if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _profile_speaks_its_dialect(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("tool_style") is not None:
            return data
        emulation = EMULATIONS.get(data.get("profile"))  # an unknown profile: its own error
        unset = {k: v for k, v in data.items() if k != "tool_style"}  # no profile: the field's default
        return unset if emulation is None else {**unset, "tool_style": emulation.tool_style}

    @model_validator(mode="after")
    def _image_limit_exists(self) -> SimConfig:
        if self.max_images_per_prompt is not None and not EMULATIONS[self.profile].image_limit:
            raise ValueError(f"the {self.profile} server has no per-prompt image limit to emulate")
        return self

    @model_validator(mode="after")
    def _exclusive_faults_fit(self) -> SimConfig:
        if self.rate_429 + self.rate_500 + self.rate_hang > 1.0 + 1e-9:
            raise ValueError("rate_429 + rate_500 + rate_hang must be at most 1")
        return self
