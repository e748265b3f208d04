"""The teacher: any OpenAI-compatible chat server, through the ``openai`` async client.

One long-lived client per worker, closed explicitly. Retries live here (exponential backoff
with full jitter, honouring ``Retry-After``) because the openai client's own retries do not
report how often they retried; its ``max_retries`` is therefore 0.

Only transient answers are retried (``RETRYABLE_STATUS``, timeouts, connection errors). A 4xx
is read for its meaning (``geodistil.rejections``): a parameter the server refuses is
corrected once and the correction kept for every later request of this client; a context or
image limit raises ``TeacherLimitReached``; anything else ``TeacherRejected`` at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from geodistil.admission import Admission, Limits, admission_for
from geodistil.config import GenerationConfig, TeacherConfig
from geodistil.errors import (
    TeacherAuthError,
    TeacherError,
    TeacherLimitReached,
    TeacherRejected,
)
from geodistil.profiles import PROFILES, Inference, ServerProfile, by_name, infer
from geodistil.redact import redact_url, split_credentials
from geodistil.rejections import Rejection, read_rejection
from geodistil.trace import Usage

# 409 with the openai SDK's own retry rule (OpenAI answers it for lock timeouts); the rest transient
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_NEVER_CORRECTED = {"model", "messages", "tools"}

log = logging.getLogger(__name__)


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

    def pop(self) -> None:
        self._parts.pop()

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


IMAGE_TOKENS_ESTIMATE = 1000  # about a 1024x768 image on a Qwen2.5-VL; the usage of replies corrects it
_DATA_URL = b"data:image/"


def prompt_tokens_estimate(encoded: bytes) -> float:
    """Prompt tokens before the request: four characters a token, a fixed cost per image.

    An image is a data URL inside a JSON string, so it ends at the next quote: found with
    ``bytes.find`` (memchr), not a regex walking the 100 KB or so of base64 byte by byte.
    """
    images = image_bytes = 0
    start = encoded.find(_DATA_URL)
    while start != -1:
        end = encoded.find(b'"', start)
        end = len(encoded) if end == -1 else end
        images, image_bytes = images + 1, image_bytes + end - start
        start = encoded.find(_DATA_URL, end)
    return (len(encoded) - image_bytes) / 4 + IMAGE_TOKENS_ESTIMATE * images


def failure_kind(exc: BaseException) -> str:
    """What a failed connection was, named for what happened: ``connection_refused``, ``dns``,
    ``timeout`` or ``connection``.

    The openai client's aiohttp transport reports a refused connection as a connect *timeout*,
    so the cause chain is read for the operating system's own error first.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection_refused"
        if isinstance(cause, socket.gaierror):
            return "dns"
        cause = cause.__cause__ or cause.__context__
    return "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"


