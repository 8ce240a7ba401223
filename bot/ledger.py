"""The quota ledger: who may spend how much, recorded as append-only entries in integer micro-dollars.

An account's balance is the sum of its entries. Money sits in two buckets: the periodic **allowance** (refilled
each period from the guild's policy; whatever is unused expires at the rollover) and **extra** money granted
by an operator (it persists). A job's price is **reserved** when the job is accepted, **captured** when it
succeeds and **released** otherwise, so a failed job costs nothing; spending takes the allowance first.

Every decision is a read-then-write inside one `BEGIN IMMEDIATE` transaction, so any number of concurrent
requests — coroutines, connections or processes on the same database — can never take an account below zero.
The allowance rollover is lazy: it is written, in the same transaction, whenever an account is read or
charged after a period boundary. There is no SQL here; it lives in `bot.store.ledger`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import aiosqlite

from bot.money import Micros, fmt_usd, usd
from bot.store.db import transaction
from bot.store.ledger import AccountRow, EntryRow, LedgerRepository

if TYPE_CHECKING:
    from bot.settings import Settings

# The account the `reelbot` command spends from when no --user/--guild is given.
CLI_GUILD = ""
CLI_USER = "local"
OPERATOR_ACCOUNT = "operator"
# Who writes the entries reelbot makes on its own (allowance refills and expiries).
SYSTEM_ACTOR = "reelbot"


class Period(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class Bucket(StrEnum):
    ALLOWANCE = "allowance"
    EXTRA = "extra"


class EntryKind(StrEnum):
    GRANT = "grant"
    RESERVE = "reserve"
    CAPTURE = "capture"
    RELEASE = "release"
    TRANSFER = "transfer"
    ADJUST = "adjust"
    EXPIRE = "expire"


# --- identifiers and time ------------------------------------------------------------------------


def user_account_id(guild_id: str, user_id: str) -> str:
    """A member's quota in one server; the CLI's own account is `user::local`."""
    return f"user:{guild_id}:{user_id}"


def pool_account_id(guild_id: str) -> str:
    return f"pool:{guild_id}"


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """The store's one timestamp format (as `bot.store.db.now_iso`), so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def period_start(now: datetime, period: Period) -> datetime:
    """The UTC midnight that began the period containing `now`: today, this Monday, or the 1st."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAILY:
        return midnight
    if period is Period.WEEKLY:
        return midnight - timedelta(days=midnight.weekday())
    return midnight.replace(day=1)


def next_period_start(start: datetime, period: Period) -> datetime:
    if period is Period.DAILY:
        return start + timedelta(days=1)
    if period is Period.WEEKLY:
        return start + timedelta(weeks=1)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


# --- values --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowancePolicy:
    amount: Micros
    period: Period

    @classmethod
    def from_settings(cls, settings: Settings) -> AllowancePolicy:
        return cls(usd(settings.default_allowance_usd), Period(settings.allowance_period))


@dataclass(frozen=True)
class Balance:
    account_id: str
    balance: Micros  # everything the account holds, including money reserved for jobs in progress
    reserved: Micros  # held for jobs in progress
    available: Micros  # balance - reserved: what a new job may use (meaningless when unlimited)
    allowance: Micros  # the periodic allowance per period (0 when none applies)
    allowance_left: Micros  # unreserved allowance left in this period
    extra: Micros  # unreserved granted extras
    period: Period | None
    period_start: datetime | None
    next_refill: datetime | None
    unlimited: bool


@dataclass(frozen=True)
class Reservation:
    job_id: str
    account_id: str
    amount: Micros
    from_allowance: Micros
    from_extra: Micros


@dataclass(frozen=True)
class Mismatch:
    """One thing `verify()` found wrong; `message` says it in plain words."""

    account_id: str | None
    what: str
    expected: int  # recomputed from the entries
    found: int  # what is recorded
    message: str
    job_id: str | None = None


class LedgerError(Exception):
    pass


class InsufficientQuota(LedgerError):
    """The account cannot cover a reservation; the message gives the numbers in plain words."""

    def __init__(
        self,
        *,
        account_id: str,
        needed: Micros,
        available: Micros,
        reserved: Micros,
        subject: str = "you have",
        note: str = "",
    ) -> None:
        self.account_id = account_id
        self.needed = needed
        self.available = available
        self.reserved = reserved
        held = f" ({fmt_usd(reserved)} reserved by jobs in progress)" if reserved else ""
        super().__init__(f"this costs {fmt_usd(needed)} but {subject} {fmt_usd(available)} available{held}{note}")


class UnknownAccount(LedgerError, LookupError):
    pass


class UnknownReservation(LedgerError, LookupError):
    pass


class DuplicateReservation(LedgerError):
    pass


# --- the ledger ----------------------------------------------------------------------------------


def _free(account: AccountRow, bucket: Bucket) -> Micros:
    """Unreserved money in one bucket."""
    if bucket is Bucket.ALLOWANCE:
        return account.allowance_micros - account.allowance_reserved_micros
    extra_balance = account.balance_micros - account.allowance_micros
    return extra_balance - (account.reserved_micros - account.allowance_reserved_micros)


class Ledger:
    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        clock: Clock = utc_now,
        default_allowance: AllowancePolicy = AllowancePolicy(0, Period.DAILY),
    ) -> None:
        self.db = db
        self.store = LedgerRepository(db)
        self.clock = clock
        self.default_allowance = default_allowance

    @classmethod
    def from_settings(cls, db: aiosqlite.Connection, settings: Settings, *, clock: Clock = utc_now) -> Ledger:
        return cls(db, clock=clock, default_allowance=AllowancePolicy.from_settings(settings))

    # --- plumbing ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _joined(self, conn: aiosqlite.Connection | None) -> AsyncIterator[aiosqlite.Connection]:
        """The caller's transaction when given one, else our own (`transaction` is not re-entrant)."""
        if conn is not None:
            yield conn
        else:
            async with transaction(self.db) as own:
                yield own

    def _now(self) -> datetime:
        now = self.clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    async def _append(
        self,
        conn: aiosqlite.Connection,
        account: AccountRow,
        kind: EntryKind,
        bucket: Bucket,
        *,
        at: str,
        actor: str,
        reason: str,
        amount: Micros = 0,
        held: Micros = 0,
        period: str | None = None,
        job_id: str | None = None,
        counterparty: str | None = None,
    ) -> None:
        if not actor.strip() or not reason.strip():
            raise ValueError("every ledger entry needs an actor and a reason")
        if bucket is Bucket.ALLOWANCE:
            period = period or account.period_start
            assert period is not None, "allowance money always belongs to a period"
        entry = EntryRow(
            account_id=account.id, kind=kind.value, bucket=bucket.value, amount_micros=amount, held_micros=held,
            actor=actor, reason=reason, created_at=at, period_start=period if bucket is Bucket.ALLOWANCE else None,
            job_id=job_id, counterparty=counterparty,
        )  # fmt: skip
        await self.store.append(conn, entry)

    async def _account(self, conn: aiosqlite.Connection, account_id: str) -> AccountRow:
        account = await self.store.get_account(account_id, conn=conn)
        if account is None:
            raise UnknownAccount(f"no account {account_id!r}")
        return account

    async def policy(self, guild_id: str, *, conn: aiosqlite.Connection | None = None) -> AllowancePolicy:
        """The allowance a member of this guild gets: the guild's own policy, else the settings' default."""
        row = await self.store.policy(guild_id, conn=conn)
        return AllowancePolicy(row.amount_micros, Period(row.period)) if row else self.default_allowance

    async def account_policy(self, account: AccountRow, *, conn: aiosqlite.Connection | None = None) -> AllowancePolicy:
        """The allowance this member gets: their roles' allowance where one is set on the account (see
        `set_allowance_override`), else the guild's; the period is always the guild's."""
        assert account.guild_id is not None
        policy = await self.policy(account.guild_id, conn=conn)
        if account.allowance_override_micros is None:
            return policy
        return AllowancePolicy(account.allowance_override_micros, policy.period)

    async def _current(self, conn: aiosqlite.Connection, account_id: str, now: datetime) -> AccountRow:
        """The account with its allowance brought up to date — the lazy rollover, in the caller's transaction.

        At a period boundary the unreserved allowance expires and the new period's allowance is granted (once,
        however many periods passed). A policy changed mid-period applies at once: a raise is topped up, a cut
        trims what is left unspent, and `period_granted_micros` makes either happen only once.
        """
        account = await self._account(conn, account_id)
        if account.kind != "user" or account.unlimited:
            return account
        assert account.guild_id is not None
        policy = await self.account_policy(account, conn=conn)
        start = iso(period_start(now, policy.period))
        at, unspent = iso(now), _free(account, Bucket.ALLOWANCE)
        if account.period_start != start:
            if unspent > 0:
                await self._append(
                    conn, account, EntryKind.EXPIRE, Bucket.ALLOWANCE, at=at, actor=SYSTEM_ACTOR, amount=-unspent,
                    reason=f"unused allowance of the period from {account.period_start} expired",
                )  # fmt: skip
            if policy.amount > 0:
                await self._append(
                    conn, account, EntryKind.GRANT, Bucket.ALLOWANCE, at=at, actor=SYSTEM_ACTOR, amount=policy.amount,
                    period=start, reason=f"{policy.period} allowance for the period from {start}",
                )  # fmt: skip
            await self.store.set_period(conn, account.id, start, policy.amount, at)
        elif policy.amount > account.period_granted_micros:
            raise_by = policy.amount - account.period_granted_micros
            await self._append(
                conn, account, EntryKind.GRANT, Bucket.ALLOWANCE, at=at, actor=SYSTEM_ACTOR, amount=raise_by,
                reason=f"allowance raised to {fmt_usd(policy.amount)} {policy.period}",
            )  # fmt: skip
            await self.store.set_period(conn, account.id, start, policy.amount, at)
        elif policy.amount < account.period_granted_micros and unspent > 0:
            trim = min(account.period_granted_micros - policy.amount, unspent)
            await self._append(
                conn, account, EntryKind.EXPIRE, Bucket.ALLOWANCE, at=at, actor=SYSTEM_ACTOR, amount=-trim,
                reason=f"allowance cut to {fmt_usd(policy.amount)} {policy.period}",
            )  # fmt: skip
            await self.store.set_period(conn, account.id, start, account.period_granted_micros - trim, at)
        else:
            return account
        return await self._account(conn, account_id)

    async def _end_unlimited(
        self, conn: aiosqlite.Connection, account: AccountRow, *, actor: str, because: str
    ) -> None:
        """An unlimited account becomes an ordinary one. What it spent while unlimited (a negative balance) is
        written off with an adjust entry, leaving it exactly covering its jobs in progress with nothing available."""
        at = iso(self._now())
        shortfall = account.reserved_micros - account.balance_micros
        if shortfall > 0:
            await self._append(
                conn, account, EntryKind.ADJUST, Bucket.EXTRA, at=at, actor=actor, amount=shortfall,
                reason=f"unlimited use ended ({because}): writes off spending while unlimited",
            )  # fmt: skip
        await self.store.set_unlimited(conn, account.id, False, at)

    # --- accounts ---------------------------------------------------------------------------------

    async def account_for_user(self, guild_id: str, user_id: str, *, conn: aiosqlite.Connection | None = None) -> str:
        """The member's account id, created on first use.

        The one account created unlimited is the CLI's (`guild ""`, user `local`), and only while guild ""
        has no allowance policy; a grant to it or an allowance set for guild "" makes it ordinary for good.
        """
        account_id = user_account_id(guild_id, user_id)
        async with self._joined(conn) as c:
            if await self.store.get_account(account_id, conn=c) is None:
                is_cli = (guild_id, user_id) == (CLI_GUILD, CLI_USER)
                unlimited = is_cli and await self.store.policy(guild_id, conn=c) is None
                await self.store.create_account(
                    c, account_id=account_id, kind="user", guild_id=guild_id, user_id=user_id,
                    unlimited=unlimited, at=iso(self._now()),
                )  # fmt: skip
        return account_id

    async def account_for_pool(
        self, guild_id: str, *, lot: str | None = None, conn: aiosqlite.Connection | None = None
    ) -> str:
        """A guild's shared pool (funded by transfers and grants; no allowance of its own). A `lot` is a part of
        the pool with an account of its own (`pool:<guild>:<lot>`), used for money that expires (bot.pool)."""
        account_id = pool_account_id(guild_id) if lot is None else f"{pool_account_id(guild_id)}:{lot}"
        async with self._joined(conn) as c:
            await self.store.create_account(
                c, account_id=account_id, kind="pool", guild_id=guild_id, user_id=None, unlimited=False,
                at=iso(self._now()),
            )  # fmt: skip
        return account_id

    async def operator_account(self, *, conn: aiosqlite.Connection | None = None) -> str:
        async with self._joined(conn) as c:
            await self.store.create_account(
                c, account_id=OPERATOR_ACCOUNT, kind="operator", guild_id=None, user_id=None, unlimited=False,
                at=iso(self._now()),
            )  # fmt: skip
        return OPERATOR_ACCOUNT

    async def set_allowance(
        self,
        guild_id: str,
        amount: Micros,
        period: Period | str,
        *,
        actor: str,
        conn: aiosqlite.Connection | None = None,
    ) -> AllowancePolicy:
        """Set the guild's per-member allowance; members see the change on their next read or charge."""
        if amount < 0:
            raise ValueError("an allowance cannot be negative")
        period = Period(period)
        async with self._joined(conn) as c:
            await self.store.put_policy(c, guild_id, amount, period.value, actor, iso(self._now()))
            for account_id in await self.store.unlimited_users(c, guild_id):
                account = await self._account(c, account_id)
                await self._end_unlimited(c, account, actor=actor, because="an allowance was set for its guild")
        return AllowancePolicy(amount, period)

    async def set_allowance_override(
        self, account_id: str, amount: Micros | None, *, conn: aiosqlite.Connection | None = None
    ) -> bool:
        """Give one member an allowance of their own (their roles'), or None to follow the guild's policy again.

        No entry is written here: the next read or charge applies it like a policy change mid-period (a raise
        is topped up, a cut trims what is unspent, each once), so refreshing it on every command is cheap and a
        member whose roles flap cannot collect more than the largest allowance once per period. True if changed.
        """
        if amount is not None and amount < 0:
            raise ValueError("an allowance cannot be negative")
        async with self._joined(conn) as c:
            account = await self._account(c, account_id)
            if account.kind != "user":
                raise ValueError(f"{account_id} is not a member's account")
            if account.allowance_override_micros == amount:
                return False
            await self.store.set_allowance_override(c, account_id, amount, iso(self._now()))
        return True

    # --- reading ----------------------------------------------------------------------------------

    async def balance(self, account_id: str, *, conn: aiosqlite.Connection | None = None) -> Balance:
        """The account's numbers, after any due rollover (which is why this takes the write lock)."""
        async with self._joined(conn) as c:
            now = self._now()
            return await self._balance(c, await self._current(c, account_id, now), now)

    async def _balance(self, conn: aiosqlite.Connection, account: AccountRow, now: datetime) -> Balance:
        policy = None
        if account.kind == "user" and not account.unlimited:
            assert account.guild_id is not None
            policy = await self.account_policy(account, conn=conn)
        start = period_start(now, policy.period) if policy else None
        return Balance(
            account_id=account.id,
            balance=account.balance_micros,
            reserved=account.reserved_micros,
            available=account.balance_micros - account.reserved_micros,
            allowance=policy.amount if policy else 0,
            allowance_left=_free(account, Bucket.ALLOWANCE),
            extra=_free(account, Bucket.EXTRA),
            period=policy.period if policy else None,
            period_start=start,
            next_refill=next_period_start(start, policy.period) if policy and start else None,
            unlimited=account.unlimited,
        )

    async def history(self, account_id: str, *, limit: int = 50) -> list[EntryRow]:
        """The account's most recent entries, newest first."""
        return await self.store.entries(account_id, limit=limit)

    # --- jobs: reserve, capture, release ----------------------------------------------------------

    async def reserve(
        self,
        account_id: str,
        amount: Micros,
        *,
        job_id: str,
        actor: str,
        reason: str = "reserved for a job",
        conn: aiosqlite.Connection | None = None,
    ) -> Reservation:
        """Hold `amount` for a job, allowance first, or raise InsufficientQuota; one reservation per job."""
        if amount < 0:
            raise ValueError("a reservation cannot be negative")
        async with self._joined(conn) as c:
            if await self.store.job_entries(job_id, conn=c):
                raise DuplicateReservation(f"job {job_id} already has a reservation")
            return await self._hold(c, account_id, amount, job_id=job_id, actor=actor, reason=reason)

    async def reserve_from(
        self,
        sources: Sequence[tuple[str, Micros]],
        *,
        job_id: str,
        actor: str,
        reason: str = "reserved for a job",
        conn: aiosqlite.Connection | None = None,
    ) -> list[Reservation]:
        """Hold one job's price across several accounts (a member's own quota, then the server pool), each part
        allowance first. One transaction: either every part is held or none is (InsufficientQuota names the
        account that fell short). capture() and release() then settle all parts together, in this order, so a
        partial capture charges the first source first; verify() reports a job settled in one account only."""
        accounts = [account_id for account_id, _ in sources]
        if not sources or len(set(accounts)) != len(accounts):
            raise ValueError("a split reservation needs one or more distinct accounts")
        if any(amount < 0 for _, amount in sources):
            raise ValueError("a reservation cannot be negative")
        async with self._joined(conn) as c:
            if await self.store.job_entries(job_id, conn=c):
                raise DuplicateReservation(f"job {job_id} already has a reservation")
            return [
                await self._hold(c, account_id, amount, job_id=job_id, actor=actor, reason=reason)
                for account_id, amount in sources
            ]

    async def _hold(
        self, c: aiosqlite.Connection, account_id: str, amount: Micros, *, job_id: str, actor: str, reason: str
    ) -> Reservation:
        now = self._now()
        account = await self._current(c, account_id, now)
        if account.unlimited:
            from_allowance = 0
        else:
            allowance_free, extra_free = _free(account, Bucket.ALLOWANCE), _free(account, Bucket.EXTRA)
            if amount > allowance_free + extra_free:
                raise await self._refusal(c, account, amount, now)
            from_allowance = min(amount, allowance_free)
        from_extra = amount - from_allowance
        at = iso(now)
        # Entry order is spending order: capture() charges the allowance part first.
        parts = [(Bucket.ALLOWANCE, from_allowance), (Bucket.EXTRA, from_extra)]
        parts = [(bucket, part) for bucket, part in parts if part] or [(Bucket.EXTRA, 0)]
        for bucket, part in parts:
            await self._append(
                c, account, EntryKind.RESERVE, bucket, at=at, actor=actor, reason=reason, held=part, job_id=job_id
            )
        return Reservation(job_id, account_id, amount, from_allowance, from_extra)

    async def _refusal(
        self, conn: aiosqlite.Connection, account: AccountRow, amount: Micros, now: datetime
    ) -> InsufficientQuota:
        note = ""
        balance = await self._balance(conn, account, now)
        if balance.allowance and balance.next_refill:
            note = (
                f"; your {balance.period} allowance of {fmt_usd(balance.allowance)} comes back at"
                f" {balance.next_refill:%Y-%m-%d %H:%M} UTC"
            )
        return InsufficientQuota(
            account_id=account.id,
            needed=amount,
            available=balance.available,
            reserved=balance.reserved,
            subject="you have" if account.kind == "user" else f"{account.id} has",
            note=note,
        )

    async def _open_holds(self, conn: aiosqlite.Connection, job_id: str) -> list[EntryRow] | None:
        """The job's reserve entries while unresolved; None once captured or released."""
        entries = await self.store.job_entries(job_id, conn=conn)
        if not entries:
            raise UnknownReservation(f"job {job_id} has no reservation")
        if any(entry.kind != EntryKind.RESERVE for entry in entries):
            return None
        return entries

    async def capture(
        self,
        job_id: str,
        *,
        actor: str,
        amount: Micros | None = None,
        reason: str = "job finished",
        conn: aiosqlite.Connection | None = None,
    ) -> bool:
        """Spend the job's reservation (or `amount` of it, the rest released). False if already resolved."""
        return await self._resolve(job_id, actor=actor, reason=reason, capture=amount, conn=conn)

    async def release(self, job_id: str, *, actor: str, reason: str, conn: aiosqlite.Connection | None = None) -> bool:
        """Give the job's reservation back: the job cost nothing. False if already resolved."""
        return await self._resolve(job_id, actor=actor, reason=reason, capture=0, conn=conn, releasing=True)

    async def _resolve(
        self,
        job_id: str,
        *,
        actor: str,
        reason: str,
        capture: Micros | None,
        conn: aiosqlite.Connection | None,
        releasing: bool = False,
    ) -> bool:
        async with self._joined(conn) as c:
            holds = await self._open_holds(c, job_id)
            if holds is None:
                return False  # already captured or released: exactly one resolution, whoever came first
            total = sum(hold.held_micros for hold in holds)
            remaining = total if capture is None else capture
            if not 0 <= remaining <= total:
                raise ValueError(f"cannot capture {fmt_usd(remaining)}: job {job_id} has {fmt_usd(total)} reserved")
            now = self._now()
            at = iso(now)
            accounts: dict[str, AccountRow] = {}
            for hold in holds:
                if hold.account_id not in accounts:
                    accounts[hold.account_id] = await self._current(c, hold.account_id, now)
                account = accounts[hold.account_id]
                bucket = Bucket(hold.bucket)
                take = min(remaining, hold.held_micros)
                rest = hold.held_micros - take
                remaining -= take
                common = {"at": at, "actor": actor, "reason": reason, "period": hold.period_start, "job_id": job_id}
                # Every hold gets at least one resolution entry, so even a free job shows it was settled.
                if not releasing and (take or not hold.held_micros):
                    await self._append(c, account, EntryKind.CAPTURE, bucket, amount=-take, held=-take, **common)
                if rest or releasing:
                    await self._append(c, account, EntryKind.RELEASE, bucket, held=-rest, **common)
                    if bucket is Bucket.ALLOWANCE and rest and hold.period_start != account.period_start:
                        # Allowance held across a rollover belongs to a period that is over: it expires
                        # instead of returning (the new period's allowance was granted in full already).
                        await self._append(
                            c, account, EntryKind.EXPIRE, bucket, amount=-rest, at=at, actor=SYSTEM_ACTOR,
                            period=hold.period_start, job_id=job_id,
                            reason=f"released allowance of the period from {hold.period_start} expired",
                        )  # fmt: skip
        return True

    # --- moving money -----------------------------------------------------------------------------

    async def grant(
        self, account_id: str, amount: Micros, *, actor: str, reason: str, conn: aiosqlite.Connection | None = None
    ) -> Balance:
        """Add extra money, which persists across periods. A grant ends an account's unlimited use."""
        if amount <= 0:
            raise ValueError("a grant must be more than $0")
        async with self._joined(conn) as c:
            now = self._now()
            account = await self._account(c, account_id)
            if account.unlimited:
                await self._end_unlimited(c, account, actor=actor, because="it received a grant")
            account = await self._current(c, account_id, now)
            await self._append(
                c, account, EntryKind.GRANT, Bucket.EXTRA, at=iso(now), actor=actor, reason=reason, amount=amount
            )
            return await self._balance(c, await self._account(c, account_id), now)

    async def transfer(
        self,
        source: str,
        target: str,
        amount: Micros,
        *,
        actor: str,
        reason: str,
        conn: aiosqlite.Connection | None = None,
    ) -> None:
        """Move extra money between accounts. Only extras move: the periodic allowance is use-it-or-lose-it,
        and moving it would let it escape its expiry."""
        if amount <= 0:
            raise ValueError("a transfer must be more than $0")
        if source == target:
            raise ValueError("cannot transfer to the same account")
        async with self._joined(conn) as c:
            now = self._now()
            src = await self._current(c, source, now)
            dst = await self._current(c, target, now)
            if src.unlimited:  # it has no money of its own: a transfer out would mint money for someone else
                raise ValueError(f"{source} is unlimited and has nothing to transfer")
            free = _free(src, Bucket.EXTRA)
            if amount > free:
                raise InsufficientQuota(
                    account_id=source, needed=amount, available=free, reserved=0,
                    subject="you have" if src.kind == "user" else f"{source} has",
                    note=" to transfer (only granted extras can be transferred, not the periodic allowance)",
                )  # fmt: skip
            at = iso(now)
            common = {"at": at, "actor": actor, "reason": reason}
            await self._append(c, src, EntryKind.TRANSFER, Bucket.EXTRA, amount=-amount, counterparty=target, **common)
            await self._append(c, dst, EntryKind.TRANSFER, Bucket.EXTRA, amount=amount, counterparty=source, **common)

    async def adjust(
        self,
        account_id: str,
        amount: Micros,
        *,
        actor: str,
        reason: str,
        bucket: Bucket = Bucket.EXTRA,
        conn: aiosqlite.Connection | None = None,
    ) -> Balance:
        """A signed correction by an operator; it may not take the bucket's unreserved money below zero."""
        if amount == 0:
            raise ValueError("an adjustment cannot be $0")
        bucket = Bucket(bucket)
        async with self._joined(conn) as c:
            now = self._now()
            account = await self._current(c, account_id, now)
            if bucket is Bucket.ALLOWANCE and account.period_start is None:
                raise ValueError(f"{account_id} has no allowance period to adjust")
            free = _free(account, bucket)
            if amount < 0 and -amount > free and not (account.unlimited and bucket is Bucket.EXTRA):
                raise InsufficientQuota(
                    account_id=account_id, needed=-amount, available=free, reserved=account.reserved_micros,
                    subject="you have" if account.kind == "user" else f"{account_id} has",
                    note=f" in the {bucket} bucket",
                )  # fmt: skip
            await self._append(
                c, account, EntryKind.ADJUST, bucket, at=iso(now), actor=actor, reason=reason, amount=amount
            )
            return await self._balance(c, await self._account(c, account_id), now)

    async def expire(
        self,
        account_id: str,
        amount: Micros | None = None,
        *,
        actor: str,
        reason: str,
        bucket: Bucket = Bucket.ALLOWANCE,
        conn: aiosqlite.Connection | None = None,
    ) -> Micros:
        """Expire unreserved money from a bucket (all of it when `amount` is None); returns what expired."""
        bucket = Bucket(bucket)
        async with self._joined(conn) as c:
            now = self._now()
            account = await self._current(c, account_id, now)
            free = _free(account, bucket)
            amount = free if amount is None else amount
            if not 0 <= amount <= free:
                raise ValueError(
                    f"cannot expire {fmt_usd(amount)}: {account_id} has {fmt_usd(free)} unreserved {bucket}"
                )
            if amount:
                await self._append(
                    c, account, EntryKind.EXPIRE, bucket, at=iso(now), actor=actor, reason=reason, amount=-amount
                )
        return amount

    # --- verification -----------------------------------------------------------------------------

    async def verify(self) -> list[Mismatch]:
        """Recompute every account from its entries and compare; an empty list means the books balance."""
        found: list[Mismatch] = []
        async with transaction(self.db) as c:  # one consistent snapshot, no writer in between
            sums = await self.store.account_sums(c)
            holds = await self.store.job_holds(c)
            transfers = await self.store.transfer_sum(c)
        labels = {
            "balance_micros": "balance",
            "reserved_micros": "reserved",
            "allowance_micros": "allowance balance",
            "allowance_reserved_micros": "allowance reserved",
        }
        for account in sums:
            for column, label in labels.items():
                cached, computed = account.cached[column], account.computed[column]
                if cached != computed:
                    found.append(
                        Mismatch(
                            account_id=account.account_id,
                            what=column,
                            expected=computed,
                            found=cached,
                            message=f"{account.account_id}: recorded {label} {fmt_usd(cached)}"
                            f" but its entries sum to {fmt_usd(computed)}",
                        )
                    )
            computed = account.computed
            allowance_free = computed["allowance_micros"] - computed["allowance_reserved_micros"]
            total_free = computed["balance_micros"] - computed["reserved_micros"]
            if allowance_free < 0 or (not account.unlimited and total_free - allowance_free < 0):
                found.append(
                    Mismatch(
                        account_id=account.account_id,
                        what="available",
                        expected=0,
                        found=min(allowance_free, total_free - allowance_free),
                        message=f"{account.account_id}: its entries leave {fmt_usd(total_free)} available"
                        f" ({fmt_usd(allowance_free)} of it allowance): a bucket is below zero",
                    )
                )
        for hold in holds:
            resolved = hold.resolutions > 0
            expected = 0 if resolved else hold.reserved_micros
            if hold.held_micros != expected or hold.resolutions > 2:
                state = f"resolved {hold.resolutions} times" if resolved else "unresolved"
                found.append(
                    Mismatch(
                        account_id=hold.account_id,
                        what="job_hold",
                        expected=expected,
                        found=hold.held_micros,
                        message=f"{hold.account_id}: job {hold.job_id} ({hold.bucket}, {state}) holds"
                        f" {fmt_usd(hold.held_micros)}; expected {fmt_usd(expected)}",
                        job_id=hold.job_id,
                    )
                )
        # A job held in several accounts (its member's and the pool's) is settled in all of them or in none.
        settled: dict[str, set[bool]] = {}
        for hold in holds:
            settled.setdefault(hold.job_id, set()).add(hold.resolutions > 0)
        for job_id, states in settled.items():
            if len(states) > 1:
                open_in = sorted({h.account_id for h in holds if h.job_id == job_id and not h.resolutions})
                open_held = sum(h.held_micros for h in holds if h.job_id == job_id and not h.resolutions)
                found.append(
                    Mismatch(
                        account_id=open_in[0], what="job_split", expected=0, found=open_held, job_id=job_id,
                        message=f"job {job_id} was settled in some of its accounts but still holds"
                        f" {fmt_usd(open_held)} in {', '.join(open_in)}",
                    )
                )  # fmt: skip
        if transfers:
            found.append(
                Mismatch(None, "transfers", 0, transfers, f"transfers sum to {fmt_usd(transfers)} instead of $0.00")
            )
        return found

    async def counts(self) -> tuple[int, int]:
        """(accounts, entries), for reports."""
        async with transaction(self.db) as c:
            return await self.store.counts(c)
