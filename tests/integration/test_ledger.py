"""The quota ledger on a real SQLite file: reserve/capture/release, buckets, rollover, append-only, verify."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosqlite
import pytest

from bot.engine.states import JobState
from bot.ledger import (
    AllowancePolicy,
    DuplicateReservation,
    InsufficientQuota,
    Ledger,
    Period,
    UnknownAccount,
    UnknownReservation,
    next_period_start,
    period_start,
)
from bot.money import usd
from bot.request import GenerationRequest
from bot.settings import Settings
from bot.store.db import connect, transaction
from bot.store.jobs import JobRepository
from bot.store.ledger import EntryRow
from bot.store.migrate import migrate


class Clock:
    """An injected clock: tests move time across period boundaries without waiting."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


# A Wednesday, mid-month: the next daily, weekly and monthly boundaries are all different days.
WEDNESDAY = datetime(2025, 1, 15, 18, 30, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(tmp_path / "ledger.db")
    await migrate(conn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(WEDNESDAY)


def make_ledger(db: aiosqlite.Connection, clock: Clock, allowance: str = "0", period: Period = Period.DAILY) -> Ledger:
    return Ledger(db, clock=clock, default_allowance=AllowancePolicy(usd(allowance), period))


async def entries(db: aiosqlite.Connection, account_id: str) -> list[tuple[str, str, int, int]]:
    rows = await Ledger(db).history(account_id, limit=1000)
    return [(e.kind, e.bucket, e.amount_micros, e.held_micros) for e in reversed(rows)]


# --- periods -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "start", "following"),
    [
        (Period.DAILY, datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 1, 16, tzinfo=UTC)),
        (Period.WEEKLY, datetime(2025, 1, 13, tzinfo=UTC), datetime(2025, 1, 20, tzinfo=UTC)),  # Mondays
        (Period.MONTHLY, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)),
    ],
)
def test_periods_start_at_utc_midnight(period: Period, start: datetime, following: datetime) -> None:
    assert period_start(WEDNESDAY, period) == start
    assert next_period_start(start, period) == following
    assert period_start(following - timedelta(microseconds=1), period) == start
    assert period_start(following, period) == following


