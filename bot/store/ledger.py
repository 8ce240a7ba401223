"""The ledger repository: all SQL about accounts, ledger entries and allowance policies lives here.

Writes take the caller's connection, which must be inside `transaction()`: every ledger decision is a
read-then-write that is only safe under the write lock, so this layer never opens a transaction itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import aiosqlite


@dataclass(frozen=True)
class AccountRow:
    id: str
    kind: str
    guild_id: str | None
    user_id: str | None
    unlimited: bool
    balance_micros: int
    reserved_micros: int
    allowance_micros: int
    allowance_reserved_micros: int
    period_start: str | None
    period_granted_micros: int
    created_at: str
    updated_at: str
    # The member's allowance from their roles (migration 0005); None: the guild's policy applies.
    allowance_override_micros: int | None = None

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> AccountRow:
        values = {name: row[name] for name in row.keys() if name in _ACCOUNT_FIELDS}
        values["unlimited"] = bool(values["unlimited"])
        return cls(**values)


_ACCOUNT_FIELDS = {f.name for f in fields(AccountRow)}


@dataclass(frozen=True)
class EntryRow:
    account_id: str
    kind: str
    bucket: str
    amount_micros: int
    held_micros: int
    actor: str
    reason: str
    created_at: str
    period_start: str | None = None
    job_id: str | None = None
    counterparty: str | None = None
    id: int | None = None  # set once stored

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> EntryRow:
        return cls(**{name: row[name] for name in row.keys() if name in _ENTRY_FIELDS})


_ENTRY_FIELDS = {f.name for f in fields(EntryRow)}
_ENTRY_COLUMNS = [name for name in (f.name for f in fields(EntryRow)) if name != "id"]


@dataclass(frozen=True)
class PolicyRow:
    guild_id: str
    amount_micros: int
    period: str
    updated_by: str
    updated_at: str


@dataclass(frozen=True)
class AccountSums:
    """An account's cached numbers next to the same numbers recomputed from its entries."""

    account_id: str
    unlimited: bool
    cached: dict[str, int]
    computed: dict[str, int]


@dataclass(frozen=True)
class JobHold:
    """One job's reservation in one bucket of one account, summed over its entries."""

    account_id: str
    job_id: str
    bucket: str
    reserved_micros: int  # what the reserve entry held
    held_micros: int  # what is still held now
    resolutions: int  # capture and release entries


# Cached column -> the entry sum it must equal.
_SUMS = {
    "balance_micros": "SUM(e.amount_micros)",
    "reserved_micros": "SUM(e.held_micros)",
    "allowance_micros": "SUM(CASE WHEN e.bucket = 'allowance' THEN e.amount_micros ELSE 0 END)",
    "allowance_reserved_micros": "SUM(CASE WHEN e.bucket = 'allowance' THEN e.held_micros ELSE 0 END)",
}


