"""The teacher: any OpenAI-compatible chat server, through the ``openai`` async client.

One long-lived client per worker, closed explicitly. Retries live here (exponential backoff
with full jitter, honouring ``Retry-After``) because the openai client's own retries do not
report how often they retried; its ``max_retries`` is therefore 0.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from geodistil.config import GenerationConfig, TeacherConfig
from geodistil.errors import TeacherError
from geodistil.trace import Usage

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class TeacherReply:
    content: str
    tool_calls: list[dict[str, Any]] | None
    reasoning: str | None
    finish_reason: str | None
    usage: Usage
    latency_s: float
    retries: int = 0
    raw_model: str | None = None
    errors: list[str] = field(default_factory=list)  # retried failures, for the record


class EncodedMessages:
    """Chat messages serialised to JSON once each, as they are added.

    A conversation re-sends its whole history on every turn, images included as data URLs of
    a few hundred KB; encoding each message once and joining the parts makes a request body
    cost the new message, not the whole conversation again.
    """

    def __init__(self, messages: Sequence[dict[str, Any]] = ()) -> None:
        self._parts: list[bytes] = []
        for message in messages:
            self.append(message)

    def append(self, message: dict[str, Any]) -> None:
        """Add a message. An image URL given as bytes, a base64 data URL (plain ASCII, nothing to
        escape), goes into the body as it is instead of through the JSON encoder's scan."""
        content = message.get("content")
        if not isinstance(content, list):
            self._parts.append(_dumps(message))
            return
        head = _dumps({k: v for k, v in message.items() if k != "content"})[:-1]
        parts = b", ".join(map(_part_json, content))
        self._parts.append(head + (b", " if len(head) > 1 else b"") + b'"content": [' + parts + b"]}")

    def __bytes__(self) -> bytes:
        return b"[" + b",".join(self._parts) + b"]"


def _part_json(part: Any) -> bytes:
    image_url = part.get("image_url") if isinstance(part, dict) else None
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if isinstance(url, bytes):
        return b'{"type": "image_url", "image_url": {"url": "' + url + b'"}}'
    return _dumps(part)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _retry_after_s(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers if exc.response is not None else {}
    for key, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(key)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            return None  # an HTTP date: fall back to our own backoff
    return None


class TeacherClient:
    """Chat completions with retries and usage accounting."""

    def __init__(self, config: TeacherConfig, max_connections: int = 256, api_key: str | None = None) -> None:
        """``api_key`` overrides the environment variable ``config.api_key_env`` (e.g. from a secret store)."""
        self.config = config
        # aiohttp's connection pool stays cheap with hundreds of connections; httpcore's default
        # pool scans every connection on each request, which dominated CPU at high concurrency
        self._http = openai.DefaultAioHttpClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)),
        )
        self._client = openai.AsyncOpenAI(
            base_url=config.resolved_base_url(),
            api_key=api_key or config.api_key(),
            max_retries=0,
            timeout=config.timeout_s,
            http_client=self._http,
        )

    async def __aenter__(self) -> "TeacherClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def list_models(self) -> list[str]:
        try:
            page = await self._client.models.list()
        except openai.OpenAIError as exc:
            raise TeacherError(f"listing models failed: {exc}") from exc
        return [m.id for m in page.data]

    def _backoff_s(self, attempt: int) -> float:
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * 2**attempt)
        return random.uniform(0, cap)

    async def complete(
        self,
        messages: Sequence[dict[str, Any]] | EncodedMessages,
        generation: GenerationConfig,
        tools: list[dict[str, Any]] | None = None,
        seed: int | None = None,
    ) -> TeacherReply:
        """One chat completion; retries transient failures, raises ``TeacherError`` after the last."""
        kwargs: dict[str, Any] = dict(
            model=self.config.model,
            temperature=generation.temperature,
            top_p=generation.top_p,
            max_tokens=generation.max_tokens,
        )
        if seed is not None:
            kwargs["seed"] = seed
        if tools:
            kwargs["tools"] = tools
        encoded = messages if isinstance(messages, EncodedMessages) else EncodedMessages(messages)
        # the body as bytes, sent as it is: the SDK neither walks nor re-encodes the messages
        body = json.dumps(kwargs).encode()[:-1] + b', "messages": ' + bytes(encoded) + b"}"
        errors: list[str] = []
        for attempt in range(self.config.max_retries + 1):
            start = time.perf_counter()
            try:
                # the plain POST skips the SDK's recursive TypedDict transform of ``messages``, which
                # walks every part of every turn again on each request (about 16 ms a turn here),
                # and the raw response is read as plain JSON rather than built into SDK models
                response = await self._client.post("/chat/completions", content=body, cast_to=httpx.Response)
                data = response.json()
            except openai.APIStatusError as exc:
                status = exc.status_code
                errors.append(f"HTTP {status}")
                if status not in RETRYABLE_STATUS or attempt == self.config.max_retries:
                    raise TeacherError(f"teacher answered HTTP {status} after {attempt + 1} attempts: {exc.message}",
                                       kind=f"http_{status}") from exc
                delay = _retry_after_s(exc)
                await asyncio.sleep(delay if delay is not None else self._backoff_s(attempt))
                continue
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
                errors.append(kind)
                if attempt == self.config.max_retries:
                    raise TeacherError(f"teacher {kind} after {attempt + 1} attempts", kind=kind) from exc
                await asyncio.sleep(self._backoff_s(attempt))
                continue
            except openai.OpenAIError as exc:
                raise TeacherError(f"teacher request failed: {exc}") from exc
            except ValueError as exc:
                raise TeacherError(f"teacher answered something that is not JSON: {exc}", kind="bad_response") from exc
            return self._reply(data, time.perf_counter() - start, attempt, errors)
        raise AssertionError("unreachable")

    @staticmethod
    def _reply(data: dict[str, Any], latency_s: float, retries: int, errors: list[str]) -> TeacherReply:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0].get("message"), dict):
            raise TeacherError("teacher returned no choices", kind="empty_response")
        choice = choices[0]
        message = choice["message"]
        usage = Usage(requests=1 + retries, retries=retries)
        raw_usage = data.get("usage") or {}
        usage.prompt_tokens = int(raw_usage.get("prompt_tokens") or 0)
        usage.completion_tokens = int(raw_usage.get("completion_tokens") or 0)
        usage.total_tokens = int(raw_usage.get("total_tokens") or 0)
        return TeacherReply(
            content=message.get("content") or "",
            tool_calls=message.get("tool_calls") or None,
            reasoning=message.get("reasoning_content") or message.get("reasoning"),
            finish_reason=choice.get("finish_reason"),
            usage=usage,
            latency_s=latency_s,
            retries=retries,
            raw_model=data.get("model"),
            errors=errors,
        )
