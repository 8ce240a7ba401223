"""Run a real discord.py client against a `FakeDiscord` for the length of an `async with`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import discord
import pytest
import yarl

from .server import FakeDiscord


class _ErrorLog(logging.Handler):
    """Collects what discord.py logs at ERROR: exceptions it swallows in commands, views and events."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class BotRun:
    bot: discord.Client
    task: asyncio.Task[None]
    errors: list[logging.LogRecord] = field(default_factory=list)

    def error_summary(self) -> str:
        return "\n".join(
            f"{r.name}: {r.getMessage()} ({r.exc_info[1]!r})" if r.exc_info else r.getMessage() for r in self.errors
        )


def point_discord_at(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redirect every discord.py REST call and the first gateway connection to the fake (DISCORD.md §10)."""
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))


@asynccontextmanager
async def running_bot(
    bot: discord.Client,
    fake: FakeDiscord,
    monkeypatch: pytest.MonkeyPatch,
    *,
    timeout: float = 10.0,
    raise_errors: bool = True,
) -> AsyncIterator[BotRun]:
    """Start `bot` against `fake`, wait until it is ready (`on_ready` fired), and close it cleanly afterwards.

    Errors discord.py would only log (an exception in a command, a view callback or an event handler) are
    collected in `run.errors`; with `raise_errors` (the default) the block fails at exit if there were any, so a
    test can't pass while the bot crashed behind it. Clear `run.errors` after asserting on an expected one.
    """
    point_discord_at(fake, monkeypatch)
    # `guild_ready_timeout` is a constructor option only; a test shouldn't sit out the 2 s default before on_ready.
    state = bot._connection
    state.guild_ready_timeout = min(state.guild_ready_timeout, 0.05)
    errors = _ErrorLog()
    discord_log = logging.getLogger("discord")
    discord_log.addHandler(errors)
    task = asyncio.create_task(bot.start(fake.token), name=f"discord-bot-{id(bot):x}")
    run = BotRun(bot, task, errors.records)
    try:
        try:
            async with asyncio.timeout(timeout):
                while not bot.is_ready():
                    if task.done():
                        task.result()  # raises LoginFailure, PrivilegedIntentsRequired, ...
                        raise RuntimeError("the bot stopped before it was ready")
                    await asyncio.sleep(0.01)
        except TimeoutError as exc:
            raise TimeoutError(f"the bot was not ready within {timeout}s") from exc
        yield run
    finally:
        try:
            await bot.close()
            async with asyncio.timeout(5):
                await asyncio.gather(task, return_exceptions=True)
        finally:
            discord_log.removeHandler(errors)
    if raise_errors and run.errors:
        raise AssertionError(f"the bot logged errors:\n{run.error_summary()}")
