"""reelbot's real bot, cogs, core and SQLite, against the loopback Discord (and a provider fake when money
matters)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.app import ReelBot
from bot.services import App, open_app
from bot.settings import load_settings
from tests.fakes.discord import Channel, FakeDiscord, Guild, User, running_bot
from tests.fakes.providers.wavespeed import FakeWaveSpeed

FIXTURES = Path(__file__).parents[2] / "fixtures"
FAST = {
    "REELBOT_POLL_FIRST_S": "0.05",
    "REELBOT_POLL_MAX_S": "0.2",
    "REELBOT_STATUS_STATE_EDIT_S": "0.05",
    "REELBOT_STATUS_PROGRESS_EDIT_S": "0.2",
    "REELBOT_HTTP_TIMEOUT_S": "2",
    "REELBOT_HTTP_BACKOFF_S": "0.01",
}


def image(name: str) -> tuple[str, bytes, str]:
    data = (FIXTURES / name).read_bytes()
    return (name, data, "image/jpeg" if name.endswith(".jpg") else "image/png")


@dataclass
class World:
    fake: FakeDiscord
    guild: Guild
    channel: Channel
    alice: User
    bob: User
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    env: dict[str, str] = field(default_factory=dict)

    def settings_env(self, **more: str) -> dict[str, str]:
        return {
            "REELBOT_DB": str(self.tmp / "reelbot.db"),
            "REELBOT_DATA_DIR": str(self.tmp / "data"),
            "REELBOT_DEV_GUILD": str(self.guild.id),
            **FAST,
            **self.env,
            **more,
        }

    @asynccontextmanager
    async def bot(self, **env: str) -> AsyncIterator[tuple[ReelBot, App, Any]]:
        """The bot, connected and ready (commands synced to the test guild), and its core App."""
        settings = load_settings(**self.settings_env(**env))
        async with open_app(settings) as app:
            bot = ReelBot(app)
            async with running_bot(bot, self.fake, self.monkeypatch, timeout=20) as run:
                yield bot, app, run


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.chdir(tmp_path)
    async with FakeDiscord() as fake:
        guild = fake.add_guild("studio")
        channel = guild.add_text_channel("clips")
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        guild.add_member(alice)
        guild.add_member(bob)
        yield World(fake, guild, channel, alice, bob, tmp_path, monkeypatch)


@pytest.fixture
async def wavespeed(world: World) -> AsyncIterator[FakeWaveSpeed]:
    """A paid provider behind the bot: WaveSpeed's loopback API."""
    fake = FakeWaveSpeed()
    await fake.start()
    world.env.update(REELBOT_PROVIDER="wavespeed", **fake.settings_env())
    yield fake
    await fake.stop()
