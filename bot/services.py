"""The core's parts wired together once: database, repositories, media store, HTTP client, providers, runner.

The CLI and the Discord bot both open an `App`; neither builds these parts itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiosqlite
import httpx

from bot.engine.runner import JobRunner
from bot.media.ingest import MediaStore
from bot.providers import create_provider
from bot.providers.base import Provider
from bot.settings import Settings
from bot.store.db import connect
from bot.store.jobs import JobRepository
from bot.store.migrate import migrate


@dataclass
class App:
    settings: Settings
    db: aiosqlite.Connection
    http: httpx.AsyncClient
    jobs: JobRepository
    media: MediaStore
    runner: JobRunner = field(init=False)
    _providers: dict[str, Provider] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runner = JobRunner(self.jobs, self.provider, self.settings)

    def provider(self, name: str | None = None) -> Provider:
        """One adapter instance per provider for the app's lifetime (it may hold tasks and rate limits)."""
        name = name or self.settings.provider
        if name not in self._providers:
            self._providers[name] = create_provider(name, self.settings, self.http)
        return self._providers[name]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


@asynccontextmanager
async def open_app(settings: Settings) -> AsyncIterator[App]:
    db = await connect(settings.db_path)
    try:
        await migrate(db)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as http:
            app = App(
                settings=settings,
                db=db,
                http=http,
                jobs=JobRepository(db),
                media=MediaStore(settings.data_dir / "media"),
            )
            try:
                yield app
            finally:
                await app.aclose()
    finally:
        await db.close()
