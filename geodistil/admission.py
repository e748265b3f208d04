"""Admission to the teacher: rate limits, adaptive concurrency and a circuit breaker, shared.

A run is hours of traffic to someone else's server, so the decision to send a request is
taken once per teacher per process (``admission_for``), not per conversation: every
conversation, and so every Prefect task of the process, waits in the same queue.

- Rate: requests and tokens per minute are paced (each request reserves the next free slot,
  so a burst is spread rather than refused). The limits are the flags (``rpm``, ``tpm``),
  else the ones the server announces in OpenAI's ``x-ratelimit-*`` headers, else a rate
  learnt from 429s: cut to 70 % on a refusal, grown 0.5 % per clean reply.
- A 429 counts as a limit only while at least a quarter of the last answers are 429s; a stray
  one is waited out by its own request alone, so random refusals do not throttle the run.
- Concurrency: requests in flight are capped by a limit halved on a 429 or a timeout and
  grown by one per window of clean replies (AIMD), never above the client's connections.
- ``Retry-After`` of a limit pauses every request together, capped at ``backoff_max_s``.
- The breaker: a refused connection, a DNS failure or ``OPEN_AFTER`` 5xx / timeouts in a row
  open it; new requests then wait while one probe at a time (a real request) checks the
  teacher, with backoff; its answer closes it. Past ``max_outage_s`` the waiting requests
  fail with ``TeacherUnreachable``, whose traces tell the driver to stop (``FailFast``).

State changes are logged; ``snapshot`` and ``status_line`` show the state for a progress line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from geodistil.errors import TeacherUnreachable

OPEN_AFTER = 5  # 5xx or timeouts in a row that open the breaker
OUTAGE_KINDS = frozenset({"connection_refused", "dns", "connection"})
_CUT_EVERY_S = 1.0  # one cut per this long: the 429s of one burst are one signal
# a limit shows as a share of refusals: below it a 429 is a stray one (a flaky proxy, a busy
# replica) that its own request waits out, and that cuts neither the pace nor anyone else
_STORM_SHARE, _SHARE_WINDOW = 0.25, 50
_LEARNT_CUT, _LEARNT_GROWTH = 0.7, 0.005
_POLL_S = 0.05
_RATE_WINDOW_S = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int = 64
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_outage_s: float = 1800.0


def _duration_s(text: str | None) -> float | None:
    """OpenAI's reset durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``."""
    if not text:
        return None
    parts = re.findall(r"([\d.]+)(ms|h|m|s)", text)
    if not parts:
        try:
            return float(text)
        except ValueError:
            return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}
    return sum(float(n) * scale[u] for n, u in parts)


def _number(headers: Any, name: str) -> float | None:
    try:
        value = headers.get(name)
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class Breaker:
    """Closed while the teacher answers; open after an outage, with one probe at a time."""

    def __init__(self, where: str, limits: Limits) -> None:
        self.where, self.limits = where, limits
        self.opened_at: float | None = None  # monotonic
        self.opened_wall: datetime | None = None
        self.kind = ""
        self.in_a_row = 0
        self.probing = False
        self.probe_delay = limits.backoff_base_s
        self.next_probe_at = 0.0
        self.probes = 0
        self.unreachable: str | None = None

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    async def admit(self) -> bool:
        """Wait while open; True when this request is the probe."""
        while self.opened_at is not None:
            now = time.monotonic()
            if self.unreachable is None and now - self.opened_at > self.limits.max_outage_s:
                self.unreachable = (f"teacher unreachable at {self.where} since "
                                    f"{self.opened_wall:%H:%M}: {self.kind.replace('_', ' ')}")
                log.error("%s", self.unreachable)
            if self.unreachable is not None:
                raise TeacherUnreachable(self.unreachable, kind=self.kind)
            if not self.probing and now >= self.next_probe_at:
                self.probing = True
                self.probes += 1
                return True
            await asyncio.sleep(max(_POLL_S, min(1.0, self.next_probe_at - now)))
        return False

    def failed(self, kind: str, probe: bool) -> None:
        self.in_a_row += 1
        if self.opened_at is None and (kind in OUTAGE_KINDS or self.in_a_row >= OPEN_AFTER):
            self.opened_at, self.opened_wall, self.kind = time.monotonic(), datetime.now(), kind
            self.probe_delay = self.limits.backoff_base_s
            self.next_probe_at = self.opened_at + self.probe_delay
            log.warning("teacher at %s not answering (%s): requests wait, one probe at a time", self.where, kind)
        if probe:
            self.probing = False
            self.probe_delay = min(self.limits.backoff_max_s, self.probe_delay * 2)
            self.next_probe_at = time.monotonic() + self.probe_delay

    def answered(self, probe: bool) -> None:
        self.in_a_row = 0
        if probe:
            self.probing = False
        if self.opened_at is not None:
            log.warning("teacher at %s answers again after %.0f s: the run goes on", self.where,
                        time.monotonic() - self.opened_at)
            self.opened_at = None