def test_period_start_converts_other_time_zones_to_utc() -> None:
    tokyo = datetime(2025, 1, 16, 7, 0, tzinfo=UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    assert period_start(tokyo, Period.DAILY) == datetime(2025, 1, 16, tzinfo=UTC)
    assert next_period_start(datetime(2025, 12, 1, tzinfo=UTC), Period.MONTHLY) == datetime(2026, 1, 1, tzinfo=UTC)


# --- reserve, capture, release -------------------------------------------------------------------


async def test_capture_spends_and_release_returns(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("1.00"), actor="test", reason="start")
    await ledger.reserve(account, usd("0.30"), job_id="ok", actor="test")
    await ledger.reserve(account, usd("0.20"), job_id="bad", actor="test")
    held = await ledger.balance(account)
    assert (held.balance, held.reserved, held.available) == (usd("1.00"), usd("0.50"), usd("0.50"))

    assert await ledger.capture("ok", actor="test") is True
    assert await ledger.release("bad", actor="test", reason="provider failed") is True
    after = await ledger.balance(account)
    assert (after.balance, after.reserved, after.available) == (usd("0.70"), 0, usd("0.70"))  # failure cost nothing
    assert await ledger.verify() == []


async def test_resolution_is_idempotent_whoever_comes_second(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("1"), actor="test", reason="start")
    await ledger.reserve(account, usd("0.40"), job_id="j", actor="test")
    assert await ledger.capture("j", actor="engine") is True
    assert await ledger.capture("j", actor="engine") is False
    assert await ledger.release("j", actor="engine", reason="late cancel") is False
    assert (await ledger.balance(account)).balance == usd("0.60")
    with pytest.raises(UnknownReservation):
        await ledger.capture("never-reserved", actor="engine")
    with pytest.raises(DuplicateReservation):
        await ledger.reserve(account, 1, job_id="j", actor="test")


async def test_partial_capture_releases_the_rest(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("1"), actor="test", reason="start")
    await ledger.reserve(account, usd("0.50"), job_id="j", actor="test")
    with pytest.raises(ValueError, match=r"cannot capture \$0.60: job j has \$0.50 reserved"):
        await ledger.capture("j", actor="engine", amount=usd("0.60"))
    assert await ledger.capture("j", actor="engine", amount=usd("0.35")) is True
    balance = await ledger.balance(account)
    assert (balance.balance, balance.reserved) == (usd("0.65"), 0)
    settlement = [("capture", "extra", -350000, -350000), ("release", "extra", 0, -150000)]
    assert (await entries(db, account))[-2:] == settlement


async def test_free_job_still_records_its_settlement(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    account = await ledger.account_for_user("g", "u")
    await ledger.reserve(account, 0, job_id="free", actor="test")
    assert await ledger.capture("free", actor="engine") is True
    assert await ledger.capture("free", actor="engine") is False
    assert await entries(db, account) == [("reserve", "extra", 0, 0), ("capture", "extra", 0, 0)]


async def test_refusal_says_the_numbers_in_plain_words(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("0.40"), actor="test", reason="start")
    await ledger.reserve(account, usd("0.30"), job_id="running", actor="test")
    with pytest.raises(InsufficientQuota) as refused:
        await ledger.reserve(account, usd("0.42"), job_id="big", actor="test")
    assert str(refused.value) == "this costs $0.42 but you have $0.10 available ($0.30 reserved by jobs in progress)"
    assert (refused.value.needed, refused.value.available, refused.value.reserved) == (420000, 100000, 300000)


async def test_refusal_mentions_the_next_refill(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock, allowance="0.25", period=Period.WEEKLY)
    account = await ledger.account_for_user("g", "u")
    with pytest.raises(InsufficientQuota, match=r"^this costs \$1.00 but you have \$0.25 available; your weekly"
                       r" allowance of \$0.25 comes back at 2025-01-20 00:00 UTC$"):  # fmt: skip
        await ledger.reserve(account, usd("1"), job_id="j", actor="test")


async def test_reserve_joins_the_callers_transaction(db: aiosqlite.Connection, clock: Clock) -> None:
    """The job engine reserves in the transaction that inserts the job: both happen, or neither."""
    ledger, jobs = make_ledger(db, clock), JobRepository(db)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("1"), actor="test", reason="start")
    request = GenerationRequest.create(prompt="x")

    with pytest.raises(InsufficientQuota):
        async with transaction(db) as conn:
            job = await jobs.create(request=request, provider="local", user_id="u", cost_micros=usd("5"), conn=conn)
            await ledger.reserve(account, usd("5"), job_id=job.id, actor="engine", conn=conn)
    assert await jobs.list_recent() == []  # the refused reservation took the job with it

    async with transaction(db) as conn:
        job = await jobs.create(request=request, provider="local", user_id="u", cost_micros=usd("0.5"), conn=conn)
        await ledger.reserve(account, usd("0.5"), job_id=job.id, actor="engine", conn=conn)
    async with transaction(db) as conn:
        await jobs.transition(job.id, JobState.FAILED, conn=conn)
        assert await ledger.release(job.id, actor="engine", reason="failed", conn=conn) is True
    assert (await ledger.balance(account)).available == usd("1")
    assert await ledger.verify() == []


async def test_the_schema_refuses_an_overdraw_even_from_buggy_code(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, 100, actor="test", reason="start")
    at = "2025-01-15T18:30:00.000Z"
    overdraw = EntryRow(account, "reserve", "extra", 0, 101, "buggy", "skips the check", at, job_id="j")
    with pytest.raises(aiosqlite.IntegrityError, match="CHECK"):
        async with transaction(db) as conn:
            await ledger.store.append(conn, overdraw)
    assert await ledger.verify() == []


# --- buckets and the allowance -------------------------------------------------------------------


async def test_allowance_is_spent_before_extra(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock, allowance="1.00")
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("2.00"), actor="test", reason="extra")
    reservation = await ledger.reserve(account, usd("1.50"), job_id="j", actor="test")
    assert (reservation.from_allowance, reservation.from_extra) == (usd("1.00"), usd("0.50"))
    await ledger.capture("j", actor="engine", amount=usd("1.20"))  # the allowance part is charged first
    balance = await ledger.balance(account)
    assert (balance.allowance_left, balance.extra) == (0, usd("1.80"))