class LedgerRepository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    # --- accounts ---------------------------------------------------------------------------------

    async def get_account(self, account_id: str, *, conn: aiosqlite.Connection | None = None) -> AccountRow | None:
        async with (conn or self.db).execute("SELECT * FROM accounts WHERE id = ?", (account_id,)) as cursor:
            row = await cursor.fetchone()
        return AccountRow.from_row(row) if row else None

    async def create_account(
        self,
        conn: aiosqlite.Connection,
        *,
        account_id: str,
        kind: str,
        guild_id: str | None,
        user_id: str | None,
        unlimited: bool,
        at: str,
    ) -> bool:
        """Insert the account unless it exists; True when this call created it."""
        cursor = await conn.execute(
            "INSERT INTO accounts (id, kind, guild_id, user_id, unlimited, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
            (account_id, kind, guild_id, user_id, int(unlimited), at, at),
        )
        return cursor.rowcount == 1

    async def set_unlimited(self, conn: aiosqlite.Connection, account_id: str, unlimited: bool, at: str) -> None:
        await conn.execute(
            "UPDATE accounts SET unlimited = ?, updated_at = ? WHERE id = ?", (int(unlimited), at, account_id)
        )

    async def set_period(
        self, conn: aiosqlite.Connection, account_id: str, period_start: str | None, granted_micros: int, at: str
    ) -> None:
        await conn.execute(
            "UPDATE accounts SET period_start = ?, period_granted_micros = ?, updated_at = ? WHERE id = ?",
            (period_start, granted_micros, at, account_id),
        )

    async def set_allowance_override(
        self, conn: aiosqlite.Connection, account_id: str, amount_micros: int | None, at: str
    ) -> None:
        await conn.execute(
            "UPDATE accounts SET allowance_override_micros = ?, updated_at = ? WHERE id = ?",
            (amount_micros, at, account_id),
        )

    async def unlimited_users(self, conn: aiosqlite.Connection, guild_id: str) -> list[str]:
        sql = "SELECT id FROM accounts WHERE kind = 'user' AND guild_id = ? AND unlimited = 1 ORDER BY id"
        async with conn.execute(sql, (guild_id,)) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    # --- entries ----------------------------------------------------------------------------------

    async def append(self, conn: aiosqlite.Connection, entry: EntryRow) -> int:
        """Write one entry and fold it into its account's cached sums, in the caller's transaction.

        The accounts CHECK constraints run on that UPDATE, so an entry that would overdraw a bucket fails here
        (sqlite3.IntegrityError) and the caller's transaction rolls back.
        """
        values = [getattr(entry, name) for name in _ENTRY_COLUMNS]
        marks = ",".join("?" for _ in _ENTRY_COLUMNS)
        cursor = await conn.execute(
            f"INSERT INTO ledger_entries ({', '.join(_ENTRY_COLUMNS)}) VALUES ({marks})", values
        )
        in_allowance = entry.bucket == "allowance"
        await conn.execute(
            "UPDATE accounts SET balance_micros = balance_micros + ?, reserved_micros = reserved_micros + ?,"
            " allowance_micros = allowance_micros + ?, allowance_reserved_micros = allowance_reserved_micros + ?,"
            " updated_at = ? WHERE id = ?",
            (
                entry.amount_micros,
                entry.held_micros,
                entry.amount_micros if in_allowance else 0,
                entry.held_micros if in_allowance else 0,
                entry.created_at,
                entry.account_id,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def job_entries(self, job_id: str, *, conn: aiosqlite.Connection | None = None) -> list[EntryRow]:
        """Every reserve, capture and release entry of a job, oldest first."""
        sql = "SELECT * FROM ledger_entries WHERE job_id = ? AND kind IN ('reserve', 'capture', 'release') ORDER BY id"
        async with (conn or self.db).execute(sql, (job_id,)) as cursor:
            return [EntryRow.from_row(row) for row in await cursor.fetchall()]

    async def entries(
        self, account_id: str, *, limit: int = 50, conn: aiosqlite.Connection | None = None
    ) -> list[EntryRow]:
        """An account's most recent entries, newest first."""
        sql = "SELECT * FROM ledger_entries WHERE account_id = ? ORDER BY id DESC LIMIT ?"
        async with (conn or self.db).execute(sql, (account_id, limit)) as cursor:
            return [EntryRow.from_row(row) for row in await cursor.fetchall()]

    # --- allowance policies -----------------------------------------------------------------------

    async def policy(self, guild_id: str, *, conn: aiosqlite.Connection | None = None) -> PolicyRow | None:
        sql = "SELECT guild_id, amount_micros, period, updated_by, updated_at FROM allowance_policies WHERE guild_id=?"
        async with (conn or self.db).execute(sql, (guild_id,)) as cursor:
            row = await cursor.fetchone()
        return PolicyRow(*row) if row else None

    async def put_policy(
        self, conn: aiosqlite.Connection, guild_id: str, amount_micros: int, period: str, by: str, at: str
    ) -> None:
        await conn.execute(
            "INSERT INTO allowance_policies (guild_id, amount_micros, period, updated_by, updated_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT (guild_id) DO UPDATE SET amount_micros = excluded.amount_micros,"
            " period = excluded.period, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (guild_id, amount_micros, period, by, at),
        )

    # --- verification -----------------------------------------------------------------------------

    async def account_sums(self, conn: aiosqlite.Connection) -> list[AccountSums]:
        computed = ", ".join(f"COALESCE({expr}, 0) AS computed_{name}" for name, expr in _SUMS.items())
        cached = ", ".join(f"a.{name} AS cached_{name}" for name in _SUMS)
        sql = (
            f"SELECT a.id, a.unlimited, {cached}, {computed} FROM accounts a"
            " LEFT JOIN ledger_entries e ON e.account_id = a.id GROUP BY a.id ORDER BY a.id"
        )
        async with conn.execute(sql) as cursor:
            rows = await cursor.fetchall()
        return [
            AccountSums(
                account_id=row["id"],
                unlimited=bool(row["unlimited"]),
                cached={name: row[f"cached_{name}"] for name in _SUMS},
                computed={name: row[f"computed_{name}"] for name in _SUMS},
            )
            for row in rows
        ]

    async def job_holds(self, conn: aiosqlite.Connection) -> list[JobHold]:
        sql = (
            "SELECT account_id, job_id, bucket,"
            " SUM(CASE WHEN kind = 'reserve' THEN held_micros ELSE 0 END) AS reserved,"
            " SUM(held_micros) AS held,"
            " SUM(kind IN ('capture', 'release')) AS resolutions"
            " FROM ledger_entries WHERE kind IN ('reserve', 'capture', 'release')"
            " GROUP BY account_id, job_id, bucket ORDER BY account_id, job_id, bucket"
        )
        async with conn.execute(sql) as cursor:
            return [JobHold(*row) for row in await cursor.fetchall()]

    async def transfer_sum(self, conn: aiosqlite.Connection) -> int:
        """Transfers move money between accounts, so all transfer entries together sum to zero."""
        sql = "SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries WHERE kind = 'transfer'"
        async with conn.execute(sql) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def counts(self, conn: aiosqlite.Connection) -> tuple[int, int]:
        """(accounts, entries)."""
        sql = "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM ledger_entries)"
        async with conn.execute(sql) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])