class Admission:
    """The shared gate in front of one teacher: ``async with admission.request(tokens) as ticket``."""

    def __init__(self, where: str, limits: Limits) -> None:
        self.where, self.limits = where, limits
        self.breaker = Breaker(where, limits)
        self.limit = float(limits.max_concurrency)
        self.in_flight = 0
        self.announced_rpm: float | None = None
        self.announced_tpm: float | None = None
        self.learnt_rate: float | None = None  # requests/s, from 429s when no limit is known
        self.paused_until = 0.0
        self._next_request_at = 0.0
        self._next_token_at = 0.0
        self._last_cut = -math.inf
        self._token_scale = 1.0  # actual / estimated prompt tokens, learnt from usage
        self._answers: deque[float] = deque()  # when the last replies came, for the rate they show
        self._refused: deque[bool] = deque(maxlen=_SHARE_WINDOW)  # the last answers: True for a 429
        self.sent = self.throttled = self.probes = 0
        self.waited_s = 0.0

    # -- the limits in force
    def rate(self) -> float | None:
        """Requests per second allowed now (None: unlimited)."""
        rpm = self.limits.rpm or self.announced_rpm
        return rpm / 60.0 if rpm else self.learnt_rate

    def token_rate(self) -> float | None:
        tpm = self.limits.tpm or self.announced_tpm
        return tpm / 60.0 if tpm else None

    def estimate(self, prompt_tokens: float, completion_tokens: float) -> float:
        return prompt_tokens * self._token_scale + completion_tokens

    # -- admission
    async def acquire(self, tokens: float) -> bool:
        """Wait for the breaker, a free slot, the pace and any pause; True when this request is the probe."""
        start = time.monotonic()
        probe = await self.breaker.admit()
        while not probe and self.in_flight >= max(1, int(self.limit)):
            await asyncio.sleep(_POLL_S)
            probe = await self.breaker.admit()
        self.in_flight += 1
        now = time.monotonic()
        at = max(now, self.paused_until)
        if (rate := self.rate()) is not None:
            at = max(at, self._next_request_at)
            self._next_request_at = at + 1.0 / rate
        if (token_rate := self.token_rate()) is not None:
            at = max(at, self._next_token_at)
            self._next_token_at = at + tokens / token_rate
        if at > now:
            await asyncio.sleep(at - now)
        self.sent += 1
        self.waited_s += time.monotonic() - start
        return probe

    def release(self) -> None:
        self.in_flight -= 1

    # -- what came back
    def answered(self, probe: bool, headers: Any, estimated: float, actual_prompt: int, actual_total: int) -> None:
        self.breaker.answered(probe)
        self._read_headers(headers)
        now = time.monotonic()
        self._answers.append(now)
        self._refused.append(False)
        while self._answers and self._answers[0] < now - _RATE_WINDOW_S:
            self._answers.popleft()
        if actual_prompt and estimated:
            self._token_scale = 0.8 * self._token_scale + 0.2 * min(10.0, max(0.1, actual_prompt / estimated))
        if (token_rate := self.token_rate()) is not None and actual_total:
            self._next_token_at += (actual_total - estimated) / token_rate  # settle the estimate
        if self.learnt_rate is not None:
            self.learnt_rate *= 1 + _LEARNT_GROWTH
        if self.limit < self.limits.max_concurrency:
            self.limit = min(float(self.limits.max_concurrency), self.limit + 1.0 / self.limit)

    def throttled_by(self, probe: bool, headers: Any, retry_after_s: float | None) -> float | None:
        """A 429. Among many: pause everyone for Retry-After (capped), cut concurrency and the
        learnt rate. A stray one: only its request waits; returns that wait (None: nothing of its own)."""
        self.throttled += 1
        self._refused.append(True)
        self.breaker.answered(probe)  # a 429 is an answer: the teacher is up
        self._read_headers(headers)
        wait = None if retry_after_s is None else min(retry_after_s, self.limits.backoff_max_s)
        if sum(self._refused) < _STORM_SHARE * max(len(self._refused), _SHARE_WINDOW // 2):
            return wait
        now = time.monotonic()
        if wait is not None:
            self.paused_until = max(self.paused_until, now + wait)
        if now - self._last_cut < _CUT_EVERY_S:
            return None
        self._last_cut = now
        self.limit = max(1.0, self.limit / 2)
        if self.limits.rpm is None and self.announced_rpm is None:
            self.learnt_rate = _LEARNT_CUT * (self.learnt_rate or self._recent_rate())
        log.info("teacher at %s throttles (429): %s", self.where, self.status_line())
        return None

    def failed(self, kind: str, probe: bool) -> None:
        """A 5xx, a timeout or a connection failure; a timeout also cuts concurrency."""
        self.breaker.failed(kind, probe)
        now = time.monotonic()
        if kind == "timeout" and now - self._last_cut >= _CUT_EVERY_S:
            self._last_cut = now
            self.limit = max(1.0, self.limit / 2)

    def _recent_rate(self) -> float:
        """Replies per second over the last few seconds: what the teacher took before refusing."""
        if len(self._answers) < 2:
            return 1.0
        span = max(1.0, time.monotonic() - self._answers[0])
        return max(1.0 / span, len(self._answers) / span)

    def _read_headers(self, headers: Any) -> None:
        if headers is None:
            return
        limit_requests = _number(headers, "x-ratelimit-limit-requests")
        limit_tokens = _number(headers, "x-ratelimit-limit-tokens")
        if limit_requests and limit_requests != self.announced_rpm:
            self.announced_rpm = limit_requests
            log.info("teacher at %s announces %g requests/min", self.where, limit_requests)
        if limit_tokens and limit_tokens != self.announced_tpm:
            self.announced_tpm = limit_tokens
            log.info("teacher at %s announces %g tokens/min", self.where, limit_tokens)
        for kind in ("requests", "tokens"):
            remaining = _number(headers, f"x-ratelimit-remaining-{kind}")
            reset = _duration_s(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and remaining <= 0 and reset:
                self.paused_until = max(self.paused_until,
                                        time.monotonic() + min(reset, self.limits.backoff_max_s))

    # -- what to show
    def snapshot(self) -> dict[str, Any]:
        rate = self.rate()
        return {"limit": round(self.limit, 1), "in_flight": self.in_flight, "sent": self.sent,
                "throttled": self.throttled, "waited_s": round(self.waited_s, 1),
                "rpm": round(rate * 60) if rate else None,
                "tpm": round(self.token_rate() * 60) if self.token_rate() else None,
                "probes": self.breaker.probes, "outage": self.breaker.kind if self.breaker.open else None}

    def status_line(self) -> str:
        s = self.snapshot()
        line = f"limit {s['limit']:g}, {s['throttled']} × 429"
        if s["rpm"]:
            line += f", {s['rpm']} rpm"
        if s["outage"]:
            line += f", teacher down ({s['outage'].replace('_', ' ')}), {s['probes']} probes"
        return line


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Admission]] = \
    weakref.WeakKeyDictionary()


def admission_for(where: str, model: str, limits: Limits) -> Admission:
    """The process's controller for this teacher on the running event loop (one loop per process
    with Prefect's local runner; each worker process of ``runner="workers"`` has its own)."""
    per_loop = _shared.setdefault(asyncio.get_running_loop(), {})
    key = (where, model)
    if key not in per_loop:
        per_loop[key] = Admission(where, limits)
    return per_loop[key]


def controllers() -> list[Admission]:
    """Every controller of this process, for a progress line."""
    return [a for per_loop in list(_shared.values()) for a in per_loop.values()]