@pytest.mark.parametrize(
    ("period", "before_rollover", "rollover"),
    [
        (Period.DAILY, datetime(2025, 1, 15, 23, 59, 59, tzinfo=UTC), datetime(2025, 1, 16, tzinfo=UTC)),
        (Period.WEEKLY, datetime(2025, 1, 19, 23, 59, 59, tzinfo=UTC), datetime(2025, 1, 20, tzinfo=UTC)),
        (Period.MONTHLY, datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)),
    ],
)
async def test_rollover_expires_unused_allowance_and_keeps_extras(
    db: aiosqlite.Connection, clock: Clock, period: Period, before_rollover: datetime, rollover: datetime
) -> None:
    ledger = make_ledger(db, clock, allowance="1.00", period=period)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("0.50"), actor="test", reason="extra")
    await ledger.reserve(account, usd("0.30"), job_id="spent", actor="test")
    await ledger.capture("spent", actor="engine")
    clock.now = before_rollover
    assert (await ledger.balance(account)).allowance_left == usd("0.70")  # nothing rolled yet

    clock.now = rollover
    balance = await ledger.balance(account)
    assert (balance.allowance_left, balance.extra, balance.balance) == (usd("1.00"), usd("0.50"), usd("1.50"))
    assert balance.period_start == rollover and balance.next_refill == next_period_start(rollover, period)
    kinds = [(kind, bucket, amount) for kind, bucket, amount, _ in (await entries(db, account))[-2:]]
    assert kinds == [("expire", "allowance", -usd("0.70")), ("grant", "allowance", usd("1.00"))]

    clock.advance(days=400)  # many periods later: one expiry and one refill, allowances do not pile up
    balance = await ledger.balance(account)
    assert (balance.allowance_left, balance.extra) == (usd("1.00"), usd("0.50"))
    assert await ledger.verify() == []


async def test_allowance_held_across_a_rollover_expires_when_released(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock, allowance="1.00")
    account = await ledger.account_for_user("g", "u")
    await ledger.reserve(account, usd("0.80"), job_id="fails", actor="test")
    await ledger.reserve(account, usd("0.20"), job_id="succeeds", actor="test")
    clock.advance(days=1)
    assert (await ledger.balance(account)).available == usd("1.00")  # today's allowance; yesterday's is held
    await ledger.release("fails", actor="engine", reason="failed")
    await ledger.capture("succeeds", actor="engine")
    balance = await ledger.balance(account)
    assert (balance.available, balance.reserved, balance.balance) == (usd("1.00"), 0, usd("1.00"))
    assert await ledger.verify() == []


async def test_a_guild_policy_overrides_the_default_and_applies_at_once(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock, allowance="0.10")
    account = await ledger.account_for_user("g", "u")
    assert (await ledger.balance(account)).allowance_left == usd("0.10")
    await ledger.set_allowance("g", usd("1.00"), Period.WEEKLY, actor="admin")
    balance = await ledger.balance(account)
    # The weekly period began on Monday, before today's daily one: a new period, the full weekly allowance.
    assert (balance.allowance, balance.period, balance.allowance_left) == (usd("1"), Period.WEEKLY, usd("1"))
    await ledger.reserve(account, usd("0.70"), job_id="j", actor="test")
    await ledger.set_allowance("g", usd("0.50"), Period.WEEKLY, actor="admin")  # a cut trims only what is unspent
    assert (await ledger.balance(account)).allowance_left == 0
    await ledger.set_allowance("g", usd("2.00"), Period.WEEKLY, actor="admin")  # a raise tops up, once
    assert (await ledger.balance(account)).allowance_left == usd("1.30")  # $2.00 this week, $0.70 of it held
    assert (await ledger.balance(account)).allowance_left == usd("1.30")
    assert await ledger.verify() == []


async def test_default_allowance_comes_from_settings(db: aiosqlite.Connection, settings: Settings) -> None:
    settings = settings.model_copy(update={"default_allowance_usd": "0.75", "allowance_period": "monthly"})
    ledger = Ledger.from_settings(db, settings, clock=Clock(WEDNESDAY))
    balance = await ledger.balance(await ledger.account_for_user("g", "u"))
    assert (balance.allowance, balance.period, balance.next_refill) == (
        usd("0.75"), Period.MONTHLY, datetime(2025, 2, 1, tzinfo=UTC),
    )  # fmt: skip


# --- other movements -----------------------------------------------------------------------------


