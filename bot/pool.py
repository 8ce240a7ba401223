"""A server's shared pool: funded by the bot's owners or a server administrator, drawn on by members' jobs
once their own quota is used up (see bot.funding), within a per-member cap per allowance period.

Money that never expires sits in `pool:<guild>`. Money that expires gets an account of its own,
`pool:<guild>:<grant id>`, so what is left of it at expiry is simply that account's unreserved balance — no
guessing which grant a draw came from. Members draw from the soonest-expiring money first. The sweep
(`expire_pool_grants`, run periodically by the engine) expires what is left; money a job still holds at that
moment is expired by a later sweep if the job gives it back, or spent if the job is charged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import aiosqlite

from bot.ledger import SYSTEM_ACTOR, Bucket, Clock, Ledger, iso, pool_account_id
from bot.money import Micros, fmt_usd
from bot.store.audit import ActionKind, record_action
from bot.store.db import transaction
from bot.store.pool import MemberDraws, PoolGrantRow, PoolRepository


class NotAllowed(PermissionError):
    """The person may not do this; the message says who may."""


@dataclass(frozen=True)
class PoolGrant:
    grant_id: int
    account_id: str
    amount: Micros
    expires_at: datetime | None


@dataclass(frozen=True)
class PoolSource:
    """Part of the pool a job can draw on, in drawing order."""

    account_id: str
    available: Micros
    expires_at: str | None


@dataclass(frozen=True)
class PoolReport:
    guild_id: str
    balance: Micros  # everything in the pool, including what jobs in progress hold
    reserved: Micros  # held by jobs in progress
    available: Micros  # what members can draw now (expired money waiting for the sweep excluded)
    grants: list[PoolGrantRow]  # since `since`
    draws: list[MemberDraws]  # since `since`, per member, biggest first


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Pool:
    def __init__(self, db: aiosqlite.Connection, ledger: Ledger, *, owner_ids: frozenset[str] = frozenset()) -> None:
        self.db = db
        self.ledger = ledger
        self.owner_ids = owner_ids
        self.store = PoolRepository(db)

    @property
    def clock(self) -> Clock:
        return self.ledger.clock

    def _now(self) -> datetime:
        return _utc(self.clock())

    # --- funding --------------------------------------------------------------------------------------

    async def fund_pool(
        self,
        guild_id: str,
        amount: Micros,
        *,
        actor: str,
        reason: str,
        expires_at: datetime | None = None,
        actor_is_admin: bool = False,
    ) -> PoolGrant:
        """Put money into the server's pool: a ledger grant, a pool grant row and a `pool_fund` admin action in
        one transaction. Only the bot's owners (`REELBOT_OWNER_IDS`) and the server's administrators (the
        Discord side says so with `actor_is_admin`) may. Money with `expires_at` is expired by the sweep."""
        if actor not in self.owner_ids and not actor_is_admin:
            raise NotAllowed("only the bot's owners and this server's administrators can fund its pool")
        if amount <= 0:
            raise ValueError(f"a pool grant must be more than $0 (got {fmt_usd(amount)})")
        if not reason.strip():
            raise ValueError("say why the pool is funded (the reason is kept in the audit)")
        now = self._now()
        if expires_at is not None and _utc(expires_at) <= now:
            raise ValueError(f"the expiry {_utc(expires_at):%Y-%m-%d %H:%M} UTC is not in the future")
        until = iso(_utc(expires_at)) if expires_at is not None else None
        async with transaction(self.db) as conn:
            grant_id = await self.store.next_grant_id(conn)
            lot = str(grant_id) if expires_at is not None else None
            account = await self.ledger.account_for_pool(guild_id, lot=lot, conn=conn)
            note = f" (expires {_utc(expires_at):%Y-%m-%d %H:%M} UTC)" if expires_at is not None else ""
            await self.ledger.grant(account, amount, actor=actor, reason=f"pool funded: {reason}{note}", conn=conn)
            await self.store.add_grant(
                conn, grant_id=grant_id, guild_id=guild_id, account_id=account, amount_micros=amount, actor=actor,
                reason=reason, at=iso(now), expires_at=until,
            )  # fmt: skip
            await record_action(
                self.db, guild_id=guild_id, actor=actor, kind=ActionKind.POOL_FUND, target=account,
                amount_micros=amount, reason=reason, conn=conn,
                detail={"grant_id": grant_id, "expires_at": until},
            )  # fmt: skip
        return PoolGrant(grant_id, account, amount, _utc(expires_at) if expires_at is not None else None)

    # --- expiry ---------------------------------------------------------------------------------------

    async def expire_pool_grants(self, now: datetime | None = None) -> Micros:
        """Expire what is left of every pool grant whose time has come; returns the total expired. Idempotent:
        a grant is closed once nothing is left or held, and a second run finds nothing more to expire. Each
        grant is handled in its own transaction, under the write lock, so concurrent sweeps cannot double up."""
        moment = iso(_utc(now) if now is not None else self._now())
        total = 0
        due = await self.store.due_grants(self.db, moment)  # a plain read: most ticks find nothing to do
        for grant in due:
            async with transaction(self.db) as conn:
                still_due = {g.id for g in await self.store.due_grants(conn, moment)}
                if grant.id not in still_due:
                    continue  # another sweep closed it meanwhile
                expired = await self.ledger.expire(
                    grant.account_id, None, actor=SYSTEM_ACTOR, bucket=Bucket.EXTRA, conn=conn,
                    reason=f"pool grant #{grant.id} expired at {grant.expires_at}",
                )  # fmt: skip
                balance = await self.ledger.balance(grant.account_id, conn=conn)
                closed = moment if balance.balance == 0 and balance.reserved == 0 else None
                if expired or closed:
                    await self.store.note_expired(conn, grant.id, expired, closed)
                total += expired
        return total

    # --- drawing (for bot.funding, inside the acceptance transaction) --------------------------------

    async def sources(self, conn: aiosqlite.Connection, guild_id: str) -> list[PoolSource]:
        """The pool money members may draw now, soonest-expiring first, the main pool last; money past its
        expiry (waiting for the sweep) is left out."""
        now = iso(self._now())
        found = []
        for row in await self.store.pool_accounts(guild_id, conn=conn):
            if row.expires_at is not None and row.expires_at <= now:
                continue
            if row.account_id != pool_account_id(guild_id) and row.expires_at is None:
                continue  # a lot account without its expiring grant: never drawn on
            free = row.balance_micros - row.reserved_micros
            if free > 0:
                found.append(PoolSource(row.account_id, free, row.expires_at))
        return found

    async def drawn(self, conn: aiosqlite.Connection, guild_id: str, user_id: str, since: datetime) -> Micros:
        """What the member's jobs took from the pool since `since` (captured or still held)."""
        return await self.store.committed_by(conn, guild_id, user_id, iso(since))

    async def record_draw(
        self, conn: aiosqlite.Connection, *, job_id: str, guild_id: str, user_id: str, amount: Micros
    ) -> None:
        await self.store.add_draw(conn, job_id=job_id, guild_id=guild_id, user_id=user_id, amount_micros=amount,
                                  at=iso(self._now()))  # fmt: skip

    # --- reporting ------------------------------------------------------------------------------------

    async def pool_report(self, guild_id: str, since: datetime | None = None) -> PoolReport:
        """For `/pool`: the balance, what is available, the grants and who drew how much since `since`."""
        start = iso(_utc(since)) if since is not None else ""
        async with transaction(self.db) as conn:  # one consistent snapshot
            accounts = await self.store.pool_accounts(guild_id, conn=conn)
            available = sum(source.available for source in await self.sources(conn, guild_id))
            grants = await self.store.grants(guild_id, since=start, conn=conn)
            draws = await self.store.draws_by_member(guild_id, since=start, conn=conn)
        return PoolReport(
            guild_id=guild_id,
            balance=sum(a.balance_micros for a in accounts),
            reserved=sum(a.reserved_micros for a in accounts),
            available=available,
            grants=grants,
            draws=draws,
        )
