"""The trace: one small, self-describing, replayable JSON document per rollout.

No image bytes, ever: every image in ``messages`` is a reference ``{"type": "image", "ref": k}``.
Ref 0 is the dataset image as sent (preprocessing in ``preprocess``); ref k >= 1 is the
output of a successful tool call, whose arguments are in ``tool_calls_log``, so replay can
rebuild every pixel and prove it by ``output_sha256``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geodistil.errors import TraceError
from geodistil.scoring import AnswerFormat

# 2: an image sent as its dataset file records file_sha256 instead of the pixels' sha256
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

# context_length / image_limit: the teacher refused to take the conversation further (its limit, not an error)
StopReason = Literal["answered", "max_turns", "image_limit", "context_length", "error"]


class LatLon(BaseModel):
    lat: float
    lon: float


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    type: Literal["image"] = "image"
    ref: int


class Message(BaseModel):
    """An OpenAI chat message whose images are references into the trace's images."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[TextPart | ImagePart] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # native OpenAI tool calls, as sent back
    tool_call_id: str | None = None
    reasoning: str | None = None  # reasoning_content some servers return beside content

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def image_refs(self) -> list[int]:
        if isinstance(self.content, list):
            return [p.ref for p in self.content if isinstance(p, ImagePart)]
        return []


class Preprocess(BaseModel):
    """How the dataset image became ref 0 (what replay repeats)."""

    original_size: tuple[int, int]
    sent_size: tuple[int, int]
    max_pixels: int
    # the stored image was decoded at 1/decode_scale (JPEG DCT scaling, else ``reduce``) before the
    # resize, see ``geodistil.images.decode``; traces from before the field decoded at full size
    decode_scale: int = Field(1, ge=1)
    mode: str = "RGB"
    # "source": the dataset's JPEG file was sent as it is; "encoded": the pixels were encoded
    # per the image settings. Either way ref 0's pixels are the decoded, preprocessed image.
    sent_as: Literal["source", "encoded", "not_sent"] = "encoded"  # not_sent: a text-only teacher


class ImageRecord(BaseModel):
    """One image of the conversation and the hash that proves a replay rebuilt it exactly.

    An image whose pixels were hashed has ``sha256`` (mode + size + raw pixels, see
    ``geodistil.images.pixel_sha256``): every tool output, and a dataset image that was encoded.
    A dataset image sent as its own file (``Preprocess.sent_as == "source"``) has ``file_sha256``,
    the hash of the bytes sent, instead: its pixels are decoded only if a tool reads them, and the
    same file decodes to the same pixels. Schema version 1 traces have ``sha256`` on every image.
    """

    ref: int
    size: tuple[int, int]
    sha256: str | None = None
    file_sha256: str | None = None

    @model_validator(mode="after")
    def _hashed(self) -> "ImageRecord":
        if self.sha256 is None and self.file_sha256 is None:
            raise ValueError(f"image {self.ref} records neither sha256 nor file_sha256")
        return self


