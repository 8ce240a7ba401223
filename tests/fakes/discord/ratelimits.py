"""Injected rate limits: `fake.rate_limit_next(...)` rules and the 429s they serve (DD topics/rate-limits.mdx)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from aiohttp import web

from .wire import json_response


@dataclass
class RateLimitRule:
    """The next `count` requests matching `method` and `pattern` (searched in the path after /api/v10) get a 429."""

    method: str
    pattern: re.Pattern[str]
    retry_after: float
    is_global: bool
    scope: str  # "user", "global" or "shared" (a shared 429 doesn't count toward the invalid-request ban)
    count: int = 1
    served: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.served < self.count and method == self.method and bool(self.pattern.search(path))


@dataclass
class RateLimitHit:
    """One 429 the fake served; `retried` once the same method + path came again."""

    method: str
    path: str
    retry_after: float
    at: float
    retried_at: float | None = None

    @property
    def retried(self) -> bool:
        return self.retried_at is not None

    @property
    def waited(self) -> float | None:
        """How long the client waited before retrying (it must be ≥ retry_after)."""
        return None if self.retried_at is None else self.retried_at - self.at


def too_many_requests(rule: RateLimitRule) -> web.Response:
    headers = {
        # discord.py honours a 429 only with `Via` (without it, it assumes a Cloudflare ban and raises).
        "Via": "1.1 google",
        "Retry-After": f"{rule.retry_after:g}",
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
        "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
        "X-RateLimit-Bucket": f"fake-{abs(hash(rule.pattern.pattern)):x}",
        "X-RateLimit-Scope": rule.scope,
    }
    if rule.is_global:
        headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": rule.retry_after, "global": rule.is_global}
    return json_response(body, status=429, headers=headers)
