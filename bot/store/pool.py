"""The pool repository: all SQL about a server's pool grants (with their expiry) and members' draws.

The money itself is in the ledger (grant and reserve/capture/release entries on `pool:` accounts); these
tables say which grant expires when and whose job drew how much. Writes take the caller's connection, inside
`transaction()`, because each belongs with a ledger entry written in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite


@dataclass(frozen=True)
class PoolGrantRow:
    id: int
    guild_id: str
    account_id: str
    amount_micros: int
    actor: str
    reason: str
    created_at: str
    expires_at: str | None
    expired_micros: int
    closed_at: str | None

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> PoolGrantRow:
        return cls(*(row[name] for name in cls.__dataclass_fields__))


@dataclass(frozen=True)
class MemberDraws:
    """What one member's jobs took from the pool: spent (captured) and still held by jobs in progress."""

    user_id: str
    jobs: int
    spent_micros: int
    held_micros: int

    @property
    def committed_micros(self) -> int:
        return self.spent_micros + self.held_micros


@dataclass(frozen=True)
class PoolAccountRow:
    account_id: str
    balance_micros: int
    reserved_micros: int
    expires_at: str | None  # None: the main pool account, which never expires


# A pool-side entry of a job: held_micros - amount_micros is what it commits (reserve +x, capture 0, release -x).
_COMMITTED = "COALESCE(SUM(e.held_micros - e.amount_micros), 0)"


class PoolRepository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    # --- grants ---------------------------------------------------------------------------------------

    async def next_grant_id(self, conn: aiosqlite.Connection) -> int:
        """The id the next grant will get (safe under the write lock of the caller's transaction)."""
        async with conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM pool_grants") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def add_grant(
        self,
        conn: aiosqlite.Connection,
        *,
        grant_id: int,
        guild_id: str,
        account_id: str,
        amount_micros: int,
        actor: str,
        reason: str,
        at: str,
        expires_at: str | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO pool_grants (id, guild_id, account_id, amount_micros, actor, reason, created_at, expires_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (grant_id, guild_id, account_id, amount_micros, actor, reason, at, expires_at),
        )

    async def due_grants(self, conn: aiosqlite.Connection, now: str) -> list[PoolGrantRow]:
        """Expiring grants whose time has come and that still hold (or may get back) money."""
        sql = (
            "SELECT * FROM pool_grants WHERE expires_at IS NOT NULL AND expires_at <= ? AND closed_at IS NULL"
            " ORDER BY expires_at, id"
        )
        async with conn.execute(sql, (now,)) as cursor:
            return [PoolGrantRow.from_row(row) for row in await cursor.fetchall()]

    async def note_expired(self, conn: aiosqlite.Connection, grant_id: int, amount: int, closed_at: str | None) -> None:
        await conn.execute(
            "UPDATE pool_grants SET expired_micros = expired_micros + ?, closed_at = ? WHERE id = ?",
            (amount, closed_at, grant_id),
        )

    async def grants(
        self, guild_id: str, *, since: str = "", conn: aiosqlite.Connection | None = None
    ) -> list[PoolGrantRow]:
        sql = "SELECT * FROM pool_grants WHERE guild_id = ? AND created_at >= ? ORDER BY id"
        async with (conn or self.db).execute(sql, (guild_id, since)) as cursor:
            return [PoolGrantRow.from_row(row) for row in await cursor.fetchall()]

    async def pool_accounts(self, guild_id: str, *, conn: aiosqlite.Connection | None = None) -> list[PoolAccountRow]:
        """The server's pool accounts (the main one and one per expiring grant), soonest expiry first and the
        main account (which never expires) last: the order members draw in."""
        sql = (
            "SELECT a.id, a.balance_micros, a.reserved_micros, g.expires_at FROM accounts a"
            " LEFT JOIN pool_grants g ON g.account_id = a.id AND g.expires_at IS NOT NULL"
            " WHERE a.kind = 'pool' AND a.guild_id = ?"
            " ORDER BY g.expires_at IS NULL, g.expires_at, g.id, a.id"
        )
        async with (conn or self.db).execute(sql, (guild_id,)) as cursor:
            return [PoolAccountRow(*row) for row in await cursor.fetchall()]

    # --- draws ----------------------------------------------------------------------------------------

    async def add_draw(
        self, conn: aiosqlite.Connection, *, job_id: str, guild_id: str, user_id: str, amount_micros: int, at: str
    ) -> None:
        await conn.execute(
            "INSERT INTO pool_draws (job_id, guild_id, user_id, amount_micros, created_at) VALUES (?,?,?,?,?)",
            (job_id, guild_id, user_id, amount_micros, at),
        )

    async def committed_by(self, conn: aiosqlite.Connection, guild_id: str, user_id: str, since: str) -> int:
        """What the member's jobs since `since` took from the pool and did not give back: captured plus still
        held (a released job gave its draw back, so it does not count against the member's cap)."""
        sql = (
            f"SELECT {_COMMITTED} FROM pool_draws d JOIN ledger_entries e ON e.job_id = d.job_id"
            " JOIN accounts a ON a.id = e.account_id"
            " WHERE d.guild_id = ? AND d.user_id = ? AND d.created_at >= ? AND a.kind = 'pool'"
            " AND e.kind IN ('reserve', 'capture', 'release')"
        )
        async with conn.execute(sql, (guild_id, user_id, since)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def draws_by_member(
        self, guild_id: str, *, since: str = "", conn: aiosqlite.Connection | None = None
    ) -> list[MemberDraws]:
        """Per member, jobs since `since` that drew on the pool, biggest spender first."""
        sql = (
            "SELECT d.user_id, COUNT(DISTINCT d.job_id) AS jobs,"
            " COALESCE(SUM(CASE WHEN e.kind = 'capture' THEN -e.amount_micros ELSE 0 END), 0) AS spent,"
            " COALESCE(SUM(e.held_micros), 0) AS held"
            " FROM pool_draws d JOIN ledger_entries e ON e.job_id = d.job_id JOIN accounts a ON a.id = e.account_id"
            " WHERE d.guild_id = ? AND d.created_at >= ? AND a.kind = 'pool'"
            " AND e.kind IN ('reserve', 'capture', 'release')"
            " GROUP BY d.user_id ORDER BY spent + held DESC, d.user_id"
        )
        async with (conn or self.db).execute(sql, (guild_id, since)) as cursor:
            return [MemberDraws(*row) for row in await cursor.fetchall()]