class ToolCallRecord(BaseModel):
    index: int  # order among the conversation's tool calls
    turn: int
    call_id: str | None = None
    tool_name: str
    dialect: str | None = None  # the dialect the call was read as (hermes, qwen3_xml, native)
    tool_arguments: dict[str, Any] = Field(default_factory=dict)  # as the teacher gave them
    resolved: dict[str, Any] | None = None  # e.g. the pixel box actually cropped
    success: bool
    error: str | None = None
    input_ref: int | None = None
    output_ref: int | None = None
    output_size: tuple[int, int] | None = None
    output_sha256: str | None = None
    output_text: str | None = None  # e.g. what python code printed (truncated)
    duration_ms: float = 0.0


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the server read from its prompt cache
    requests: int = 0
    retries: int = 0

    def add(self, other: "Usage") -> None:
        for name in type(self).model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class TeacherInfo(BaseModel):
    """Provenance of the teacher: never the API key."""

    base_url: str
    model: str
    profile: str | None = None  # the server profile the request parameters followed
    param_corrections: list[str] = Field(default_factory=list)  # parameters the server refused, and what was done
    tool_style: str
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    max_turns: int
    box_convention: str
    tools: list[str]
    tools_version: str = ""
    # each offered tool's own settings (``Tool.settings()``), which replay builds it back from;
    # None in traces from before the field, which replay rebuilds from box_convention and defaults
    tool_settings: dict[str, dict[str, Any]] | None = None
    settings_fingerprint: str


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Trace(BaseModel):
    schema_version: int = SCHEMA_VERSION
    trace_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    # identity
    dataset_path: str
    dataset_split: str | None = None
    dataset_fingerprint: str
    sample_index: int
    rollout_index: int = 0
    # truth and result
    ground_truth: LatLon | None = None
    clues: str | None = None
    final_answer: str | None = None
    prediction: LatLon | None = None
    parse_success: bool = False
    # how the answer was written: boxed as asked, a GLM box, or a plain last line (the prompt ignored)
    answer_format: AnswerFormat | None = None
    distance_km: float = 20000.0
    reward_score: float = 0.0
    stop_reason: StopReason = "error"
    error: str | None = None
    error_kind: str | None = None  # "<family>:<detail>", family as in geodistil.errors (sample_error, teacher_error, ...)
    num_turns: int = 0
    # the conversation
    messages: list[Message] = Field(default_factory=list)
    preprocess: Preprocess | None = None
    images: list[ImageRecord] = Field(default_factory=list)
    tool_calls_log: list[ToolCallRecord] = Field(default_factory=list)
    # provenance
    teacher: TeacherInfo | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None  # the usage at the teacher's price (geodistil.prices); None: no price known
    latency_s: float = 0.0  # time spent waiting for the teacher
    turn_latencies_s: list[float] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    geodistil_version: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def key(self) -> tuple[int, int]:
        return self.sample_index, self.rollout_index

    def tools_used(self) -> list[str]:
        return sorted({c.tool_name for c in self.tool_calls_log})

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Trace":
        import json

        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TraceError(f"not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise TraceError("a trace is a JSON object")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise TraceError(f"schema_version {version!r} is not one of {list(READABLE_SCHEMA_VERSIONS)}")
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise TraceError(f"does not match the trace schema: {exc}") from exc


class TraceRecord(BaseModel):
    """What a run keeps of a finished trace: small (a few hundred bytes), no conversation.

    It is the per-sample Prefect task's result and the manifest's row, so the full trace
    lives only in the trace store, never twice.
    """

    name: str
    sample_index: int
    rollout_index: int
    ok: bool
    error_kind: str | None = None
    error: str | None = None
    parse_success: bool = False
    distance_km: float = 20000.0
    reward_score: float = 0.0
    num_turns: int = 0
    stop_reason: str = "error"
    tools: dict[str, int] = Field(default_factory=dict)  # calls by tool name
    tool_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0

    @classmethod
    def of(cls, trace: Trace, name: str) -> "TraceRecord":
        tools: dict[str, int] = {}
        for call in trace.tool_calls_log:
            tools[call.tool_name] = tools.get(call.tool_name, 0) + 1
        return cls(
            name=name, sample_index=trace.sample_index, rollout_index=trace.rollout_index, ok=trace.ok,
            error_kind=trace.error_kind, error=trace.error, parse_success=trace.parse_success,
            distance_km=trace.distance_km, reward_score=trace.reward_score, num_turns=trace.num_turns,
            stop_reason=trace.stop_reason, tools=tools,
            tool_errors=sum(not c.success for c in trace.tool_calls_log),
            prompt_tokens=trace.usage.prompt_tokens, completion_tokens=trace.usage.completion_tokens,
            cost_usd=trace.cost_usd, latency_s=round(trace.latency_s, 4),
        )
