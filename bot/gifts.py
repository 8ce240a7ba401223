"""Gifts between members (`/quota give`), with rules against farming quota through alt accounts.

Only extras move — balance above the periodic allowance, which is use-it-or-lose-it (`Ledger.transfer` moves
extras only) — so a farm of fresh accounts cannot pool their allowances. The giver's Discord account and
membership must be old enough, and each giver may give at most a daily amount per server. Every check and the
transfer, the gift row and its `gift` admin action happen in one transaction, so two gifts at once cannot
both pass the daily cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiosqlite

from bot.guild_config import GuildConfig
from bot.ledger import Ledger, iso
from bot.money import Micros, fmt_usd
from bot.store.audit import ActionKind, record_action
from bot.store.db import transaction
from bot.store.gifts import GiftRepository


class GiftRefused(ValueError):
    """A gift broke a rule; `rule` names it and the message gives the numbers in plain words."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__(message)


@dataclass(frozen=True)
class Gift:
    gift_id: int
    amount: Micros
    given_today: Micros  # including this gift
    daily_cap: Micros
    giver_extra_left: Micros


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _days(n: float) -> str:
    whole = int(n)
    return f"{whole} day{'s' if whole != 1 else ''}"


class Gifts:
    def __init__(self, db: aiosqlite.Connection, ledger: Ledger, config: GuildConfig) -> None:
        self.db = db
        self.ledger = ledger
        self.config = config
        self.store = GiftRepository(db)

    async def give(
        self,
        guild_id: str,
        giver_id: str,
        receiver_id: str,
        amount: Micros,
        *,
        giver_account_created_at: datetime,
        giver_joined_at: datetime,
        now: datetime,
        receiver_is_bot: bool = False,
        reason: str | None = None,
    ) -> Gift:
        """Move `amount` of the giver's extras to the receiver. Raises GiftRefused naming the rule: `amount`,
        `self`, `bot`, `account_age`, `membership_age`, `daily_cap` or `extras`."""
        now = _utc(now)
        if amount <= 0:
            raise GiftRefused("amount", f"a gift must be more than $0 (you asked to give {fmt_usd(amount)})")
        if giver_id == receiver_id:
            raise GiftRefused("self", "you cannot give quota to yourself")
        if receiver_is_bot:
            raise GiftRefused("bot", "bots cannot receive quota")
        async with transaction(self.db) as conn:
            settings = await self.config.repo.get(guild_id, conn=conn)
            account_age = (now - _utc(giver_account_created_at)).total_seconds() / 86400
            if account_age < settings.gift_min_account_age_days:
                raise GiftRefused(
                    "account_age",
                    f"your Discord account is {_days(account_age)} old; on this server only accounts at least"
                    f" {_days(settings.gift_min_account_age_days)} old can give quota",
                )
            membership = (now - _utc(giver_joined_at)).total_seconds() / 86400
            if membership < settings.gift_min_membership_days:
                raise GiftRefused(
                    "membership_age",
                    f"you joined this server {_days(membership)} ago; only members of at least"
                    f" {_days(settings.gift_min_membership_days)} can give quota",
                )
            day = now.replace(hour=0, minute=0, second=0, microsecond=0)
            given = await self.store.given(conn, guild_id, giver_id, iso(day), iso(day + timedelta(days=1)))
            cap = settings.gift_daily_cap_micros
            if given + amount > cap:
                left = max(cap - given, 0)
                raise GiftRefused(
                    "daily_cap",
                    f"you have given {fmt_usd(given)} today and the daily limit is {fmt_usd(cap)}, so you can give"
                    f" {fmt_usd(left)} more until 00:00 UTC (you asked to give {fmt_usd(amount)})",
                )
            source = await self.ledger.account_for_user(guild_id, giver_id, conn=conn)
            target = await self.ledger.account_for_user(guild_id, receiver_id, conn=conn)
            balance = await self.ledger.balance(source, conn=conn)
            if amount > balance.extra:
                raise GiftRefused(
                    "extras",
                    f"you can give only quota above your allowance: you have {fmt_usd(balance.extra)} of it"
                    f" available to give (you asked to give {fmt_usd(amount)}; your allowance of"
                    f" {fmt_usd(balance.allowance)} cannot be given)",
                )
            why = reason.strip() if reason and reason.strip() else "gift"
            await self.ledger.transfer(source, target, amount, actor=giver_id, conn=conn,
                                       reason=f"gift from {giver_id} to {receiver_id}: {why}")  # fmt: skip
            gift_id = await self.store.add(conn, guild_id=guild_id, giver_id=giver_id, receiver_id=receiver_id,
                                           amount_micros=amount, at=iso(now))  # fmt: skip
            await record_action(
                self.db, guild_id=guild_id, actor=giver_id, kind=ActionKind.GIFT, target=receiver_id,
                amount_micros=amount, reason=why, detail={"gift_id": gift_id}, conn=conn,
            )  # fmt: skip
        return Gift(gift_id, amount, given + amount, cap, balance.extra - amount)
