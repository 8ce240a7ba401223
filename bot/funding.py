"""Who pays for a job, decided inside `Engine.accept`'s transaction: the operator's daily cap first, then the
member's own quota (with their roles' allowance applied), then the server pool for the rest.

A job drawing on the pool has one reservation in two (or more) accounts — the member's and the pool's —
written together by `Ledger.reserve_from`; capture and release settle every part in one transaction, and
`Ledger.verify` reports a job settled in only some of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiosqlite

from bot.guild_config import GuildConfig
from bot.ledger import Balance, InsufficientQuota, Ledger, Reservation
from bot.money import Micros, fmt_usd
from bot.pool import Pool
from bot.spend_cap import SpendCap
from bot.store.db import transaction


class PoolDrawRefused(InsufficientQuota):
    """The member's own quota is short and the pool cannot (or may not) cover the rest; the message gives the
    numbers: their own available, the pool's, and their cap and what they drew this period."""

    def __init__(
        self,
        *,
        account_id: str,
        needed: Micros,
        available: Micros,
        reserved: Micros,
        pool_available: Micros,
        drawn: Micros,
        cap: Micros | None,
        note: str,
    ) -> None:
        self.pool_available = pool_available
        self.drawn = drawn
        self.cap = cap
        super().__init__(account_id=account_id, needed=needed, available=available, reserved=reserved, note=note)


@dataclass(frozen=True)
class JobFunding:
    account_id: str  # the member's account
    own: Micros  # held in the member's account
    pool: Micros  # held in the server's pool
    reservations: list[Reservation]


def _refill_note(balance: Balance) -> str:
    if balance.allowance and balance.next_refill:
        return (
            f"; your {balance.period} allowance of {fmt_usd(balance.allowance)} comes back at"
            f" {balance.next_refill:%Y-%m-%d %H:%M} UTC"
        )
    return ""


class Funding:
    def __init__(self, ledger: Ledger, config: GuildConfig, pool: Pool, spend_cap: SpendCap) -> None:
        self.ledger = ledger
        self.config = config
        self.pool = pool
        self.spend_cap = spend_cap

    @asynccontextmanager
    async def _joined(self, conn: aiosqlite.Connection | None) -> AsyncIterator[aiosqlite.Connection]:
        if conn is not None:
            yield conn
        else:
            async with transaction(self.ledger.db) as own:
                yield own

    async def member_account(
        self,
        guild_id: str,
        user_id: str,
        role_ids: Iterable[str] | None = None,
        *,
        conn: aiosqlite.Connection | None = None,
    ) -> str:
        """The member's account, created on first use. With `role_ids` (the Discord side passes the member's
        roles on every command) their allowance becomes the largest of their roles' allowances, or the server's
        member allowance when none of their roles has one; a change tops up or trims once, mid-period."""
        async with self._joined(conn) as c:
            account = await self.ledger.account_for_user(guild_id, user_id, conn=c)
            if role_ids is not None and guild_id:
                settings = await self.config.repo.get(guild_id, conn=c)
                await self.ledger.set_allowance_override(account, settings.allowance_for_roles(role_ids), conn=c)
        return account

    async def member_balance(self, guild_id: str, user_id: str, role_ids: Iterable[str] | None = None) -> Balance:
        """The member's numbers for `/quota`, their roles' allowance applied first."""
        async with transaction(self.ledger.db) as c:
            account = await self.member_account(guild_id, user_id, role_ids, conn=c)
            return await self.ledger.balance(account, conn=c)

    async def reserve_job(
        self,
        conn: aiosqlite.Connection,
        *,
        job_id: str,
        guild_id: str,
        user_id: str,
        amount: Micros,
        actor: str,
        reason: str,
        role_ids: Iterable[str] | None = None,
    ) -> JobFunding:
        """Hold a job's price in the caller's transaction. Raises SpendCapReached (the operator's daily cap),
        InsufficientQuota (own quota short, no pool to draw on) or PoolDrawRefused (the pool cannot or may not
        cover the rest), each with the numbers in plain words."""
        await self.spend_cap.check(conn, amount)
        account = await self.member_account(guild_id, user_id, role_ids, conn=conn)
        own = await self.ledger.balance(account, conn=conn)
        if own.unlimited or amount <= own.available:
            held = await self.ledger.reserve(account, amount, job_id=job_id, actor=actor, reason=reason, conn=conn)
            return JobFunding(account, amount, 0, [held])
        own_part = max(own.available, 0)
        settings = await self.config.repo.get(guild_id, conn=conn)
        if not guild_id or not settings.pool_draws_allowed:
            raise InsufficientQuota(account_id=account, needed=amount, available=own.available,
                                    reserved=own.reserved, note=_refill_note(own))  # fmt: skip
        shortfall = amount - own_part
        sources = await self.pool.sources(conn, guild_id)
        pool_available = sum(source.available for source in sources)
        assert own.period_start is not None  # a member's account always has an allowance period
        drawn = await self.pool.drawn(conn, guild_id, user_id, own.period_start)
        cap = settings.pool_draw_cap_micros
        common = {"account_id": account, "needed": amount, "available": own.available, "reserved": own.reserved,
                  "pool_available": pool_available, "drawn": drawn, "cap": cap}  # fmt: skip
        if cap is not None and drawn + shortfall > cap:
            resets = f" (it resets at {own.next_refill:%Y-%m-%d %H:%M} UTC)" if own.next_refill else ""
            raise PoolDrawRefused(
                **common,
                note=f"; the server pool would have to cover the other {fmt_usd(shortfall)}, but you have drawn"
                f" {fmt_usd(drawn)} of your {fmt_usd(cap)} {own.period} pool limit{resets}",
            )
        if shortfall > pool_available:
            raise PoolDrawRefused(**common, note=f" and the server pool has {fmt_usd(pool_available)} available")
        parts = [(account, own_part)] if own_part else []
        remaining = shortfall
        for source in sources:  # soonest-expiring pool money first
            take = min(remaining, source.available)
            parts.append((source.account_id, take))
            remaining -= take
            if not remaining:
                break
        reservations = await self.ledger.reserve_from(parts, job_id=job_id, actor=actor, reason=reason, conn=conn)
        await self.pool.record_draw(conn, job_id=job_id, guild_id=guild_id, user_id=user_id, amount=shortfall)
        return JobFunding(account, own_part, shortfall, reservations)
