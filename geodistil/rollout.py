"""The multi-turn loop for one sample: teacher → tool calls → tool images → teacher → … → answer.

``Rollout`` is one conversation: it owns the messages and the ``Trace`` it builds; ``rollout``
runs one. It always returns a ``Trace``: a sample that cannot be read, a teacher that fails after
every retry, or a broken code sandbox gives a trace with ``error`` (its ``error_kind`` from the
error's class) and ``stop_reason="error"``, never an exception. A tool call's own failure is no
such error: the teacher is shown it as the call's result and may try again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from datetime import datetime, timezone
from typing import Any

from PIL import Image

import geodistil
from geodistil import prompts, reasoning
from geodistil.config import ImageConfig, RolloutSettings
from geodistil.data import Decoding, GeoDataset, Sample, undecodable
from geodistil.dialects import Reading, ToolCall, ToolCallProblem, ToolResult, dialect_named
from geodistil.errors import GeodistilError, SampleError, SandboxError, TeacherError, TeacherLimitReached, ToolError
from geodistil.prices import Price
from geodistil.images import data_url, image_data_url, pixel_sha256, preprocess, sendable_source
from geodistil.redact import redact_url
from geodistil.scoring import parse_answer, read_answer, score
from geodistil.teacher import EncodedMessages, TeacherClient
from geodistil.tools import TOOLS_VERSION, Tool, build_tools, input_ref_of, openai_tool_specs
from geodistil.trace import (
    ImagePart, ImageRecord, LatLon, Message, Preprocess, TeacherInfo, TextPart, ToolCallRecord, Trace,
)

NUDGE = "Please give your final answer now as \\boxed{latitude, longitude}."


@dataclass
class RolloutContext:
    """What every rollout of a run shares: settings, one teacher client, the tools."""

    settings: RolloutSettings
    teacher: TeacherClient
    tools: dict[str, Tool] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: RolloutSettings, max_connections: int | None = None,
               api_key: str | None = None) -> "RolloutContext":
        """``api_key`` overrides the teacher's environment variable (the caller resolved it from a secret store)."""
        connections = max_connections or settings.generation.max_concurrency
        return cls(settings, TeacherClient(settings.teacher, max_connections=connections, api_key=api_key),
                   build_tools(settings.tools))

    async def close(self) -> None:
        await self.teacher.close()

    @cached_property
    def price(self) -> Price | None:
        return self.settings.teacher.price()

    @cached_property
    def tool_specs(self) -> list[dict[str, Any]]:
        return openai_tool_specs(self.tools)

    @cached_property
    def teacher_info(self) -> TeacherInfo:
        """Provenance shared by every trace of the context: built (and fingerprinted) once."""
        s = self.settings
        return TeacherInfo(
            base_url=redact_url(s.teacher.resolved_base_url()), model=s.teacher.model, profile=s.teacher.profile,
            tool_style=s.teacher.tool_style or "auto",
            temperature=s.generation.temperature, top_p=s.generation.top_p, max_tokens=s.generation.max_tokens,
            seed=s.generation.seed, max_turns=s.generation.max_turns,
            box_convention=s.tools.box_convention.value, tools=list(self.tools), tools_version=TOOLS_VERSION,
            tool_settings={name: tool.settings() for name, tool in self.tools.items()},
            settings_fingerprint=s.fingerprint(),
        )


