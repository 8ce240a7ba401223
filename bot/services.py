"""The core's parts wired together once: database, repositories, ledger, media store, HTTP client,
providers, runner and engine. The CLI and the Discord bot both open an `App`; neither builds these parts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiosqlite
import httpx

from bot.engine.approvals import ApprovalExpiry
from bot.engine.delivery import Delivery
from bot.engine.engine import Engine
from bot.engine.runner import JobRunner
from bot.engine.scheduler import Caps
from bot.engine.webhooks import Wakeups, WebhookReceiver
from bot.funding import Funding
from bot.gifts import Gifts
from bot.guild_config import GuildConfig
from bot.ledger import Ledger
from bot.media.ingest import MediaStore
from bot.observe.metrics import Metrics
from bot.pool import Pool
from bot.providers import available, create_provider, provider_class
from bot.providers.base import Provider
from bot.providers.http import ProviderHTTP
from bot.requests import QuotaRequests
from bot.settings import Settings
from bot.spend_cap import SpendCap
from bot.store.db import connect
from bot.store.deliveries import DeliveryRepository
from bot.store.guilds import GuildSettingsRepository
from bot.store.jobs import Job, JobRepository
from bot.store.migrate import migrate

DeliveryFactory = Callable[[Job], Delivery]


def caps_from(settings: Settings) -> Caps:
    per_provider = {
        name: settings.provider_concurrency(name, provider_class(name).capabilities.default_concurrency)
        for name in available()
    }
    return Caps(
        global_max=settings.max_concurrency,
        per_user=settings.user_max_jobs,
        per_guild=settings.guild_max_jobs,
        per_provider=per_provider,
    )


@dataclass
class App:
    settings: Settings
    db: aiosqlite.Connection
    http: httpx.AsyncClient
    jobs: JobRepository
    ledger: Ledger
    deliveries: DeliveryRepository
    guilds: GuildSettingsRepository
    media: MediaStore
    wakeups: Wakeups = field(default_factory=Wakeups)
    metrics: Metrics = field(default_factory=Metrics)  # this App's own registry: never the global default
    runner: JobRunner = field(init=False)
    # Server administration: settings (allowance kept in the ledger), the pool, gifts, the daily spend cap,
    # and `funding`, which decides at acceptance who pays for a job.
    guild_config: GuildConfig = field(init=False)
    pool: Pool = field(init=False)
    gifts: Gifts = field(init=False)
    spend_cap: SpendCap = field(init=False)
    funding: Funding = field(init=False)
    # members' quota requests and the moderators' decisions on them
    requests: QuotaRequests = field(init=False)
    _providers: dict[str, Provider] = field(default_factory=dict)
    _engine: Engine | None = None

    def __post_init__(self) -> None:
        self.runner = JobRunner(self.jobs, self.provider, self.settings, self.ledger, self.deliveries, self.wakeups,
                                metrics=self.metrics)  # fmt: skip
        self.guild_config = GuildConfig(self.db, self.ledger, self.guilds)
        self.pool = Pool(self.db, self.ledger, owner_ids=self.settings.owner_ids)
        self.gifts = Gifts(self.db, self.ledger, self.guild_config)
        self.spend_cap = SpendCap(self.db, self.settings.daily_spend_cap_micros, clock=self.ledger.clock)
        self.funding = Funding(self.ledger, self.guild_config, self.pool, self.spend_cap)
        self.requests = QuotaRequests(self.db, self.ledger, self.guilds)

    def provider(self, name: str | None = None) -> Provider:
        """One adapter instance per provider for the app's lifetime (it may hold tasks and rate limits)."""
        name = name or self.settings.provider
        if name not in self._providers:
            adapter = self._providers[name] = create_provider(name, self.settings, self.http)
            api = getattr(adapter, "api", None)  # hosted adapters talk through one ProviderHTTP
            if isinstance(api, ProviderHTTP):
                api.observer = self.metrics.provider_request
        return self._providers[name]

    def engine(self, delivery_for: DeliveryFactory | None = None, *, tick_s: float = 5.0) -> Engine:
        """The app's engine; the first caller says where clips go (the CLI: files; the bot: threads)."""
        if self._engine is None:
            if delivery_for is None:
                raise RuntimeError("the engine needs a delivery factory the first time")
            receiver = None
            if self.settings.webhook_url:
                receiver = WebhookReceiver(jobs=self.jobs, provider_for=self.provider, wakeups=self.wakeups,
                                           public_url=self.settings.webhook_url)  # fmt: skip
            self._engine = Engine(
                jobs=self.jobs, ledger=self.ledger, runner=self.runner, provider_for=self.provider,
                delivery_for=delivery_for, caps=caps_from(self.settings), tick_s=tick_s, receiver=receiver,
                funding=self.funding,
            )  # fmt: skip
            self._engine.maintenance.append(self.pool.expire_pool_grants)
            # jobs nobody approved within the server's approval timeout are released
            self._engine.maintenance.append(ApprovalExpiry(self._engine, self.guilds.get, clock=self.ledger.clock))
        return self._engine

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.stop()
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
                ledger=Ledger.from_settings(db, settings),
                deliveries=DeliveryRepository(db),
                guilds=GuildSettingsRepository(db),
                media=MediaStore(settings.data_dir / "media"),
            )
            try:
                yield app
            finally:
                await app.aclose()
    finally:
        await db.close()
