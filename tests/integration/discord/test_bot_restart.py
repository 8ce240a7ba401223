"""`reelbot run` killed mid-job (SIGKILL) and started again: the clip arrives exactly once, the member is
charged once, and the books balance."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from bot.ledger import Ledger
from bot.money import usd
from bot.settings import load_settings
from bot.store.db import connect
from bot.store.migrate import migrate
from tests.fakes.providers.harness import Step
from tests.fakes.providers.wavespeed import FakeWaveSpeed
from tests.integration.discord.conftest import World, image


def job_state(db: Path) -> str | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT state FROM jobs ORDER BY created_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


async def start_bot(world: World, env: dict[str, str]) -> asyncio.subprocess.Process:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REELBOT_", "DISCORD_", "WAVESPEED_"))}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env={**clean, **env}, cwd=world.tmp,
        stdout=asyncio.subprocess.DEVNULL, stderr=open(world.tmp / "bot.log", "ab"),
    )  # fmt: skip


async def until(predicate, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - watching another process
            await asyncio.sleep(0.05)


async def test_killed_mid_job_and_restarted_delivers_once_and_charges_once(world: World) -> None:
    fake = world.fake
    provider = FakeWaveSpeed()
    await provider.start()
    provider.script = [Step("running", 0.3)] * 25 + [Step("succeeded")]
    env = world.settings_env(
        DISCORD_TOKEN=fake.token, DISCORD_API_BASE=fake.api_base, DISCORD_GATEWAY_URL=fake.gateway_url,
        REELBOT_PROVIDER="wavespeed", **provider.settings_env(),
    )  # fmt: skip
    db_path = Path(env["REELBOT_DB"])
    settings = load_settings(**env)
    db = await connect(db_path)
    await migrate(db)
    ledger = Ledger.from_settings(db, settings)
    account = await ledger.account_for_user(str(world.guild.id), str(world.alice.id))
    await ledger.grant(account, usd("1.00"), actor="test", reason="funds")
    try:
        first = await start_bot(world, env)
        await until(lambda: fake.gateway.identifies, 20, "the first process connecting")
        await asyncio.sleep(2.5)  # discord.py waits ~2 s for guilds before it is ready
        ix = await fake.slash(world.alice, world.channel, "generate", {"prompt": "Figure 1 waves", "duration": 3},
                              attachments={"image1": image("coffee.png")})  # fmt: skip
        await ix.response(timeout=10)
        await until(lambda: job_state(db_path) == "running", 20, "the job running")
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert job_state(db_path) == "running"

        second = await start_bot(world, env)
        try:
            thread = (await fake.wait_for(lambda: fake.threads, timeout=20))[0]
            await fake.wait_for(lambda: [m for m in fake.messages(thread) if m.attachments], timeout=60,
                                what="the clip after the restart")  # fmt: skip
            await until(lambda: job_state(db_path) == "done", 20, "the job done")
            await asyncio.sleep(1.0)  # anything that would post twice has had its chance
        finally:
            second.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(15):
                    await second.wait()
            except TimeoutError:
                second.kill()
                await second.wait()
        clips = [m for m in fake.messages(thread) if m.attachments]
        assert len(clips) == 1
        async with db.execute("SELECT kind, COUNT(*) FROM ledger_entries WHERE job_id IS NOT NULL GROUP BY kind") as c:
            kinds = dict(await c.fetchall())
        assert kinds == {"reserve": 1, "capture": 1}
        balance = await ledger.balance(account)
        assert (balance.balance, balance.reserved) == (usd("0.748"), 0)
        assert await ledger.verify() == []
        assert provider.count("submit") == 1
        assert fake.gateway.identifies >= 2  # two processes really connected
    finally:
        await db.close()
        await provider.stop()
