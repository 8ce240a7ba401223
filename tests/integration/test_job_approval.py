"""Jobs that wait for a moderator, on the real engine with the WaveSpeed loopback fake: the dispatcher leaves them
alone, approval runs them (charged once), denial and expiry release them and tell the member why, and
whoever decides second is told who was first. The books stay clean throughout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from bot.engine.approvals import (
    EXPIRED_REASON,
    ApprovalExpiry,
    ApprovalNotAllowed,
    NotAwaitingApproval,
    UnknownJob,
    needs_approval,
)
from bot.engine.engine import Engine
from bot.engine.states import JobState
from bot.guilds import GuildSettings
from bot.ledger import utc_now
from bot.money import usd
from bot.request import GenerationRequest
from bot.services import App, open_app
from bot.settings import load_settings
from bot.store.audit import audit_page
from bot.store.jobs import Job
from tests.fakes.delivery import RecordingDelivery
from tests.fakes.providers.wavespeed import FakeWaveSpeed

FIXTURES = Path(__file__).parents[1] / "fixtures"
G, MEMBER, MOD = "g1", "u1", "mod1"
COST = usd("0.252")  # 3 s standard on WaveSpeed
FAST = {
    "REELBOT_POLL_FIRST_S": "0.02", "REELBOT_POLL_MAX_S": "0.05", "REELBOT_HTTP_TIMEOUT_S": "2",
    "REELBOT_HTTP_SUBMIT_TIMEOUT_S": "2", "REELBOT_HTTP_BACKOFF_S": "0.01", "REELBOT_HTTP_RETRIES": "3",
}  # fmt: skip


@pytest.fixture
async def fake_ws() -> AsyncIterator[FakeWaveSpeed]:
    fake = FakeWaveSpeed()
    await fake.start()
    yield fake
    await fake.stop()


@asynccontextmanager
async def opened(tmp_path: Path, fake: FakeWaveSpeed) -> AsyncIterator[tuple[App, Engine, RecordingDelivery]]:
    settings = load_settings(REELBOT_DB=str(tmp_path / "r.db"), REELBOT_DATA_DIR=str(tmp_path / "data"),
                             **FAST, **fake.settings_env())  # fmt: skip
    delivery = RecordingDelivery(tmp_path / "out")
    async with open_app(settings) as app:
        await app.guild_config.save(G, GuildSettings(approval_threshold_micros=usd("0.10")), actor="admin")
        account = await app.ledger.account_for_user(G, MEMBER)
        await app.ledger.grant(account, usd("1.00"), actor="test", reason="test funds")
        yield app, app.engine(lambda job: delivery, tick_s=0.05), delivery


async def submit(app: App, engine: Engine, *, roles: tuple[str, ...] = (), guild: str = G) -> Job:
    """What the /generate cog does: price it, ask the settings whether it needs approval, accept it so."""
    request = GenerationRequest.create(images=[await app.media.ingest(FIXTURES / "coffee.png")],
                                       prompt="Figure 1 steams", duration=3)  # fmt: skip
    cost = app.provider("wavespeed").quote(request).micros
    why = needs_approval(cost, await app.guilds.get(guild), roles)
    state = JobState.AWAITING_APPROVAL if why else JobState.QUEUED
    return await engine.accept(request, provider="wavespeed", user_id=MEMBER, guild_id=guild, state=state)


async def wait_for(app: App, job_id: str, states: set[JobState], timeout: float = 30) -> Job:
    async with asyncio.timeout(timeout):
        while (job := await app.jobs.require(job_id)).state not in states:  # noqa: ASYNC110 - watching the db
            await asyncio.sleep(0.02)
    return job


async def money(app: App) -> tuple[int, int]:
    balance = await app.ledger.balance(await app.ledger.account_for_user(G, MEMBER))
    return balance.available, balance.reserved


async def decisions(app: App, job_id: str) -> list[tuple[str, str, str]]:
    rows = (await audit_page(app.db, G, source="admin", limit=100)).rows
    return [(r.kind, r.actor, r.reason) for r in reversed(rows) if r.job_id == job_id]


async def ledger_kinds(app: App, job_id: str) -> list[tuple[str, str]]:
    async with app.db.execute("SELECT kind, actor FROM ledger_entries WHERE job_id = ? ORDER BY id", (job_id,)) as c:
        return [(row[0], row[1]) for row in await c.fetchall()]


def test_the_rule_threshold_and_trusted_roles() -> None:
    open_server = GuildSettings()
    assert needs_approval(usd("100"), open_server, []) is None
    strict = GuildSettings(approval_threshold_micros=usd("1.00"), trusted_roles=["r-trusted"])
    assert needs_approval(usd("1.00"), strict, ["r-trusted"]) is None  # at the threshold is fine
    over = needs_approval(usd("1.01"), strict, ["r-trusted"])
    assert over is not None and "$1.01" in over and "$1.00" in over
    untrusted = needs_approval(usd("0.10"), strict, ["r-other"])
    assert untrusted is not None and "roles" in untrusted
    assert needs_approval(usd("0.10"), strict, [123, "r-trusted"]) is None  # type: ignore[list-item]


async def test_a_job_over_the_threshold_waits_is_approved_and_runs_once(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, delivery):
        job = await submit(app, engine)
        assert job.state is JobState.AWAITING_APPROVAL and job.cost_micros == COST
        assert await money(app) == (usd("1.00") - COST, COST)  # reserved while it waits

        # The dispatcher never starts it, and `worker --until-idle` does not wait for a moderator.
        async with asyncio.timeout(10):
            await engine.run_until_idle(poll_s=0.05)
        assert (await app.jobs.require(job.id)).state is JobState.AWAITING_APPROVAL
        assert fake_ws.count("submit") == 0

        with pytest.raises(ApprovalNotAllowed, match="your own job"):
            await engine.approve_job(job.id, moderator_id=MEMBER)
        approved = await engine.approve_job(job.id, moderator_id=MOD)
        assert (approved.state, approved.approved_by) == (JobState.QUEUED, MOD) and approved.approved_at

        await engine.run_until_idle(poll_s=0.05)
        done = await app.jobs.require(job.id)
        assert done.state is JobState.DONE and done.charged_micros == COST
        assert [job_id for job_id, _ in delivery.delivered] == [job.id]
        assert await money(app) == (usd("1.00") - COST, 0)
        assert fake_ws.count("submit") == 1
        assert [kind for kind, _ in await ledger_kinds(app, job.id)] == ["reserve", "capture"]
        assert await decisions(app, job.id) == [("job_approve", MOD, f"approved job {job.id}")]

        with pytest.raises(NotAwaitingApproval, match=f"already approved by {MOD}"):
            await engine.approve_job(job.id, moderator_id="mod2")
        with pytest.raises(NotAwaitingApproval, match=f"already approved by {MOD}"):
            await engine.deny_job(job.id, moderator_id="mod2", reason="too late")
        with pytest.raises(UnknownJob):
            await engine.approve_job("nosuchjob", moderator_id=MOD)
        assert await app.ledger.verify() == []


async def test_members_without_an_allowed_role_wait_and_others_do_not(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, _):
        settings = GuildSettings(approval_threshold_micros=None, trusted_roles=["r-trusted"])
        await app.guild_config.save(G, settings, actor="admin")
        assert (await submit(app, engine, roles=("r-other",))).state is JobState.AWAITING_APPROVAL
        assert (await submit(app, engine, roles=("r-trusted",))).state is JobState.QUEUED


async def test_a_denied_job_is_released_and_the_member_told_why(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, delivery):
        job = await submit(app, engine)
        with pytest.raises(ValueError, match="say why"):
            await engine.deny_job(job.id, moderator_id=MOD, reason="  ")
        denied = await engine.deny_job(job.id, moderator_id=MOD, reason="too   expensive today")
        assert denied.state is JobState.CANCELLED and denied.charged_micros == 0
        assert denied.error_message == "a moderator declined it: too expensive today"
        assert await money(app) == (usd("1.00"), 0)
        assert [j.id for j in delivery.failures] == [job.id]  # told once, with the reason on the record
        assert delivery.failures[0].error_message == denied.error_message
        assert await ledger_kinds(app, job.id) == [("reserve", MEMBER), ("release", MOD)]
        assert await decisions(app, job.id) == [("job_deny", MOD, "too expensive today")]
        with pytest.raises(NotAwaitingApproval, match=f"already denied by {MOD}: too expensive today"):
            await engine.approve_job(job.id, moderator_id="mod2")
        await engine.run_until_idle(poll_s=0.05)
        assert fake_ws.count("submit") == 0 and len(delivery.failures) == 1  # not reported again on start
        assert await app.ledger.verify() == []


async def test_an_approval_nobody_gave_in_time_is_released_by_the_sweep(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, delivery):
        await app.guild_config.save(
            G, GuildSettings(approval_threshold_micros=usd("0.10"), approval_timeout_s=3600), actor="admin"
        )
        other = "g2"  # default timeout (24 h)
        await app.guild_config.save(other, GuildSettings(approval_threshold_micros=usd("0.10")), actor="admin")
        await app.ledger.grant(await app.ledger.account_for_user(other, MEMBER), usd("1"), actor="t", reason="t")
        job = await submit(app, engine)
        elsewhere = await submit(app, engine, guild=other)

        assert await ApprovalExpiry(engine, app.guilds.get)() == []  # nothing overdue yet
        later = utc_now() + timedelta(hours=2)
        released = await ApprovalExpiry(engine, app.guilds.get, clock=lambda: later)()
        assert [j.id for j in released] == [job.id]
        final = await app.jobs.require(job.id)
        assert (final.state, final.error_message) == (JobState.CANCELLED, EXPIRED_REASON)
        assert (await app.jobs.require(elsewhere.id)).state is JobState.AWAITING_APPROVAL
        assert await money(app) == (usd("1.00"), 0)
        assert [j.id for j in delivery.failures] == [job.id]
        assert await decisions(app, job.id) == [("job_approval_expired", "reelbot", EXPIRED_REASON)]
        with pytest.raises(NotAwaitingApproval, match=f"released: {EXPIRED_REASON}"):
            await engine.approve_job(job.id, moderator_id=MOD)
        assert await app.ledger.verify() == []


async def test_the_running_engine_sweeps_on_its_own(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, delivery):
        job = await submit(app, engine)
        await app.db.execute(  # as if it had waited since long ago
            "UPDATE jobs SET awaiting_approval_at = '2020-01-01T00:00:00.000Z' WHERE id = ?", (job.id,)
        )
        await engine.start()
        try:
            final = await wait_for(app, job.id, {JobState.CANCELLED}, timeout=10)
        finally:
            await engine.stop()
        assert final.error_message == EXPIRED_REASON and await money(app) == (usd("1.00"), 0)
        assert [j.id for j in delivery.failures] == [job.id]
        assert await app.ledger.verify() == []


async def test_moderators_and_the_sweep_deciding_at_once_make_one_decision(
    tmp_path: Path, fake_ws: FakeWaveSpeed
) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, _):
        for _ in range(3):
            job = await submit(app, engine)
            later = utc_now() + timedelta(days=2)
            sweep = ApprovalExpiry(engine, app.guilds.get, clock=lambda: later)  # noqa: B023 - used at once
            attempts = [
                engine.approve_job(job.id, moderator_id="mod1"),
                engine.deny_job(job.id, moderator_id="mod2", reason="no"),
                engine.approve_job(job.id, moderator_id="mod3"),
                sweep(),
            ]
            *decided, swept = await asyncio.gather(*attempts, return_exceptions=True)
            assert all(isinstance(o, Job | NotAwaitingApproval) for o in decided), decided
            assert isinstance(swept, list)
            wins = sum(isinstance(o, Job) for o in decided) + len(swept)
            assert wins == 1  # one decision; every moderator who lost was told so
            assert len(await decisions(app, job.id)) == 1
            final = await app.jobs.require(job.id)
            if final.state is JobState.QUEUED:
                await engine.cancel(final.id, actor=MEMBER)  # keep the next round's money simple
            assert len([k for k, _ in await ledger_kinds(app, job.id) if k == "release"]) == 1
        assert await money(app) == (usd("1.00"), 0)
        assert await app.ledger.verify() == []


async def test_the_deadline_counts_from_the_approval(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, _):
        job = await submit(app, engine)
        # waited two hours for a moderator: longer than the 30-minute job deadline
        await app.db.execute(
            "UPDATE jobs SET created_at = '2020-01-01T00:00:00.000Z', awaiting_approval_at = '2020-01-01T00:00:00.000Z'"
            " WHERE id = ?",
            (job.id,),
        )
        await engine.approve_job(job.id, moderator_id=MOD)
        await engine.run_until_idle(poll_s=0.05)
        final = await app.jobs.require(job.id)
        assert final.state is JobState.DONE, final.error_message
        assert await app.ledger.verify() == []
