"""Settings on a real database: the allowance has one source of truth (the ledger's policy), every change is
logged and audited, concurrent edits keep each other; role allowances are the largest of a member's roles and
apply mid-period once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import aiosqlite
import pytest

from bot.ledger import AllowancePolicy, Period
from bot.money import usd
from tests.integration.quota_parts import Clock, build

WEDNESDAY = datetime(2025, 1, 15, 18, 30, tzinfo=UTC)


async def settings_actions(db: aiosqlite.Connection, guild: str) -> list[tuple[str, str | None, str]]:
    sql = "SELECT actor, detail_json, reason FROM admin_actions WHERE guild_id = ? AND kind = ? ORDER BY id"
    async with db.execute(sql, (guild, "settings_change")) as cursor:
        return [(row[0], json.loads(row[1])["field"], row[2]) for row in await cursor.fetchall()]


async def change_log(db: aiosqlite.Connection, guild: str) -> list[tuple[str, str]]:
    sql = "SELECT field, actor FROM guild_settings_changes WHERE guild_id = ? ORDER BY id"
    async with db.execute(sql, (guild,)) as cursor:
        return [(row[0], row[1]) for row in await cursor.fetchall()]


async def test_the_allowance_shown_is_the_ledgers_policy(db: aiosqlite.Connection) -> None:
    parts = build(db, Clock(WEDNESDAY), default=AllowancePolicy(usd("0.50"), Period.DAILY))
    assert (await parts.config.get("g")).member_allowance_micros == usd("0.50")  # the bot's default
    await parts.ledger.set_allowance("g", usd("3"), Period.WEEKLY, actor="cli")  # `reelbot quota allowance`
    shown = await parts.config.get("g")
    assert (shown.member_allowance_micros, shown.allowance_period) == (usd("3"), "weekly")


async def test_changing_the_allowance_in_settings_changes_what_members_get(db: aiosqlite.Connection) -> None:
    parts = build(db, Clock(WEDNESDAY))
    account = await parts.ledger.account_for_user("g", "m")
    assert (await parts.ledger.balance(account)).available == 0
    settings, changes = await parts.config.set("g", "allowance", "$2.50", actor="mod")
    assert settings.member_allowance_micros == usd("2.50")
    assert [(c.field, c.old, c.new) for c in changes] == [("member_allowance_micros", "$0.00", "$2.50")]
    assert await parts.ledger.policy("g") == AllowancePolicy(usd("2.50"), Period.DAILY)
    assert (await parts.ledger.balance(account)).available == usd("2.50")
    await parts.config.set("g", "period", "weekly", actor="mod")
    assert (await parts.ledger.policy("g")).period is Period.WEEKLY
    assert await settings_actions(db, "g") == [
        ("mod", "member_allowance_micros", "Allowance per member: $0.00 → $2.50"),
        ("mod", "allowance_period", "Allowance refills: daily → weekly"),
    ]
    assert await change_log(db, "g") == [("member_allowance_micros", "mod"), ("allowance_period", "mod")]
    assert await parts.ledger.verify() == []


async def test_an_unchanged_or_invalid_value_records_nothing(db: aiosqlite.Connection) -> None:
    parts = build(db, Clock(WEDNESDAY))
    await parts.config.set("g", "pool_draws", "on", actor="mod")
    _, changes = await parts.config.set("g", "pool_draws", "yes", actor="mod")
    assert changes == []
    with pytest.raises(ValueError, match=r"^Default duration \(default_duration\): 99 is above 15"):
        await parts.config.set("g", "duration", "99", actor="mod")
    assert (await parts.config.get("g")).default_duration == 5
    assert [field for _, field, _ in await settings_actions(db, "g")] == ["pool_draws_allowed"]


async def test_two_moderators_editing_at_once_keep_both_changes(db: aiosqlite.Connection) -> None:
    parts = build(db, Clock(WEDNESDAY))
    edits = [("duration", "8"), ("pool_draws", "on"), ("gift_daily_cap", "$1"), ("nsfw", "block"),
             ("channels", "<#5>"), ("approval_threshold", "$4")]  # fmt: skip
    await asyncio.gather(*(parts.config.set("g", name, text, actor=f"mod{i}") for i, (name, text) in enumerate(edits)))
    final = await parts.config.get("g")
    assert (final.default_duration, final.pool_draws_allowed, final.gift_daily_cap_micros, final.nsfw_policy,
            final.generate_channels, final.approval_threshold_micros) == (
        8, True, usd("1"), "block", ["5"], usd("4"))  # fmt: skip
    assert len(await settings_actions(db, "g")) == len(edits)


async def test_a_member_gets_the_largest_of_their_roles_allowances(db: aiosqlite.Connection) -> None:
    parts = build(db, Clock(WEDNESDAY))
    await parts.config.set("g", "allowance", "$1", actor="mod")
    await parts.config.set("g", "role_allowances", "<@&10>=$3, <@&20>=$5", actor="mod")
    assert (await parts.funding.member_balance("g", "plain", ["99"])).available == usd("1")
    assert (await parts.funding.member_balance("g", "patron", ["10", "20", "99"])).available == usd("5")
    assert (await parts.funding.member_balance("g", "helper", ["10"])).allowance == usd("3")
    assert await parts.ledger.verify() == []


async def test_role_changes_mid_period_top_up_or_trim_once(db: aiosqlite.Connection) -> None:
    clock = Clock(WEDNESDAY)
    parts = build(db, clock)
    await parts.config.set("g", "allowance", "$1", actor="mod")
    await parts.config.set("g", "role_allowances", "<@&10>=$4", actor="mod")
    balance = await parts.funding.member_balance("g", "m", [])
    assert balance.available == usd("1")
    account = balance.account_id
    await parts.ledger.reserve(account, usd("0.60"), job_id="j1", actor="m")
    await parts.ledger.capture("j1", actor="engine")

    gained = await parts.funding.member_balance("g", "m", ["10"])  # the role arrives: topped up by $3, once
    assert (gained.allowance, gained.available) == (usd("4"), usd("3.40"))
    assert (await parts.funding.member_balance("g", "m", ["10"])).available == usd("3.40")

    lost = await parts.funding.member_balance("g", "m", [])  # the role goes: what is unspent is trimmed to $1
    assert (lost.allowance, lost.available) == (usd("1"), usd("0.40"))
    again = await parts.funding.member_balance("g", "m", ["10"])  # and back: never more than $4 in a period
    assert again.available == usd("3.40")

    clock.advance(days=1)  # next period: the role's allowance in full, nothing carried over
    assert (await parts.funding.member_balance("g", "m", ["10"])).available == usd("4")
    clock.advance(days=1)
    assert (await parts.funding.member_balance("g", "m", None)).available == usd("4")  # roles unknown: kept
    assert (await parts.funding.member_balance("g", "m", ["77"])).available == usd("1")
    assert await parts.ledger.verify() == []


async def test_cached_settings_see_this_process_at_once_and_others_within_the_limit(tmp_path) -> None:
    from bot.guild_config import GuildConfig
    from bot.ledger import Ledger
    from bot.store.db import connect
    from bot.store.migrate import migrate

    db = await connect(tmp_path / "c.db")
    await migrate(db)
    try:
        here, elsewhere = GuildConfig(db, Ledger(db)), GuildConfig(db, Ledger(db))  # two processes, in effect
        assert (await here.cached("g")).default_duration == 5
        await here.set("g", "duration", "7", actor="mod")
        assert (await here.cached("g")).default_duration == 7  # our own change: at once
        await elsewhere.set("g", "duration", "9", actor="mod")
        assert (await here.cached("g")).default_duration == 7  # another's change: not yet…
        assert (await here.cached("g", max_age_s=0)).default_duration == 9  # …but once the copy is old enough
        assert (await here.get("g")).default_duration == 9  # and get() always reads the database
    finally:
        await db.close()