def rollout_seed(seed: int | None, sample_index: int, rollout_index: int) -> int | None:
    """A per-rollout seed, so rollouts of one sample differ but each is reproducible."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{sample_index}:{rollout_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class _Conversation:
    """The messages twice over: as stored (image refs) and as sent (data URLs, encoded once)."""

    def __init__(self, image_format: str, quality: int, text_only: bool = False) -> None:
        self.stored: list[Message] = []
        self.sent = EncodedMessages()
        self.images: list[Image.Image] = []
        self.records: list[ImageRecord] = []
        self._urls: list[bytes] = []  # data URLs, spliced into request bodies as they are
        self._format, self._quality, self._text_only = image_format, quality, text_only

    def add_image(self, image: Image.Image, source: bytes | None = None) -> int:
        """Register an image (hash + data URL computed once) and return its ref.

        ``source``: the image's JPEG file, sent as it is instead of encoding ``image`` again; its
        hash is the file's, so ``image`` may stay undecoded (``Decoding.lazy``) unless a tool reads it.
        """
        ref = len(self.images)
        self.images.append(image)
        if source is not None:
            self.records.append(ImageRecord(ref=ref, size=image.size, file_sha256=hashlib.sha256(source).hexdigest()))
        else:
            self.records.append(ImageRecord(ref=ref, size=image.size, sha256=pixel_sha256(image)))
        if not self._text_only:
            self._urls.append(data_url(source) if source is not None
                              else image_data_url(image, self._format, self._quality))
        return ref

    def pop(self) -> None:
        """Take back the last message (a request the teacher refused)."""
        self.stored.pop()
        self.sent.pop()

    def add(self, message: Message, sent: dict[str, Any] | None = None) -> None:
        if self._text_only and isinstance(message.content, list):
            # what a text-only teacher is sent, and so what the trace says it saw: the words alone,
            # as one string (llama-cpp-python's text chat templates take no list of parts)
            text = "\n\n".join(p.text for p in message.content if isinstance(p, TextPart))
            message = message.model_copy(update={"content": text})
        self.stored.append(message)
        if sent is None:
            sent = message.model_dump(exclude_none=True, exclude={"reasoning"})
            if isinstance(message.content, list):
                sent["content"] = [
                    {"type": "text", "text": p.text} if isinstance(p, TextPart)
                    else {"type": "image_url", "image_url": {"url": self._urls[p.ref]}}
                    for p in message.content
                ]
        self.sent.append(sent)


def _load(dataset: GeoDataset, sample_index: int, settings: ImageConfig) -> tuple[Sample, Image.Image, bytes | None]:
    """The sample, its image as sent, and the file to send for it when no re-encoding is needed.

    The sample returned holds only the image as sent: the conversation keeps nothing larger.
    """
    sample = dataset.sample(sample_index, Decoding(fit=settings.max_pixels, max_pixels=settings.max_decoded_pixels,
                                                   lazy=True))
    try:  # the pixels of a lazily read JPEG are decoded here only if they are to be resized or encoded
        sent = preprocess(sample.image, settings.max_pixels)
        source = sendable_source(sample.image, sent, sample.encoded, settings.image_format, sample.original_size)
        if source is None:
            sent.load()
    except Exception as exc:  # Pillow raises many kinds for a broken file
        raise undecodable(sample_index, exc) from exc
    return replace(sample, image=sent, encoded=None), sent, source


class Rollout:
    """One (sample, rollout) conversation: owns the conversation and the trace it builds.

    ``run`` walks the turns (teacher → tool calls → tool images → teacher → … → answer) and
    always returns the scored ``Trace``; every step below writes the conversation and the trace
    through ``self``, so the two never disagree.
    """

    def __init__(self, dataset: GeoDataset, sample_index: int, rollout_index: int, ctx: RolloutContext) -> None:
        self.dataset, self.ctx, self.settings = dataset, ctx, ctx.settings
        image = ctx.settings.image
        self.trace = Trace(
            dataset_path=dataset.path, dataset_split=dataset.split, dataset_fingerprint=dataset.fingerprint,
            sample_index=sample_index, rollout_index=rollout_index, teacher=ctx.teacher_info,
            geodistil_version=geodistil.__version__,
        )
        self.convo = _Conversation(image.image_format, image.jpeg_quality, image.text_only)
        self.tools: list[dict[str, Any]] | None = None  # the request's ``tools``, in the dialect's form
        self.seed = rollout_seed(ctx.settings.generation.seed, sample_index, rollout_index)

    async def run(self) -> Trace:
        """Run the conversation and return its scored trace; a failure is the trace's ``error``."""
        trace = self.trace
        try:
            sample, ref0 = await self._load()
            await self._converse(sample, ref0)
        except (SampleError, TeacherError) as exc:  # their messages name the sample or the teacher already
            self._fail(exc, str(exc))
        except SandboxError as exc:  # the machine's failure, not the teacher's: never shown to it
            self._fail(exc, f"sample {trace.sample_index}: the code sandbox failed: {exc}")
        except Exception as exc:  # errors are data: one sample never crashes the run
            self._fail(GeodistilError(), f"sample {trace.sample_index}: internal error {type(exc).__name__}: {exc}")
        trace.messages = self.convo.stored
        trace.images = self.convo.records
        trace.teacher = _provenance(self.ctx, trace.teacher)
        trace.finished_at = datetime.now(timezone.utc)
        trace.cost_usd = self.ctx.price.cost(trace.usage) if self.ctx.price is not None else None
        _score(trace)
        return trace

    def _fail(self, exc: GeodistilError, message: str) -> None:
        if isinstance(exc, TeacherError):
            self._account_failure(exc)
        self.trace.error, self.trace.error_kind, self.trace.stop_reason = message, exc.error_kind, "error"

    async def _load(self) -> tuple[Sample, int]:
        """Read the sample, register its image as sent (ref 0) and record how it was prepared."""
        image = self.settings.image

        def load_and_register() -> tuple[Sample, Image.Image, bytes | None, int]:
            # one trip to a thread: the samples of a run start together and queue for a few threads
            sample, sent_image, source = _load(self.dataset, self.trace.sample_index, image)
            return sample, sent_image, source, self.convo.add_image(sent_image, source)

        sample, sent_image, source, ref0 = await asyncio.to_thread(load_and_register)
        self.trace.ground_truth = LatLon(lat=sample.lat, lon=sample.lon)
        self.trace.clues = sample.clues
        self.trace.preprocess = Preprocess(original_size=sample.original_size, sent_size=sent_image.size,
                                           max_pixels=image.max_pixels, decode_scale=sample.decode_scale,
                                           sent_as="not_sent" if image.text_only
                                           else "source" if source is not None else "encoded")
        return sample, ref0

    async def _converse(self, sample: Sample, ref0: int) -> None:
        trace, convo, generation = self.trace, self.convo, self.settings.generation
        profile = await self.ctx.teacher.server_profile()
        dialect = dialect_named(self.settings.teacher.tool_style or profile.dialect)
        specs = self.ctx.tool_specs
        self.tools = dialect.request_tools(specs)
        convo.add(Message(role="system", content=prompts.SYSTEM_PROMPT))
        convo.add(Message(role="user", content=[
            ImagePart(ref=ref0),
            TextPart(text=prompts.user_text(sample.clues, dialect.prompt_block(specs))),
        ]))
        image_cap_hit = False
        for turn in range(1, generation.max_turns + 1):
            try:
                content, tool_calls = await self._ask()
            except TeacherLimitReached as exc:
                await self._last_word(exc)
                return
            trace.num_turns = turn
            reading = dialect.read(content, tool_calls, specs)
            if not reading.calls:
                if parse_answer(content) is not None:
                    trace.stop_reason = "answered"
                    return
                if turn < generation.max_turns:
                    convo.add(Message(role="user", content=NUDGE))
                continue
            image_cap_hit |= await self._run_tools(reading, turn)
        trace.stop_reason = "image_limit" if image_cap_hit else "max_turns"

    async def _ask(self) -> tuple[str, list[dict[str, Any]] | None]:
        """One request with the conversation so far; the reply joins the conversation and the
        trace's usage, and its visible text is the trace's ``final_answer`` (so far). Returns that
        text and the reply's native tool calls."""
        reply = await self.ctx.teacher.complete(self.convo.sent, self.settings.generation, tools=self.tools,
                                                seed=self.seed)
        trace = self.trace
        trace.usage.add(reply.usage)
        trace.latency_s += reply.latency_s
        trace.turn_latencies_s.append(round(reply.latency_s, 4))
        thinking, content = reasoning.separate(reply.content, reply.reasoning)
        self.convo.add(Message(role="assistant", content=content, tool_calls=reply.tool_calls, reasoning=thinking))
        trace.final_answer = content
        return content, reply.tool_calls

    async def _last_word(self, limit: TeacherLimitReached) -> None:
        """End a conversation the teacher cannot take further: ``stop_reason`` is the limit's kind.

        When the refused request ended with tool images, one last request goes without them and
        asks for the answer; the trace keeps that request (the images' texts, then the nudge) and
        is scored from whatever the teacher said. If that is refused too, the conversation ends
        where it was. Either way it is a finished, scored trace, not an error.
        """
        trace, convo = self.trace, self.convo
        trace.stop_reason = limit.kind  # type: ignore[assignment]
        self._account_failure(limit)
        last = convo.stored[-1] if convo.stored else None
        if last is None or last.role != "user" or not last.image_refs() or len(convo.stored) <= 2:
            return
        convo.pop()
        text = "\n".join(p.text for p in last.content if isinstance(p, TextPart))  # type: ignore[union-attr]
        convo.add(Message(role="user", content=f"{text}\n\n(The images could not be sent.) {NUDGE}".lstrip()))
        try:
            await self._ask()
        except TeacherLimitReached as again:
            self._account_failure(again)
            return
        trace.num_turns += 1

    def _account_failure(self, exc: TeacherError) -> None:
        """Count the requests a failed call sent: every request the teacher got is in the usage."""
        self.trace.usage.requests += exc.requests
        self.trace.usage.retries += exc.retries

    async def _run_tools(self, reading: Reading, turn: int) -> bool:
        """Execute one turn's calls and send their results back in the reply's dialect; True if the
        image cap stopped one. A broken sandbox (``SandboxError``) ends the sample instead."""
        results: list[ToolResult] = []
        cap_hit = False
        max_images = self.settings.tools.max_images
        for call in reading.calls:
            record = ToolCallRecord(index=len(self.trace.tool_calls_log), turn=turn, call_id=call.call_id,
                                    tool_name=call.name or "?", dialect=call.dialect, success=False)
            start = time.perf_counter()
            note = None
            if isinstance(call, ToolCallProblem):
                record.error = call.error
            else:
                record.tool_arguments = call.arguments
                try:
                    if len(self.convo.images) >= max_images:
                        cap_hit = True
                        raise ToolError(f"image limit of {max_images} reached; answer now")
                    note = await self._apply(record, call)
                except ToolError as exc:
                    record.error = str(exc)
                except SandboxError:
                    raise
                except Exception as exc:  # a tool bug on odd input is still the teacher's tool error
                    record.error = f"{type(exc).__name__}: {exc}"
            record.duration_ms = round((time.perf_counter() - start) * 1000, 2)
            self.trace.tool_calls_log.append(record)
            text = prompts.tool_response_text(record.tool_name, record.output_ref, record.output_size,
                                              note=note, error=record.error)
            results.append(ToolResult(call.call_id, text, record.output_ref))
        for message in reading.dialect.result_messages(results):
            self.convo.add(message)
        return cap_hit

    async def _apply(self, record: ToolCallRecord, call: ToolCall) -> str | None:
        """Run one call's tool on its input image; the output becomes the next image ref."""
        tool = self.ctx.tools.get(call.name)
        if tool is None:
            raise ToolError(f"unknown tool {call.name!r}; available: {list(self.ctx.tools)}")
        record.input_ref = input_ref_of(call.arguments, len(self.convo.images))
        source = self.convo.images[record.input_ref]
        output = await asyncio.to_thread(tool.apply, source, call.arguments)
        ref = await asyncio.to_thread(self.convo.add_image, output.image)
        image_record = self.convo.records[ref]
        record.success, record.resolved = True, output.resolved
        record.output_ref, record.output_size, record.output_sha256 = ref, image_record.size, image_record.sha256
        record.output_text = output.text
        return output.text


async def rollout(dataset: GeoDataset, sample_index: int, rollout_index: int, ctx: RolloutContext) -> Trace:
    """Run the conversation for one (sample, rollout) and return its scored trace."""
    return await Rollout(dataset, sample_index, rollout_index, ctx).run()


def _score(trace: Trace) -> None:
    answer = read_answer(trace.final_answer)
    prediction = (answer.lat, answer.lon) if answer else None
    trace.parse_success = answer is not None
    trace.prediction = LatLon(lat=answer.lat, lon=answer.lon) if answer else None
    trace.answer_format = answer.format if answer else None
    if trace.ground_truth is not None:
        trace.distance_km, trace.reward_score = score(prediction, (trace.ground_truth.lat, trace.ground_truth.lon))


def _provenance(ctx: RolloutContext, info: TeacherInfo | None) -> TeacherInfo | None:
    """The shared provenance plus what this client learnt about the server (profile, corrections)."""
    inference = ctx.teacher.inference
    if info is None or inference is None:
        return info
    return info.model_copy(update={
        "profile": inference.profile.name, "param_corrections": list(ctx.teacher.corrections.notes),
        "tool_style": ctx.settings.teacher.tool_style or inference.profile.dialect})
