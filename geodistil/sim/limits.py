"""The simulated teacher's own rate limiter, answering as OpenAI does.

Requests and tokens per minute are token buckets holding one second's worth (a burst is
refused at once, as a provider's limiter smooths its per-minute limit), refilled
continuously. Over the limit, a 429 with OpenAI's body, ``Retry-After`` (seconds) and
``retry-after-ms``; every answer carries OpenAI's ``x-ratelimit-*`` headers when the limits
are announced, so a client can keep under them without ever being refused.
"""

from __future__ import annotations

import math
import time
from typing import Any


class Bucket:
    def __init__(self, per_minute: float, burst_s: float = 1.0) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self._at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def take(self, amount: float) -> float:
        """0 when ``amount`` was taken, else the seconds until it could be."""
        self._refill()
        if amount <= self.level or (self.level >= self.capacity and amount > self.capacity):
            self.level -= amount  # an amount above the burst goes through alone, into debt
            return 0.0
        return (amount - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        remaining = max(0, math.floor(self.level / self.capacity * self.per_minute))
        reset_s = max(0.0, (self.capacity - self.level) / self.rate)
        return {f"x-ratelimit-limit-{kind}": f"{self.per_minute:g}", f"x-ratelimit-remaining-{kind}": str(remaining),
                f"x-ratelimit-reset-{kind}": f"{reset_s * 1000:.0f}ms"}


class RateLimiter:
    """Requests and tokens per minute, either or both; ``announce`` adds the headers to every answer."""

    def __init__(self, rpm: float | None, tpm: float | None, announce: bool, retry_after_s: float | None,
                 model: str) -> None:
        self.requests = Bucket(rpm) if rpm else None
        self.tokens = Bucket(tpm) if tpm else None
        self.announce, self.retry_after_s, self.model = announce, retry_after_s, model

    def headers(self) -> dict[str, str]:
        if not self.announce:
            return {}
        out: dict[str, str] = {}
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                out.update(bucket.headers(kind))
        return out

    def refusal(self, tokens: float) -> tuple[dict[str, Any], dict[str, str]] | None:
        """OpenAI's 429 body and headers when this request is over a limit, else None (and it is counted)."""
        for kind, bucket, amount, unit in (("requests", self.requests, 1.0, "RPM"),
                                           ("tokens", self.tokens, tokens, "TPM")):
            if bucket is None:
                continue
            wait_s = bucket.take(amount)
            if wait_s:
                wait_s = self.retry_after_s if self.retry_after_s is not None else wait_s
                body = {"error": {
                    "message": f"Rate limit reached for {self.model} in organization org-sim on {kind} per min "
                               f"({unit}): Limit {bucket.per_minute:g}, Requested {amount:g}. "
                               f"Please try again in {wait_s * 1000:.0f}ms.",
                    "type": kind, "param": None, "code": "rate_limit_exceeded"}}
                headers = {"retry-after": str(math.ceil(wait_s)), "retry-after-ms": f"{wait_s * 1000:.0f}",
                           **self.headers()}
                return body, headers
        return None
