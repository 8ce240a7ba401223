"""The pool and role allowances through the real engine: a job that drew on the pool is charged in both
accounts when delivered and released in both when it fails; the running engine expires pool grants."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.engine.engine import Engine
from bot.engine.states import JobState
from bot.funding import PoolDrawRefused
from bot.ledger import pool_account_id
from bot.money import usd
from bot.request import GenerationRequest
from bot.services import App, open_app
from bot.settings import load_settings
from tests.fakes.delivery import RecordingDelivery
from tests.fakes.providers.harness import Step
from tests.fakes.providers.wavespeed import FakeWaveSpeed

FIXTURES = Path(__file__).parents[1] / "fixtures"
OWNER = "4242"
FAST = {"REELBOT_POLL_FIRST_S": "0.02", "REELBOT_POLL_MAX_S": "0.05", "REELBOT_HTTP_TIMEOUT_S": "0.5",
        "REELBOT_HTTP_SUBMIT_TIMEOUT_S": "0.5", "REELBOT_HTTP_BACKOFF_S": "0.01", "REELBOT_HTTP_RETRIES": "3",
        "REELBOT_OWNER_IDS": OWNER}  # fmt: skip
PRICE = usd("0.252")


@pytest.fixture
async def fake_ws() -> AsyncIterator[FakeWaveSpeed]:
    fake = FakeWaveSpeed()
    await fake.start()
    yield fake
    await fake.stop()


@asynccontextmanager
async def opened(tmp_path: Path, fake: FakeWaveSpeed) -> AsyncIterator[tuple[App, Engine]]:
    settings = load_settings(REELBOT_DB=str(tmp_path / "r.db"), REELBOT_DATA_DIR=str(tmp_path / "data"),
                             **FAST, **fake.settings_env())  # fmt: skip
    delivery = RecordingDelivery(tmp_path / "out")
    async with open_app(settings) as app:
        engine = app.engine(lambda job: delivery, tick_s=0.05)
        await app.guild_config.set("g", "allowance", "$0.10", actor="mod")
        await app.guild_config.set("g", "pool_draws", "on", actor="mod")
        await app.guild_config.set("g", "role_allowances", "<@&7>=$1", actor="mod")
        await app.pool.fund_pool("g", usd("1"), actor=OWNER, reason="community pool")
        yield app, engine


async def a_request(app: App) -> GenerationRequest:
    image = await app.media.ingest(FIXTURES / "coffee.png")
    return GenerationRequest.create(images=[image], prompt="Figure 1 steams", duration=3)


async def test_a_pool_funded_job_is_charged_in_both_accounts(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine):
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="m", guild_id="g", role_ids=[])
        member = await app.ledger.account_for_user("g", "m")
        assert (await app.ledger.balance(pool_account_id("g"))).reserved == PRICE - usd("0.10")
        await engine.run_until_idle()
        assert (await app.jobs.require(job.id)).state is JobState.DONE
        assert (await app.ledger.balance(member)).balance == 0
        pool = await app.ledger.balance(pool_account_id("g"))
        assert (pool.balance, pool.reserved) == (usd("1") - (PRICE - usd("0.10")), 0)
        report = await app.pool.pool_report("g")
        assert [(d.user_id, d.spent_micros) for d in report.draws] == [("m", PRICE - usd("0.10"))]
        assert await app.ledger.verify() == []


async def test_a_failed_pool_funded_job_is_released_in_both(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.script = [Step("running"), Step("failed", message="GPU fell over")]
    async with opened(tmp_path, fake_ws) as (app, engine):
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="m", guild_id="g", role_ids=[])
        await engine.run_until_idle()
        assert (await app.jobs.require(job.id)).state is JobState.FAILED
        member = await app.ledger.balance(await app.ledger.account_for_user("g", "m"))
        assert (member.available, member.reserved) == (usd("0.10"), 0)
        pool = await app.ledger.balance(pool_account_id("g"))
        assert (pool.available, pool.reserved) == (usd("1"), 0)
        assert await app.ledger.verify() == []


async def test_roles_passed_at_acceptance_set_the_allowance(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine):
        await app.guild_config.set("g", "pool_draws", "off", actor="mod")
        request = await a_request(app)
        await engine.accept(request, provider="wavespeed", user_id="vip", guild_id="g", role_ids=["7"])
        balance = await app.ledger.balance(await app.ledger.account_for_user("g", "vip"))
        assert (balance.allowance, balance.reserved) == (usd("1"), PRICE)  # the role's $1, not the $0.10
        with pytest.raises(Exception) as refused:
            await engine.accept(request, provider="wavespeed", user_id="plain", guild_id="g", role_ids=["8"])
        assert not isinstance(refused.value, PoolDrawRefused)
        assert str(refused.value).startswith("this costs $0.252 but you have $0.10 available")
        assert await app.ledger.verify() == []


async def test_the_running_engine_expires_pool_grants(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine):
        soon = datetime.now(UTC) + timedelta(seconds=0.3)
        grant = await app.pool.fund_pool("g", usd("2"), actor=OWNER, reason="flash", expires_at=soon)
        await engine.start()
        try:
            async with asyncio.timeout(10):
                while not (await app.pool.pool_report("g")).grants[-1].closed_at:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            await engine.stop()
        assert (await app.ledger.balance(grant.account_id)).balance == 0
        assert (await app.pool.pool_report("g")).balance == usd("1")
        assert await app.ledger.verify() == []
