"""Discord REST 429s are counted from discord.py's own log records: the real discord.py HTTP client is driven
into 429s by a loopback server, so a change in how discord.py reports them fails here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import discord
import pytest
from aiohttp import web

from bot.observe.discord_limits import count_discord_rate_limits
from bot.observe.metrics import Metrics

ME = {"id": "1100000000000000001", "username": "reelbot", "discriminator": "0", "avatar": None, "bot": True}


class LimitedDiscord:
    """GET /users/@me answers the queued 429s first, then 200. A real 429 from Discord carries `Via`
    (without it discord.py assumes a Cloudflare ban and raises at once)."""

    def __init__(self) -> None:
        self.limits: list[dict[str, Any]] = []
        self.calls = 0

    async def me(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.limits:
            return self.json(self.limits.pop(0), status=429, headers={"Via": "1.1 google", "Retry-After": "0"})
        return self.json(ME)

    @staticmethod
    def json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # Discord sends exactly `application/json` (no charset), which is what discord.py looks for
        return web.Response(body=json.dumps(body).encode(), status=status, headers={**(headers or {}),
                            "Content-Type": "application/json"})  # fmt: skip


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LimitedDiscord]:
    fake = LimitedDiscord()
    app = web.Application()
    app.router.add_get("/api/v10/users/@me", fake.me)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    yield fake
    await runner.cleanup()


@pytest.fixture
def counted() -> AsyncIterator[Metrics]:
    metrics = Metrics()
    stop: Callable[[], None] = count_discord_rate_limits(metrics)
    yield metrics  # type: ignore[misc]
    stop()


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def login(**options: Any) -> None:
    http = discord.http.HTTPClient(asyncio.get_running_loop(), **options)
    try:
        await http.static_login("fake-token")
    finally:
        await http.close()


async def test_a_retried_429_is_counted(server: LimitedDiscord, counted: Metrics) -> None:
    server.limits = [{"message": "You are being rate limited.", "retry_after": 0.01, "global": False}] * 2
    await login()
    assert server.calls == 3
    assert count(counted, "reelbot_discord_rest_429_total", outcome="retried") == 2
    assert count(counted, "reelbot_discord_rest_429_total", outcome="raised") == 0
    assert count(counted, "reelbot_discord_global_rate_limits_total") == 0


async def test_a_global_limit_is_counted_once_as_a_429_and_once_as_global(
    server: LimitedDiscord, counted: Metrics
) -> None:
    server.limits = [{"message": "You are being rate limited.", "retry_after": 0.01, "global": True}]
    await login()
    assert count(counted, "reelbot_discord_rest_429_total", outcome="retried") == 1
    assert count(counted, "reelbot_discord_global_rate_limits_total") == 1


async def test_a_429_too_long_to_wait_for_is_counted_as_raised(server: LimitedDiscord, counted: Metrics) -> None:
    server.limits = [{"message": "You are being rate limited.", "retry_after": 120.0, "global": False}]
    with pytest.raises(discord.RateLimited):
        await login(max_ratelimit_timeout=30.0)
    assert count(counted, "reelbot_discord_rest_429_total", outcome="raised") == 1
    assert count(counted, "reelbot_discord_rest_429_total", outcome="retried") == 0


async def test_counting_stops_when_asked(server: LimitedDiscord) -> None:
    metrics = Metrics()
    count_discord_rate_limits(metrics)()  # started and stopped at once
    server.limits = [{"message": "You are being rate limited.", "retry_after": 0.01, "global": False}]
    await login()
    assert count(metrics, "reelbot_discord_rest_429_total", outcome="retried") == 0
