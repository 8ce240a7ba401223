"""The operator's daily spend cap through the real Engine.accept: acceptances at once — coroutines on one
connection, and OS processes — never commit more than the cap; a refused job records nothing; released jobs
stop counting; the owners are told once per UTC day, across restarts and processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest

from bot.engine.engine import Engine
from bot.money import usd
from bot.request import GenerationRequest
from bot.services import App, open_app
from bot.settings import load_settings
from bot.spend_cap import SpendCapReached
from tests.fakes.delivery import RecordingDelivery
from tests.integration.processes import release_together
from tests.integration.quota_parts import Clock, build

FIXTURES = Path(__file__).parents[1] / "fixtures"
WORKER = Path(__file__).with_name("spend_cap_worker.py")
PRICE = usd("0.252")  # 3 s standard on WaveSpeed
ENV = {"WAVESPEED_API_KEY": "test-key", "WAVESPEED_BASE_URL": "http://127.0.0.1:9"}


@asynccontextmanager
async def opened(tmp_path: Path, cap: str | None) -> AsyncIterator[tuple[App, Engine, list[SpendCapReached]]]:
    env = {**ENV, **({"REELBOT_DAILY_SPEND_CAP_USD": cap} if cap is not None else {})}
    settings = load_settings(REELBOT_DB=str(tmp_path / "r.db"), REELBOT_DATA_DIR=str(tmp_path / "data"), **env)
    delivery = RecordingDelivery(tmp_path / "out")
    told: list[SpendCapReached] = []

    async def tell(refused: SpendCapReached) -> None:
        told.append(refused)

    async with open_app(settings) as app:
        engine = app.engine(lambda job: delivery, tick_s=0.05)
        engine.on_spend_cap_reached = tell
        yield app, engine, told


async def a_request(app: App) -> GenerationRequest:
    image = await app.media.ingest(FIXTURES / "coffee.png")
    return GenerationRequest.create(images=[image], prompt="Figure 1 steams", duration=3)


async def fund(app: App, *members: str) -> None:
    for member in members:
        account = await app.ledger.account_for_user("g", member)
        await app.ledger.grant(account, usd("100"), actor="test", reason="plenty")


async def counts(db: aiosqlite.Connection) -> tuple[int, int]:
    async with db.execute("SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM ledger_entries)") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_acceptances_at_once_never_pass_the_cap(tmp_path: Path) -> None:
    async with opened(tmp_path, cap="2.52") as (app, engine, told):  # exactly 10 jobs
        members = [f"m{i}" for i in range(4)]
        await fund(app, *members)
        request = await a_request(app)

        async def attempt(i: int) -> str:
            try:
                await engine.accept(request, provider="wavespeed", user_id=members[i % 4], guild_id="g")
            except SpendCapReached as refused:
                assert str(refused) == ("the bot's daily spending limit has been reached, so it cannot start new jobs"
                                        " until the limit resets at 00:00 UTC; nothing was charged")  # fmt: skip
                return "capped"
            return "accepted"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(40)))
        assert outcomes.count("accepted") == 10
        assert (await app.spend_cap.committed_today()).committed == 10 * PRICE
        assert len(await app.jobs.list_recent(limit=100)) == 10
        assert len(told) == 1 and told[0].cap == usd("2.52") and told[0].committed == 10 * PRICE
        assert "$2.52 of today's $2.52 cap" in told[0].owner_message()
        assert await app.ledger.verify() == []


async def test_a_refused_job_records_nothing_and_a_released_one_stops_counting(tmp_path: Path) -> None:
    async with opened(tmp_path, cap="0.60") as (app, engine, told):  # two jobs fit
        await fund(app, "m")
        request = await a_request(app)
        first = await engine.accept(request, provider="wavespeed", user_id="m", guild_id="g")
        await engine.accept(request, provider="wavespeed", user_id="m", guild_id="g")
        before = await counts(app.db)
        with pytest.raises(SpendCapReached):
            await engine.accept(request, provider="wavespeed", user_id="m", guild_id="g")
        assert await counts(app.db) == before  # no job, no ledger entry
        await engine.cancel(first.id, actor="m")  # queued: released at once, so its money no longer counts
        assert (await app.spend_cap.committed_today()).committed == PRICE
        await engine.accept(request, provider="wavespeed", user_id="m", guild_id="g")
        with pytest.raises(SpendCapReached):
            await engine.accept(request, provider="wavespeed", user_id="m", guild_id="g")
        assert len(told) == 1  # the second refusal of the day tells nobody
        assert await app.ledger.verify() == []


async def test_no_cap_set_means_no_limit(tmp_path: Path) -> None:
    async with opened(tmp_path, cap=None) as (app, engine, told):
        await fund(app, "m")
        request = await a_request(app)
        for _ in range(12):
            await engine.accept(request, provider="wavespeed", user_id="m", guild_id="g")
        assert told == [] and not await app.spend_cap.owner_notice_due()


async def test_the_owners_are_told_once_a_day_across_restarts(tmp_path: Path) -> None:
    async with opened(tmp_path, cap="0.30") as (app, engine, told):
        await fund(app, "m")
        request = await a_request(app)
        await engine.accept(request, provider="wavespeed", user_id="m", guild_id="g")
        for _ in range(3):
            with pytest.raises(SpendCapReached):
                await engine.accept(request, provider="wavespeed", user_id="m", guild_id="g")
        assert len(told) == 1
    async with opened(tmp_path, cap="0.30") as (app, engine, told_after_restart):
        with pytest.raises(SpendCapReached):
            await engine.accept(await a_request(app), provider="wavespeed", user_id="m", guild_id="g")
        assert told_after_restart == []
        assert not await app.spend_cap.owner_notice_due()


async def test_a_notice_is_due_until_claimed_and_each_day_has_its_own(db: aiosqlite.Connection) -> None:
    clock = Clock(datetime(2025, 3, 1, 23, 0, tzinfo=UTC))
    parts = build(db, clock, cap=0)
    refused = SpendCapReached(day="2025-03-01", cap=0, committed=0, needed=1, resets_at=clock.now)
    assert not await parts.spend_cap.owner_notice_due()
    assert not await parts.spend_cap.mark_owner_told()  # nothing was refused: nothing to claim
    assert await parts.spend_cap.record_refusal(refused)
    assert not await parts.spend_cap.record_refusal(refused)
    assert await parts.spend_cap.owner_notice_due("2025-03-01")
    claims = await asyncio.gather(*(parts.spend_cap.mark_owner_told("2025-03-01") for _ in range(10)))
    assert claims.count(True) == 1
    assert not await parts.spend_cap.owner_notice_due(clock.now)
    clock.advance(hours=2)  # 01:00 UTC the next day
    assert await parts.spend_cap.record_refusal(
        SpendCapReached(day="2025-03-02", cap=0, committed=0, needed=1, resets_at=clock.now + timedelta(days=1))
    )
    assert await parts.spend_cap.owner_notice_due() and await parts.spend_cap.mark_owner_told()


async def test_committed_counts_only_jobs_reserved_today(db: aiosqlite.Connection) -> None:
    clock = Clock(datetime(2025, 3, 1, 23, 59, tzinfo=UTC))
    parts = build(db, clock, cap=usd("1"))
    account = await parts.ledger.account_for_user("g", "m")
    await parts.ledger.grant(account, usd("10"), actor="t", reason="t")
    await parts.ledger.reserve(account, usd("0.70"), job_id="late", actor="m")
    assert (await parts.spend_cap.committed_today()).committed == usd("0.70")
    clock.advance(minutes=2)  # past 00:00 UTC: yesterday's job no longer counts, even once captured today
    await parts.ledger.capture("late", actor="e")
    await parts.ledger.reserve(account, usd("0.40"), job_id="early", actor="m")
    await parts.ledger.capture("early", actor="e", amount=usd("0.25"))
    today = await parts.spend_cap.committed_today()
    assert (today.day, today.committed) == ("2025-03-02", usd("0.25"))


def test_processes_at_once_never_pass_the_cap(tmp_path: Path) -> None:
    processes, attempts = 4, 12
    db_path, data = tmp_path / "r.db", tmp_path / "data"

    async def prepare() -> None:
        settings = load_settings(REELBOT_DB=str(db_path), REELBOT_DATA_DIR=str(data), **ENV)
        async with open_app(settings) as app:
            await fund(app, *(f"w{p}-{i}" for p in range(processes) for i in range(3)))

    async def inspect() -> tuple[int, int, list]:
        settings = load_settings(REELBOT_DB=str(db_path), REELBOT_DATA_DIR=str(data), **ENV)
        async with open_app(settings) as app:
            return (
                (await app.spend_cap.committed_today()).committed,
                len(await app.jobs.list_recent(limit=500)),
                await app.ledger.verify(),
            )

    asyncio.run(prepare())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), str(db_path), str(data), "2.52", str(attempts), f"w{p}"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for p in range(processes)
    ]  # fmt: skip
    results = [json.loads(out.strip().splitlines()[-1]) for out in release_together(workers, timeout=120)]
    assert sum(r["accepted"] for r in results) == 10
    assert sum(r["capped"] for r in results) == processes * attempts - 10
    assert sum(r["told"] for r in results) == 1
    committed, jobs, problems = asyncio.run(inspect())
    assert (committed, jobs, problems) == (10 * PRICE, 10, [])
