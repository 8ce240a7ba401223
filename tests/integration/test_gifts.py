"""Gifts on a real database: each rule refuses with its numbers, an allowed gift moves extras only and is in the
audit, and gifts at once cannot pass the giver's daily cap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiosqlite
import pytest

from bot.gifts import GiftRefused
from bot.money import usd
from tests.integration.quota_parts import Clock, Parts, build

NOW = datetime(2025, 1, 15, 18, 30, tzinfo=UTC)
OLD = NOW - timedelta(days=400)
GUILD = "g"


async def server(db: aiosqlite.Connection) -> Parts:
    parts = build(db, Clock(NOW))
    await parts.config.set(GUILD, "allowance", "$1", actor="mod")
    await parts.config.set(GUILD, "gift_min_account_age", "30", actor="mod")
    await parts.config.set(GUILD, "gift_min_membership", "7", actor="mod")
    await parts.config.set(GUILD, "gift_daily_cap", "$2", actor="mod")
    return parts


async def funded(parts: Parts, member: str, extra: str) -> str:
    account = await parts.ledger.account_for_user(GUILD, member)
    await parts.ledger.grant(account, usd(extra), actor="mod", reason="won the contest")
    return account


async def give(
    parts: Parts,
    amount: str,
    *,
    giver: str = "giver",
    receiver: str = "friend",
    created: datetime = OLD,
    joined: datetime = OLD,
    bot: bool = False,
    now: datetime = NOW,
):
    return await parts.gifts.give(GUILD, giver, receiver, usd(amount), giver_account_created_at=created,
                                  giver_joined_at=joined, now=now, receiver_is_bot=bot)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "rule", "message"),
    [
        ({"amount": "0"}, "amount", "a gift must be more than $0 (you asked to give $0.00)"),
        ({"amount": "-1"}, "amount", "a gift must be more than $0 (you asked to give -$1.00)"),
        ({"receiver": "giver"}, "self", "you cannot give quota to yourself"),
        ({"bot": True}, "bot", "bots cannot receive quota"),
        ({"created": NOW - timedelta(days=3, hours=5)}, "account_age",
         "your Discord account is 3 days old; on this server only accounts at least 30 days old can give quota"),
        ({"joined": NOW - timedelta(hours=30)}, "membership_age",
         "you joined this server 1 day ago; only members of at least 7 days can give quota"),
        ({"amount": "2.50"}, "daily_cap",
         "you have given $0.00 today and the daily limit is $2.00, so you can give $2.00 more until 00:00 UTC"
         " (you asked to give $2.50)"),
    ],
)  # fmt: skip
async def test_each_rule_refuses_with_its_numbers(
    db: aiosqlite.Connection, kwargs: dict, rule: str, message: str
) -> None:
    parts = await server(db)
    giver = await funded(parts, "giver", "5")
    with pytest.raises(GiftRefused) as refused:
        await give(parts, **{"amount": "1", **kwargs})
    assert (refused.value.rule, str(refused.value)) == (rule, message)
    assert (await parts.ledger.balance(giver)).extra == usd("5")
    async with db.execute("SELECT COUNT(*) FROM admin_actions WHERE kind = 'gift'") as cursor:
        assert (await cursor.fetchone())[0] == 0


async def test_only_extras_can_be_given(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    giver = await funded(parts, "giver", "0.30")
    assert (await parts.ledger.balance(giver)).available == usd("1.30")  # $1 allowance + $0.30 extra
    with pytest.raises(GiftRefused) as refused:
        await give(parts, "0.50")
    assert refused.value.rule == "extras"
    assert str(refused.value) == (
        "you can give only quota above your allowance: you have $0.30 of it available to"
        " give (you asked to give $0.50; your allowance of $1.00 cannot be given)"
    )


async def test_an_allowed_gift_moves_extras_and_is_audited(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    giver = await funded(parts, "giver", "3")
    gift = await give(parts, "1.25")
    assert (gift.amount, gift.given_today, gift.daily_cap, gift.giver_extra_left) == (
        usd("1.25"), usd("1.25"), usd("2"), usd("1.75"))  # fmt: skip
    mine = await parts.ledger.balance(giver)
    assert (mine.allowance_left, mine.extra) == (usd("1"), usd("1.75"))  # the allowance stays
    theirs = await parts.ledger.balance(await parts.ledger.account_for_user(GUILD, "friend"))
    assert (theirs.allowance_left, theirs.extra) == (usd("1"), usd("1.25"))
    async with db.execute("SELECT actor, target, amount_micros, kind FROM admin_actions WHERE kind = 'gift'") as cur:
        assert [tuple(row) for row in await cur.fetchall()] == [("giver", "friend", usd("1.25"), "gift")]
    entries = [e for e in await parts.ledger.history(giver) if e.kind == "transfer"]
    assert [(e.amount_micros, e.counterparty, e.actor) for e in entries] == [(-usd("1.25"), "user:g:friend", "giver")]
    with pytest.raises(GiftRefused, match=r"you have given \$1.25 today .* so you can give \$0.75 more"):
        await give(parts, "1")
    await give(parts, "1", now=NOW + timedelta(hours=6))  # after 00:00 UTC the cap starts again
    assert await parts.ledger.verify() == []


async def test_gifts_at_once_never_pass_the_daily_cap(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    await funded(parts, "giver", "10")

    async def attempt(i: int) -> bool:
        try:
            await give(parts, "0.25", receiver=f"friend{i % 3}")
        except GiftRefused as refused:
            assert refused.rule == "daily_cap"
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(20)))
    assert sum(results) == 8  # $2 / $0.25
    async with db.execute("SELECT COALESCE(SUM(amount_micros), 0) FROM gifts WHERE giver_id = 'giver'") as cursor:
        assert (await cursor.fetchone())[0] == usd("2")
    assert await parts.ledger.verify() == []