class ParamCorrections:
    """Request parameters the server refused, learnt from its 400s and applied to every later request.

    One correction per parameter: ``max_tokens`` becomes ``max_completion_tokens`` (OpenAI's
    reasoning models), any other refused parameter or value is left out (the server's default
    applies). ``notes`` says what was changed, for the traces' provenance.
    """

    def __init__(self) -> None:
        self._renamed: dict[str, str] = {}
        self._dropped: set[str] = set()
        self.notes: list[str] = []

    def apply(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in params.items():
            if name not in self._dropped:
                out[self._renamed.get(name, name)] = value
        return out

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("teacher: %s", text)

    def learn(self, rejection: Rejection, sent: dict[str, Any]) -> bool:
        """Whether this rejection named a parameter of ``sent`` that is now corrected."""
        param = rejection.param
        if (rejection.kind not in ("unsupported_parameter", "unsupported_value") or param is None
                or param not in sent or param in _NEVER_CORRECTED or param in self._renamed or param in self._dropped):
            return False
        if param == "max_tokens" and rejection.kind == "unsupported_parameter":
            self._renamed[param] = "max_completion_tokens"
            self.note("max_tokens refused (unsupported_parameter): sending max_completion_tokens")
        else:
            self._dropped.add(param)
            self.note(f"{param}={sent[param]!r} refused ({rejection.kind}): left out, the server's default applies")
        return True


def _body_of(response: httpx.Response | None) -> Any:
    if response is None:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def rejected(status: int, rejection: Rejection) -> TeacherRejected:
    """The exception for a 4xx answer that no correction can fix."""
    message = f"teacher answered HTTP {status} ({rejection.kind}): {rejection.message}"
    if rejection.kind in ("context_length", "image_limit"):
        return TeacherLimitReached(message, rejection.kind, status)
    if rejection.kind == "auth":
        return TeacherAuthError(message, f"http_{status}", status)
    return TeacherRejected(message, f"http_{status}", status)


class TeacherClient:
    """Chat completions with retries, the server's profile and usage accounting."""

    def __init__(self, config: TeacherConfig, max_connections: int = 256, api_key: str | None = None) -> None:
        """``api_key`` overrides the environment variable ``config.api_key_env`` (e.g. from a secret store)."""
        self.config = config
        self.corrections = ParamCorrections()
        self.inference: Inference | None = None
        self._profile_lock = asyncio.Lock()
        # the first request goes alone: a refused parameter is then learnt once, not by every
        # conversation that started at the same time
        self._first_lock = asyncio.Lock()
        self._settled = False
        self.first_request_out = asyncio.Event()  # set once that first request has gone out
        self._max_connections = max_connections
        self.admission: Admission | None = None  # the process's shared one for this teacher, on first use
        # aiohttp's connection pool stays cheap with hundreds of connections; httpcore's default
        # pool scans every connection on each request, which dominated CPU at high concurrency
        self._http = openai.DefaultAioHttpClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)),
        )
        base_url, query, auth = split_credentials(config.resolved_base_url())
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or config.api_key(),
            max_retries=0,
            timeout=config.timeout_s,
            http_client=self._http,
            default_headers={**auth, **config.resolved_headers()},
            default_query=query or None,
        )

    async def __aenter__(self) -> "TeacherClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def models_listing(self) -> dict[str, Any]:
        """``GET /models`` as the server wrote it (servers add fields such as ``max_model_len``)."""
        try:
            response = await self._client.get("/models", cast_to=httpx.Response)
            listing = response.json()
        except openai.APIStatusError as exc:
            raise rejected(exc.status_code, read_rejection(exc.status_code, _body_of(exc.response))) from exc
        except openai.APIConnectionError as exc:
            kind = failure_kind(exc)
            raise TeacherError(f"listing models failed: {kind.replace('_', ' ')}", kind=kind) from exc
        except (openai.OpenAIError, ValueError) as exc:
            raise TeacherError(f"listing models failed: {exc}") from exc
        return listing if isinstance(listing, dict) else {}

    async def server_profile(self) -> ServerProfile:
        """The server profile: the configured one, or for ``auto`` inferred once per client."""
        if self.inference is None:
            async with self._profile_lock:
                if self.inference is None:
                    self.inference = await self._infer()
                    log.info("teacher profile %s (%s)", self.inference.profile.name, self.inference.why)
        return self.inference.profile

    async def _infer(self) -> Inference:
        config = self.config
        if config.profile != "auto":
            return Inference(PROFILES[config.profile], "set by --teacher-profile")
        named = by_name(config.model, config.resolved_base_url())
        if named is not None:
            return named
        try:
            listing: dict[str, Any] | None = await self.models_listing()
        except TeacherError:
            listing = None  # the chat request will say what is wrong, if anything
        return infer(config.model, config.resolved_base_url(), listing)

    def request_params(self, profile: ServerProfile, generation: GenerationConfig,
                       seed: int | None) -> dict[str, Any]:
        """The parameters this client sends: the profile's, ``extra_body``, then the corrections learnt."""
        optional = generation.optional()
        for name in profile.refused(optional):
            self.corrections.note(f"{name} not sent: the {profile.name} profile does not take it")
        params = profile.params(max_tokens=generation.max_tokens, temperature=generation.temperature,
                                top_p=generation.top_p, seed=seed,
                                optional={k: v for k, v in optional.items() if k in profile.optional})
        params.update(self.config.resolved_extra_body())
        return self.corrections.apply(params)

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
        """One chat completion; retries transient failures and raises ``TeacherError`` after the last,
        raises ``TeacherRejected`` (or a subclass) for a 4xx no parameter correction fixes."""
        profile = await self.server_profile()
        if not self._settled:
            async with self._first_lock:
                if not self._settled:  # else another conversation's first request went through meanwhile
                    self.first_request_out.set()
                    try:
                        return await self._complete(profile, messages, generation, tools, seed)
                    finally:
                        self._settled = True
        # outside the lock: the requests that queued behind the first one go out together
        return await self._complete(profile, messages, generation, tools, seed)

    async def _complete(self, profile: ServerProfile, messages: Sequence[dict[str, Any]] | EncodedMessages,
                        generation: GenerationConfig, tools: list[dict[str, Any]] | None,
                        seed: int | None) -> TeacherReply:
        counts = {"attempt": 0, "corrected": 0}
        try:
            return await self._send(profile, messages, generation, tools, seed, counts)
        except TeacherError as exc:
            exc.requests, exc.retries = counts["attempt"] + counts["corrected"] + 1, counts["attempt"]
            raise

    def _admission(self) -> Admission:
        if self.admission is None:
            c = self.config
            self.admission = admission_for(redact_url(c.resolved_base_url()), c.model, Limits(
                rpm=c.rpm, tpm=c.tpm, max_concurrency=self._max_connections, backoff_base_s=c.backoff_base_s,
                backoff_max_s=c.backoff_max_s, max_outage_s=c.max_outage_s))
        return self.admission

    async def _send(self, profile: ServerProfile, messages: Sequence[dict[str, Any]] | EncodedMessages,
                    generation: GenerationConfig, tools: list[dict[str, Any]] | None, seed: int | None,
                    counts: dict[str, int]) -> TeacherReply:
        """Send until an answer; a failure while the teacher is down (the breaker open) uses no retry:
        the request waits in ``Admission.acquire`` until the teacher answers or the outage is too long."""
        encoded = bytes(messages if isinstance(messages, EncodedMessages) else EncodedMessages(messages))
        admission = self._admission()
        estimated = admission.estimate(prompt_tokens_estimate(encoded), generation.max_tokens)
        errors: list[str] = []
        while True:
            attempt = counts["attempt"]
            params = self.request_params(profile, generation, seed)
            head: dict[str, Any] = {"model": self.config.model, **params}
            if tools:
                head["tools"] = tools
            # the body as bytes, sent as it is: the SDK neither walks nor re-encodes the messages
            body = json.dumps(head).encode()[:-1] + b', "messages": ' + encoded + b"}"
            probe = await admission.acquire(estimated)
            start = time.perf_counter()
            try:
                # the plain POST skips the SDK's recursive TypedDict transform of ``messages``, which
                # walks every part of every turn again on each request (about 16 ms a turn here),
                # and the raw response is read as plain JSON rather than built into SDK models
                response = await self._client.post("/chat/completions", content=body, cast_to=httpx.Response)
                data = response.json()
            except openai.APIStatusError as exc:
                status = exc.status_code
                headers = exc.response.headers if exc.response is not None else None
                if status < 500 and status not in RETRYABLE_STATUS:
                    admission.answered(probe, headers, 0, 0, 0)
                    rejection = read_rejection(status, _body_of(exc.response))
                    if self.corrections.learn(rejection, params):
                        counts["corrected"] += 1
                        continue
                    raise rejected(status, rejection) from exc
                errors.append(f"HTTP {status}")
                delay = _retry_after_s(exc)
                own_wait = None  # what this request waits alone (a stray 429's Retry-After)
                if status == 429:
                    own_wait = admission.throttled_by(probe, headers, delay)
                else:
                    admission.failed(f"http_{status}", probe)
                if admission.breaker.open:
                    continue
                if status not in RETRYABLE_STATUS or attempt == self.config.max_retries:
                    raise TeacherError(f"teacher answered HTTP {status} after {attempt + 1} attempts: {exc.message}",
                                       kind=f"http_{status}") from exc
                if own_wait is not None:
                    await asyncio.sleep(own_wait)
                elif delay is None:  # with a Retry-After of a limit, the shared pause makes every request wait
                    await asyncio.sleep(self._backoff_s(attempt))
                counts["attempt"] += 1
                continue
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                kind = failure_kind(exc)
                errors.append(kind)
                admission.failed(kind, probe)
                if admission.breaker.open:
                    continue
                if attempt == self.config.max_retries:
                    raise TeacherError(f"teacher {kind.replace('_', ' ')} after {attempt + 1} attempts",
                                       kind=kind) from exc
                await asyncio.sleep(self._backoff_s(attempt))
                counts["attempt"] += 1
                continue
            except openai.OpenAIError as exc:
                raise TeacherError(f"teacher request failed: {exc}") from exc
            except ValueError as exc:
                raise TeacherError(f"teacher answered something that is not JSON: {exc}", kind="bad_response") from exc
            finally:
                admission.release()
            reply = self._reply(data, time.perf_counter() - start, attempt, errors)
            reply.usage.requests += counts["corrected"]
            admission.answered(probe, response.headers, estimated, reply.usage.prompt_tokens, reply.usage.total_tokens)
            return reply

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
        details = raw_usage.get("prompt_tokens_details") or {}
        usage.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
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
