"""Run a real job through the real engine against a provider's loopback API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.media.ingest import MediaStore
from bot.providers import create_provider
from bot.providers.base import Provider
from bot.request import GenerationRequest
from bot.services import App, open_app
from bot.settings import load_settings
from bot.store.jobs import Job
from tests.fakes.delivery import RecordingDelivery
from tests.fakes.providers import FAKES, fake_class
from tests.fakes.providers.harness import FakeAPI

FIXTURES = Path(__file__).parents[2] / "fixtures"

FAST = {
    "REELBOT_POLL_FIRST_S": "0.01",
    "REELBOT_POLL_MAX_S": "0.05",
    "REELBOT_HTTP_TIMEOUT_S": "0.5",
    "REELBOT_HTTP_SUBMIT_TIMEOUT_S": "0.5",
    "REELBOT_HTTP_RETRIES": "4",
    "REELBOT_HTTP_BACKOFF_S": "0.01",
    "REELBOT_HTTP_BACKOFF_MAX_S": "0.05",
    "REELBOT_JOB_DEADLINE_S": "20",
}


@dataclass
class Harness:
    fake: FakeAPI
    app: App
    tmp: Path

    @property
    def provider(self) -> Provider:
        return self.app.provider(self.fake.name)

    async def images(self, *names: str) -> list[Any]:
        store: MediaStore = self.app.media
        return [await store.ingest(FIXTURES / name) for name in names]

    async def request(self, **fields: Any) -> GenerationRequest:
        if "images" not in fields:
            fields["images"] = await self.images("astronaut.png", "coffee.png")
        fields.setdefault("prompt", "Figure 1 drinks from Figure 2")
        return GenerationRequest.create(**fields)

    async def run(
        self, request: GenerationRequest | None = None, *, timeout: float = 30
    ) -> tuple[Job, RecordingDelivery]:
        request = request or await self.request()
        quote = self.provider.quote(request)
        job = await self.app.jobs.create(
            request=request, provider=self.fake.name, user_id="u1", cost_micros=quote.micros
        )
        delivery = RecordingDelivery(self.tmp / "delivered")
        final = await asyncio.wait_for(self.app.runner.drive(job.id, delivery), timeout)
        return final, delivery


@pytest.fixture(params=sorted(FAKES))
def provider_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def harness(provider_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async with open_harness(provider_name, tmp_path, monkeypatch) as h:
        yield h


@asynccontextmanager
async def open_harness(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> AsyncIterator[Harness]:
    fake: FakeAPI = fake_class(name)()
    await fake.start()
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        REELBOT_DB=str(tmp_path / "reelbot.db"),
        REELBOT_DATA_DIR=str(tmp_path / "data"),
        REELBOT_PROVIDER="local",
        **{**FAST, **fake.settings_env(), **env},
    )
    try:
        async with open_app(settings) as app:
            yield Harness(fake, app, tmp_path)
    finally:
        await fake.stop()


async def direct_provider(name: str, base_url: str, **env: str) -> tuple[Provider, httpx.AsyncClient]:
    """An adapter outside the engine, for contract tests."""
    client = httpx.AsyncClient()
    settings = load_settings(**{**FAST, **env})
    return create_provider(name, settings, client), client
