"""Moderated sharing through the loopback Discord: requests and approvals, gifts, job approval, the
operator's daily cap — and the books stay balanced through all of it."""

from __future__ import annotations

import asyncio

from bot.engine.states import JobState
from bot.money import usd
from bot.store.audit import audit_page
from tests.fakes.discord import NotInvocable
from tests.fakes.providers.harness import Step
from tests.fakes.providers.wavespeed import FakeWaveSpeed
from tests.integration.discord.conftest import World, image


async def moderated(world: World, app) -> tuple:
    """A moderators' channel, a moderator role and two moderators."""
    guild = world.guild
    mods_channel = guild.add_text_channel("mods")
    role = guild.add_role("moderators")
    mod1, mod2 = world.fake.add_user("mod1"), world.fake.add_user("mod2")
    guild.add_member(mod1, roles=[role])
    guild.add_member(mod2, roles=[role])
    for name, value in (("log_channel", str(mods_channel.id)), ("moderator_role", str(role.id))):
        await app.guild_config.set(str(guild.id), name, value, actor="test")
    return mods_channel, mod1, mod2


async def card_in(world: World, channel, title: str):
    """The newest card with that title that still has its buttons (an undecided one)."""
    cards = await world.fake.wait_for(
        lambda: [m for m in world.fake.messages(channel)
                 if m.embeds and title in m.embeds[0].get("title", "") and m.custom_ids()],
        timeout=15, what=title,
    )  # fmt: skip
    return cards[-1]


async def test_a_request_approved_raises_the_balance_and_is_audited_once(world: World) -> None:
    fake = world.fake
    async with world.bot() as (_, app, _run):
        mods, mod1, mod2 = await moderated(world, app)
        ix = await fake.slash(world.alice, world.channel, "quota request", {"amount": "5", "reason": "trailer"})
        assert (await ix.response()).ephemeral
        card = await card_in(world, mods, "Quota request")
        [request_id] = {c.split(":")[-1] for c in card.custom_ids()}
        account = await app.funding.member_account(str(world.guild.id), str(world.alice.id))
        before = (await app.ledger.balance(account)).balance

        refused = await fake.click(world.bob, card, f"rb:req:approve:{request_id}")
        assert "Only moderators" in (await refused.response()).content

        # A custom id the card does not carry (a modified client): discord.py rebuilds the view from the
        # message and drops it, so no code of ours runs and nothing is granted.
        forged = await fake.click(mod1, card, f"rb:req:approve:{int(request_id) + 1}", unchecked=True)
        await asyncio.sleep(0.5)
        assert forged.callbacks == []
        assert (await app.ledger.balance(account)).balance == before

        first, second = await asyncio.gather(
            fake.click(mod1, card, f"rb:req:approve:{request_id}"),
            fake.click(mod2, card, f"rb:req:approve:{request_id}"),
        )
        answers = [await first.response(), await second.response()]
        assert sorted(a.type for a in answers) == [4, 7]  # one edits the card, the other is told it was decided
        loser = next(a for a in answers if a.type == 4)
        assert loser.ephemeral and "already approved" in loser.content
        assert (await app.ledger.balance(account)).balance == before + usd("5")
        page = await audit_page(app.db, str(world.guild.id), kind="quota_approve")
        assert len(page.rows) == 1
        await fake.wait_for(lambda: fake.messages(fake.dm_channel(world.alice)), timeout=10, what="the member told")
        assert await app.ledger.verify() == []


async def test_partial_approval_and_denial_with_a_reason(world: World) -> None:
    fake = world.fake
    async with world.bot() as (_, app, _run):
        mods, mod1, _ = await moderated(world, app)
        await (await fake.slash(world.alice, world.channel, "quota request", {"amount": "5", "reason": "x"})).response()
        card = await card_in(world, mods, "Quota request")
        request_id = card.custom_ids()[0].split(":")[-1]
        await (await fake.click(mod1, card, f"rb:req:partial:{request_id}")).response()
        submitted = await fake.submit_modal(mod1, mods, f"rb:req:partial-modal:{request_id}", {"amount": "2"})
        await submitted.response()
        account = await app.funding.member_account(str(world.guild.id), str(world.alice.id))
        assert (await app.ledger.balance(account)).extra == usd("2")

        await (await fake.slash(world.bob, world.channel, "quota request", {"amount": "3", "reason": "y"})).response()
        card = await card_in(world, mods, "Quota request")
        request_id = card.custom_ids()[0].split(":")[-1]
        await (await fake.click(mod1, card, f"rb:req:deny:{request_id}")).response()
        await (await fake.submit_modal(mod1, mods, f"rb:req:deny-modal:{request_id}", {"reason": "not now"})).response()
        told = await fake.wait_for(lambda: fake.messages(fake.dm_channel(world.bob)), timeout=10)
        assert "denied" in told[-1].content and "not now" in told[-1].content
        assert await app.ledger.verify() == []


async def test_a_gift_below_the_account_age_minimum_is_refused(world: World) -> None:
    async with world.bot() as (_, app, _run):
        await app.guild_config.set(str(world.guild.id), "gift_min_account_age", "30", actor="test")
        ix = await world.fake.slash(world.alice, world.channel, "quota give",
                                    {"member": world.bob, "amount": "1"})  # fmt: skip
        answer = await ix.response()
        assert answer.ephemeral and "account" in answer.content and "30" in answer.content
        assert await app.ledger.verify() == []


