"""The shared pool on a real database: members draw on it after their own quota, within their cap per period;
one job holds money in two accounts and is settled in both at once; expiring grants are expired exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.funding import JobFunding, PoolDrawRefused
from bot.ledger import EntryKind, InsufficientQuota, pool_account_id
from bot.money import usd
from bot.pool import NotAllowed
from bot.store.db import connect, transaction
from bot.store.ledger import EntryRow
from bot.store.migrate import migrate
from tests.integration.quota_parts import OWNER, Clock, Parts, build

WEDNESDAY = datetime(2025, 1, 15, 18, 30, tzinfo=UTC)
GUILD = "g"


async def server(
    db: aiosqlite.Connection, *, allowance: str = "$1", cap: str = "$2", clock: Clock | None = None
) -> Parts:
    parts = build(db, clock or Clock(WEDNESDAY))
    await parts.config.set(GUILD, "allowance", allowance, actor="mod")
    await parts.config.set(GUILD, "pool_draws", "on", actor="mod")
    await parts.config.set(GUILD, "pool_cap", cap, actor="mod")
    return parts


async def job(parts: Parts, job_id: str, member: str, price: str) -> JobFunding:
    async with transaction(parts.db) as conn:
        return await parts.funding.reserve_job(conn, job_id=job_id, guild_id=GUILD, user_id=member,
                                               amount=usd(price), actor=member, reason="a test job")  # fmt: skip


async def available(parts: Parts, account: str) -> int:
    return (await parts.ledger.balance(account)).available


async def pool_draw_rows(db: aiosqlite.Connection) -> list[tuple[str, str, int]]:
    async with db.execute("SELECT job_id, user_id, amount_micros FROM pool_draws ORDER BY job_id") as cursor:
        return [tuple(row) for row in await cursor.fetchall()]  # type: ignore[misc]


POOL = pool_account_id(GUILD)


async def test_a_member_draws_on_the_pool_after_their_own_quota(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    await parts.pool.fund_pool(GUILD, usd("10"), actor=OWNER, reason="launch week")
    own = await job(parts, "j1", "m", "0.40")  # covered by the member's own $1
    assert (own.own, own.pool) == (usd("0.40"), 0)
    split = await job(parts, "j2", "m", "1.50")  # $0.60 of their own, $0.90 from the pool
    assert (split.own, split.pool) == (usd("0.60"), usd("0.90"))
    account = split.account_id
    assert await available(parts, account) == 0
    assert await available(parts, POOL) == usd("9.10")
    assert await pool_draw_rows(db) == [("j2", "m", usd("0.90"))]

    assert await parts.ledger.capture("j2", actor="engine")  # one call settles both accounts
    assert not await parts.ledger.capture("j2", actor="engine")
    pool = await parts.ledger.balance(POOL)
    assert (pool.balance, pool.reserved) == (usd("9.10"), 0)
    member = await parts.ledger.balance(account)
    assert (member.balance, member.reserved) == (usd("0.40"), usd("0.40"))
    kinds = sorted((e.account_id, e.kind) for e in await parts.ledger.store.job_entries("j2"))
    assert kinds == [(POOL, "capture"), (POOL, "reserve"), (account, "capture"), (account, "reserve")]
    assert await parts.ledger.verify() == []


async def test_releasing_a_split_job_gives_both_parts_back(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    await parts.pool.fund_pool(GUILD, usd("5"), actor=OWNER, reason="r")
    funding = await job(parts, "j1", "m", "3")
    assert await parts.ledger.release("j1", actor="engine", reason="provider failed")
    assert await available(parts, funding.account_id) == usd("1")
    assert await available(parts, POOL) == usd("5")
    async with transaction(db) as conn:  # a released draw no longer counts against the member's cap
        assert await parts.pool.drawn(conn, GUILD, "m", WEDNESDAY.replace(hour=0, minute=0)) == 0
    assert await parts.ledger.verify() == []


async def test_a_partial_capture_charges_the_member_before_the_pool(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    await parts.pool.fund_pool(GUILD, usd("5"), actor=OWNER, reason="r")
    funding = await job(parts, "j1", "m", "1.80")  # $1 own + $0.80 pool
    assert await parts.ledger.capture("j1", actor="engine", amount=usd("1.20"))
    assert (await parts.ledger.balance(funding.account_id)).balance == 0
    assert (await parts.ledger.balance(POOL)).balance == usd("4.80")
    assert await available(parts, POOL) == usd("4.80")
    assert await parts.ledger.verify() == []


async def test_past_the_cap_the_refusal_gives_the_numbers_and_records_nothing(db: aiosqlite.Connection) -> None:
    parts = await server(db, cap="$2")
    await parts.pool.fund_pool(GUILD, usd("10"), actor=OWNER, reason="r")
    await job(parts, "j1", "m", "1.50")  # draws $0.50
    with pytest.raises(PoolDrawRefused) as refused:
        await job(parts, "j2", "m", "1.60")  # own $0, would draw $1.60: $2.10 > $2
    message = str(refused.value)
    assert message.startswith("this costs $1.60 but you have $0.00 available ($1.00 reserved by jobs in progress)")
    assert (
        "the server pool would have to cover the other $1.60, but you have drawn $0.50 of your $2.00 daily" in message
    )
    assert "(it resets at 2025-01-16 00:00 UTC)" in message
    assert (refused.value.drawn, refused.value.cap, refused.value.pool_available) == (
        usd("0.50"),
        usd("2"),
        usd("9.50"),
    )
    assert await parts.ledger.store.job_entries("j2") == []
    assert [row[0] for row in await pool_draw_rows(db)] == ["j1"]
    await job(parts, "j3", "m", "1.50")  # exactly up to the cap is fine
    with pytest.raises(PoolDrawRefused):
        await job(parts, "j4", "m", "0.01")
    parts.clock.advance(days=1)  # a new period: a new allowance and a fresh cap
    assert (await job(parts, "j5", "m", "3")).pool == usd("2")
    assert await parts.ledger.verify() == []


async def test_an_empty_pool_is_named_in_the_refusal(db: aiosqlite.Connection) -> None:
    parts = await server(db, cap="off")
    await parts.pool.fund_pool(GUILD, usd("0.30"), actor=OWNER, reason="r")
    with pytest.raises(PoolDrawRefused, match=r"^this costs \$2.00 but you have \$1.00 available and the server pool"
                                              r" has \$0.30 available$"):  # fmt: skip
        await job(parts, "j1", "m", "2")


async def test_without_pool_draws_the_usual_refusal(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    await parts.config.set(GUILD, "pool_draws", "off", actor="mod")
    await parts.pool.fund_pool(GUILD, usd("10"), actor=OWNER, reason="r")
    with pytest.raises(InsufficientQuota) as refused:
        await job(parts, "j1", "m", "2")
    assert not isinstance(refused.value, PoolDrawRefused)
    assert str(refused.value).startswith("this costs $2.00 but you have $1.00 available; your daily allowance")
    assert await available(parts, POOL) == usd("10")


async def test_only_owners_and_administrators_fund_the_pool(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    with pytest.raises(NotAllowed, match="only the bot's owners and this server's administrators"):
        await parts.pool.fund_pool(GUILD, usd("1"), actor="member", reason="r")
    with pytest.raises(ValueError, match="more than \\$0"):
        await parts.pool.fund_pool(GUILD, 0, actor=OWNER, reason="r")
    with pytest.raises(ValueError, match="is not in the future"):
        await parts.pool.fund_pool(GUILD, usd("1"), actor=OWNER, reason="r", expires_at=WEDNESDAY)
    await parts.pool.fund_pool(GUILD, usd("1"), actor="admin", reason="event prize", actor_is_admin=True)
    await parts.pool.fund_pool(GUILD, usd("2"), actor=OWNER, reason="r", expires_at=WEDNESDAY + timedelta(days=3))
    async with db.execute("SELECT actor, kind, amount_micros, reason FROM admin_actions WHERE kind = 'pool_fund'"
                          " ORDER BY id") as cursor:  # fmt: skip
        rows = [tuple(row) for row in await cursor.fetchall()]
    assert rows == [("admin", "pool_fund", usd("1"), "event prize"), (OWNER, "pool_fund", usd("2"), "r")]
    report = await parts.pool.pool_report(GUILD)
    assert (report.balance, report.available, len(report.grants)) == (usd("3"), usd("3"), 2)


async def test_expiring_grants_are_drawn_first_and_expired_once(db: aiosqlite.Connection) -> None:
    parts = await server(db, allowance="$0", cap="off")
    soon = await parts.pool.fund_pool(GUILD, usd("5"), actor=OWNER, reason="weekend",
                                      expires_at=WEDNESDAY + timedelta(days=1))  # fmt: skip
    await parts.pool.fund_pool(GUILD, usd("5"), actor=OWNER, reason="standing")
    await job(parts, "j1", "m", "3")
    await parts.ledger.capture("j1", actor="engine")
    assert (await parts.ledger.balance(soon.account_id)).balance == usd("2")  # taken from the expiring money
    assert await parts.pool.expire_pool_grants() == 0  # not yet
    parts.clock.advance(days=1, seconds=1)
    async with transaction(db) as conn:  # past its expiry, before the sweep: no longer drawn on
        assert [s.account_id for s in await parts.pool.sources(conn, GUILD)] == [POOL]
    assert await parts.pool.expire_pool_grants() == usd("2")
    assert await parts.pool.expire_pool_grants() == 0  # idempotent
    report = await parts.pool.pool_report(GUILD)
    assert (report.balance, report.available) == (usd("5"), usd("5"))
    grant = next(g for g in report.grants if g.id == soon.grant_id)
    assert (grant.expired_micros, grant.closed_at is not None) == (usd("2"), True)
    assert await parts.ledger.verify() == []


async def test_money_held_at_expiry_expires_when_the_job_gives_it_back(db: aiosqlite.Connection) -> None:
    parts = await server(db, allowance="$0", cap="off")
    soon = await parts.pool.fund_pool(GUILD, usd("5"), actor=OWNER, reason="r",
                                      expires_at=WEDNESDAY + timedelta(hours=1))  # fmt: skip
    await job(parts, "j1", "m", "4")
    parts.clock.advance(hours=2)
    assert await parts.pool.expire_pool_grants() == usd("1")  # $4 is held by the job
    await parts.ledger.release("j1", actor="engine", reason="failed")
    assert await parts.pool.expire_pool_grants() == usd("4")
    assert await parts.pool.expire_pool_grants() == 0
    assert (await parts.ledger.balance(soon.account_id)).balance == 0
    assert await parts.ledger.verify() == []


async def test_concurrent_sweeps_expire_once(tmp_path: Path) -> None:
    path = tmp_path / "sweep.db"
    conns = [await connect(path) for _ in range(4)]
    try:
        await migrate(conns[0])
        clock = Clock(WEDNESDAY)
        parts = [build(c, clock) for c in conns]
        for i in range(5):
            await parts[0].pool.fund_pool(GUILD, usd("1"), actor=OWNER, reason=f"r{i}",
                                          expires_at=WEDNESDAY + timedelta(minutes=i + 1))  # fmt: skip
        clock.advance(hours=1)
        results = await asyncio.gather(*(p.pool.expire_pool_grants() for p in parts for _ in range(3)))
        assert sum(results) == usd("5")
        assert await parts[0].ledger.verify() == []
    finally:
        for c in conns:
            await c.close()


async def test_many_members_at_once_never_overdraw_the_pool_or_a_cap(db: aiosqlite.Connection) -> None:
    parts = await server(db, allowance="$0", cap="$0.50")
    await parts.pool.fund_pool(GUILD, usd("1"), actor=OWNER, reason="r")

    async def attempt(job_id: str, member: str) -> bool:
        try:
            await job(parts, job_id, member, "0.10")
        except PoolDrawRefused:
            return False
        return True

    # one member: 20 at once against a $0.50 cap; then 20 members against the $0.50 left in the pool
    greedy = await asyncio.gather(*(attempt(f"g{i}", "greedy") for i in range(20)))
    assert sum(greedy) == 5
    crowd = await asyncio.gather(*(attempt(f"c{i}", f"m{i}") for i in range(20)))
    assert sum(crowd) == 5
    assert await available(parts, POOL) == 0
    report = await parts.pool.pool_report(GUILD)
    assert report.draws[0].user_id == "greedy" and report.draws[0].held_micros == usd("0.50")
    assert sum(d.committed_micros for d in report.draws) == usd("1")
    assert await parts.ledger.verify() == []


async def test_verify_reports_a_job_settled_in_only_one_of_its_accounts(db: aiosqlite.Connection) -> None:
    parts = await server(db)
    await parts.pool.fund_pool(GUILD, usd("5"), actor=OWNER, reason="r")
    funding = await job(parts, "j1", "m", "1.50")
    assert await parts.ledger.verify() == []
    async with transaction(db) as conn:  # a buggy caller releases the member's part only
        for hold in await parts.ledger.store.job_entries("j1", conn=conn):
            if hold.account_id == funding.account_id:
                await parts.ledger.store.append(conn, EntryRow(
                    account_id=hold.account_id, kind=EntryKind.RELEASE.value, bucket=hold.bucket, amount_micros=0,
                    held_micros=-hold.held_micros, actor="bug", reason="half a release", created_at=hold.created_at,
                    period_start=hold.period_start, job_id="j1"))  # fmt: skip
    problems = await parts.ledger.verify()
    assert [(p.what, p.job_id, p.found) for p in problems] == [("job_split", "j1", usd("0.50"))]
    assert "still holds $0.50 in pool:g" in problems[0].message


async def test_the_report_shows_grants_and_draws_by_member(db: aiosqlite.Connection) -> None:
    parts = await server(db, allowance="$0", cap="off")
    await parts.pool.fund_pool(GUILD, usd("10"), actor=OWNER, reason="r")
    await job(parts, "a1", "alice", "2")
    await job(parts, "a2", "alice", "1")
    await job(parts, "b1", "bob", "0.50")
    await parts.ledger.capture("a1", actor="engine")
    await parts.ledger.release("b1", actor="engine", reason="failed")
    report = await parts.pool.pool_report(GUILD, since=WEDNESDAY - timedelta(days=1))
    assert (report.balance, report.reserved, report.available) == (usd("8"), usd("1"), usd("7"))
    assert [(d.user_id, d.jobs, d.spent_micros, d.held_micros) for d in report.draws] == [
        ("alice", 2, usd("2"), usd("1")), ("bob", 1, 0, 0)]  # fmt: skip
    later = await parts.pool.pool_report(GUILD, since=WEDNESDAY + timedelta(days=1))
    assert (later.grants, later.draws) == ([], [])


# --- a property: whatever happens, the books balance and the pool and the caps hold ----------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("fund"), st.integers(1, 300), st.sampled_from([None, 1, 3, 30])),
        st.tuples(st.just("job"), st.integers(0, 250), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("settle"), st.sampled_from(["capture", "release", "part"]), st.integers(0, 30)),
        st.tuples(st.just("time"), st.integers(1, 40), st.none()),
        st.tuples(st.just("sweep"), st.none(), st.none()),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_any_sequence_keeps_the_books_balanced(tmp_path: Path, ops: list[tuple]) -> None:
    asyncio.run(_run_sequence(tmp_path / f"p{abs(hash(str(ops)))}.db", ops))


async def _run_sequence(path: Path, ops: list[tuple]) -> None:
    db = await connect(path)
    try:
        await migrate(db)
        cap = usd("1")
        parts = await server(db, allowance="$0.50", cap="$1")
        open_jobs: list[str] = []
        for n, (op, a, b) in enumerate(ops):
            if op == "fund":
                expires = parts.clock.now + timedelta(minutes=b) if b is not None else None
                await parts.pool.fund_pool(GUILD, a * 10_000, actor=OWNER, reason="r", expires_at=expires)
            elif op == "job":
                try:
                    await job(parts, f"j{n}", b, str(a / 100))
                    open_jobs.append(f"j{n}")
                except InsufficientQuota:
                    pass
            elif op == "settle" and open_jobs:
                job_id = open_jobs.pop(b % len(open_jobs))
                if a == "release":
                    await parts.ledger.release(job_id, actor="e", reason="failed")
                else:
                    total = sum(e.held_micros for e in await parts.ledger.store.job_entries(job_id))
                    await parts.ledger.capture(job_id, actor="e", amount=None if a == "capture" else total // 2)
            elif op == "time":
                parts.clock.advance(minutes=a * 30)
            elif op == "sweep":
                await parts.pool.expire_pool_grants()
            assert await parts.ledger.verify() == []
            async with transaction(db) as conn:
                for member in "abc":
                    period = parts.clock.now.replace(hour=0, minute=0, second=0, microsecond=0)
                    assert await parts.pool.drawn(conn, GUILD, member, period) <= cap
            report = await parts.pool.pool_report(GUILD)
            assert 0 <= report.available <= report.balance - report.reserved
    finally:
        await db.close()