async def test_transfer_moves_extras_only(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock, allowance="1.00")
    alice, pool = await ledger.account_for_user("g", "alice"), await ledger.account_for_pool("g")
    await ledger.grant(alice, usd("0.50"), actor="admin", reason="prize")
    with pytest.raises(InsufficientQuota, match="only granted extras can be transferred"):
        await ledger.transfer(alice, pool, usd("0.60"), actor="alice", reason="gift")
    await ledger.transfer(alice, pool, usd("0.50"), actor="alice", reason="gift")
    assert (await ledger.balance(alice)).extra == 0 and (await ledger.balance(pool)).available == usd("0.50")
    assert await ledger.verify() == []


async def test_adjust_and_expire_never_take_available_below_zero(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock, allowance="1.00")
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("0.50"), actor="admin", reason="x")
    await ledger.reserve(account, usd("1.20"), job_id="j", actor="test")  # $1 allowance + $0.20 extra held
    with pytest.raises(InsufficientQuota):
        await ledger.adjust(account, -usd("0.31"), actor="admin", reason="correction")
    await ledger.adjust(account, -usd("0.30"), actor="admin", reason="correction")
    assert await ledger.expire(account, actor="admin", reason="nothing free") == 0
    await ledger.adjust(account, usd("0.05"), actor="admin", reason="goodwill")
    assert (await ledger.balance(account)).available == usd("0.05")
    with pytest.raises(UnknownAccount):
        await ledger.grant("user:nowhere:nobody", 1, actor="admin", reason="x")
    assert await ledger.verify() == []


# --- the CLI's unlimited account -----------------------------------------------------------------


async def test_cli_account_is_unlimited_until_granted(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    local = await ledger.account_for_user("", "local")
    assert (await ledger.balance(local)).unlimited
    await ledger.reserve(local, usd("3"), job_id="a", actor="cli")  # no quota needed, but still recorded
    await ledger.capture("a", actor="cli")
    await ledger.reserve(local, usd("1"), job_id="b", actor="cli")
    spent = await ledger.balance(local)
    assert (spent.balance, spent.reserved) == (-usd("3"), usd("1"))
    with pytest.raises(ValueError, match="unlimited and has nothing to transfer"):
        await ledger.transfer(local, await ledger.account_for_pool(""), 1, actor="cli", reason="mint")

    after = await ledger.grant(local, usd("2"), actor="cli", reason="now counted")
    # The spending while unlimited is written off, job b stays covered, and the grant is what is available.
    assert not after.unlimited and (after.balance, after.reserved, after.available) == (usd("3"), usd("1"), usd("2"))
    with pytest.raises(InsufficientQuota):
        await ledger.reserve(local, usd("2.01"), job_id="c", actor="cli")
    assert ("adjust", "extra", usd("4"), 0) in await entries(db, local)
    assert await ledger.verify() == []


async def test_cli_account_is_limited_by_an_allowance_for_its_guild(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    local = await ledger.account_for_user("", "local")
    member = await ledger.account_for_user("g", "local")  # "local" in a real guild is an ordinary member
    assert not (await ledger.balance(member)).unlimited
    await ledger.set_allowance("", usd("0.50"), Period.DAILY, actor="admin")
    balance = await ledger.balance(local)
    assert not balance.unlimited and balance.available == usd("0.50")


async def test_cli_account_created_after_an_allowance_is_limited(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    await ledger.set_allowance("", usd("0.50"), Period.DAILY, actor="admin")
    assert not (await ledger.balance(await ledger.account_for_user("", "local"))).unlimited


# --- append-only and verify ----------------------------------------------------------------------


async def test_entries_cannot_be_changed_or_deleted(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("1"), actor="test", reason="start")
    for sql in ("UPDATE ledger_entries SET amount_micros = 999999999", "DELETE FROM ledger_entries"):
        with pytest.raises(aiosqlite.IntegrityError, match="append-only"):
            await db.execute(sql)
    assert await entries(db, account) == [("grant", "extra", usd("1"), 0)]


async def test_verify_reports_a_tampered_balance(db: aiosqlite.Connection, clock: Clock) -> None:
    ledger = make_ledger(db, clock)
    account = await ledger.account_for_user("g", "u")
    await ledger.grant(account, usd("1"), actor="test", reason="start")
    await db.execute("UPDATE accounts SET balance_micros = balance_micros + 5000000 WHERE id = ?", (account,))
    [mismatch] = await ledger.verify()
    assert (mismatch.account_id, mismatch.what, mismatch.expected, mismatch.found) == (
        account, "balance_micros", usd("1"), usd("6"),
    )  # fmt: skip
    assert mismatch.message == "user:g:u: recorded balance $6.00 but its entries sum to $1.00"