async def test_a_job_over_the_threshold_waits_is_approved_and_runs(world: World, wavespeed: FakeWaveSpeed) -> None:
    wavespeed.script = [Step("running", 0.5), Step("succeeded")]
    fake = world.fake
    async with world.bot() as (_, app, _run):
        mods, mod1, _ = await moderated(world, app)
        await app.guild_config.set(str(world.guild.id), "approval_threshold", "$0.10", actor="test")
        account = await app.funding.member_account(str(world.guild.id), str(world.alice.id))
        await app.ledger.grant(account, usd("2"), actor="test", reason="funds")
        ix = await fake.slash(world.alice, world.channel, "generate", {"prompt": "Figure 1", "duration": 3},
                              attachments={"image1": image("coffee.png")})  # fmt: skip
        await ix.response()
        card = await card_in(world, mods, "waits for approval")
        assert card.attachments  # thumbnails of the references
        [job] = await app.jobs.list_recent()
        assert job.state is JobState.AWAITING_APPROVAL and wavespeed.count("submit") == 0
        refused = await fake.click(world.bob, card, f"rb:job:approve:{job.id}")
        assert "Only moderators" in (await refused.response()).content
        await (await fake.click(mod1, card, f"rb:job:approve:{job.id}")).response()
        thread = (await fake.wait_for(lambda: fake.threads, timeout=10))[0]
        await fake.wait_for(lambda: [m for m in fake.messages(thread) if m.attachments], timeout=30, what="the clip")
        async with asyncio.timeout(10):
            while (await app.jobs.require(job.id)).state is not JobState.DONE:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert (await app.jobs.require(job.id)).charged_micros == usd("0.252")
        assert await app.ledger.verify() == []


async def test_a_denied_job_is_released_with_the_reason(world: World, wavespeed: FakeWaveSpeed) -> None:
    fake = world.fake
    async with world.bot() as (_, app, _run):
        mods, mod1, _ = await moderated(world, app)
        await app.guild_config.set(str(world.guild.id), "approval_threshold", "$0.10", actor="test")
        account = await app.funding.member_account(str(world.guild.id), str(world.alice.id))
        await app.ledger.grant(account, usd("2"), actor="test", reason="funds")
        ix = await fake.slash(world.alice, world.channel, "generate", {"prompt": "Figure 1", "duration": 3},
                              attachments={"image1": image("coffee.png")})  # fmt: skip
        await ix.response()
        card = await card_in(world, mods, "waits for approval")
        [job] = await app.jobs.list_recent()
        await (await fake.click(mod1, card, f"rb:job:deny:{job.id}")).response()
        await (await fake.submit_modal(mod1, mods, f"rb:job:deny-modal:{job.id}", {"reason": "off-topic"})).response()
        thread = (await fake.wait_for(lambda: fake.threads, timeout=10))[0]
        told = await fake.wait_for(lambda: [m for m in fake.messages(thread) if "off-topic" in m.content], timeout=10)
        assert "Nothing was charged" in told[0].content
        assert (await app.jobs.require(job.id)).state is JobState.CANCELLED
        balance = await app.ledger.balance(account)
        assert (balance.available, balance.reserved) == (usd("2"), 0)
        assert wavespeed.count("submit") == 0
        assert await app.ledger.verify() == []


async def test_the_daily_cap_stops_new_jobs_and_the_owner_is_told_once(world: World, wavespeed: FakeWaveSpeed) -> None:
    wavespeed.script = [Step("succeeded")]
    fake = world.fake
    carol = fake.add_user("carol")
    world.env.update(REELBOT_DAILY_SPEND_CAP_USD="0.30", REELBOT_OWNER_IDS=str(carol.id))
    async with world.bot() as (_, app, _run):
        account = await app.funding.member_account(str(world.guild.id), str(world.alice.id))
        await app.ledger.grant(account, usd("5"), actor="test", reason="funds")
        answers = []
        for _ in range(3):
            ix = await fake.slash(world.alice, world.channel, "generate", {"prompt": "Figure 1", "duration": 3},
                                  attachments={"image1": image("coffee.png")})  # fmt: skip
            await ix.response()
            answers.append(ix)
            await asyncio.sleep(0.3)
        await fake.wait_for(lambda: fake.messages(fake.dm_channel(carol)), timeout=10, what="the owner told")
        refusals = [m for m in fake.messages(world.channel) if m.ephemeral and "daily spending limit" in m.content]
        assert len(refusals) == 2
        assert len(await app.jobs.list_recent()) == 1
        await asyncio.sleep(0.3)
        assert len(fake.messages(fake.dm_channel(carol))) == 1  # told once, not per refusal
        assert await app.ledger.verify() == []


async def test_a_click_on_a_button_the_message_lacks_is_not_possible_without_forging(world: World) -> None:
    async with world.bot() as (_, app, _run):
        mods, mod1, _ = await moderated(world, app)
        await (await world.fake.slash(world.alice, world.channel, "quota request",
                                      {"amount": "5", "reason": "x"})).response()  # fmt: skip
        card = await card_in(world, mods, "Quota request")
        try:
            await world.fake.click(mod1, card, "rb:req:approve:999")
        except NotInvocable:
            pass
        else:
            raise AssertionError("the fake let a client press a button that is not on the message")


async def test_a_request_card_still_works_after_a_restart(world: World) -> None:
    fake = world.fake
    async with world.bot() as (_, app, _run):
        mods, mod1, _ = await moderated(world, app)
        await (await fake.slash(world.alice, world.channel, "quota request", {"amount": "4", "reason": "x"})).response()
        card = await card_in(world, mods, "Quota request")
        request_id = card.custom_ids()[0].split(":")[-1]
    async with world.bot() as (_, app, _run):
        answer = await (await fake.click(mod1, card, f"rb:req:approve:{request_id}")).response()
        assert answer.type == 7  # the card itself is updated with the decision
        account = await app.funding.member_account(str(world.guild.id), str(world.alice.id))
        assert (await app.ledger.balance(account)).extra == usd("4")
        assert "approved" in str(fake.message(card.id).embeds)
