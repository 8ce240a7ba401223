"""The spend-cap repository: all SQL about what the operator's provider account has committed per UTC day,
and the one-row-per-day record that the owners were told the cap was reached."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from bot.store.db import transaction


@dataclass(frozen=True)
class CapDayRow:
    day: str
    cap_micros: int
    committed_micros: int
    first_refused_at: str
    told_at: str | None


class SpendRepository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def committed(self, conn: aiosqlite.Connection, start: str, end: str) -> int:
        """Reserved plus captured, across every account, for the jobs whose money was reserved in [start, end).

        Per entry held - amount is what it commits: a reserve +x, a capture 0 (held money becomes spent), a
        release -x; so a released job counts nothing and a partly captured one what it was charged."""
        sql = (
            "SELECT COALESCE(SUM(held_micros - amount_micros), 0) FROM ledger_entries"
            " WHERE kind IN ('reserve', 'capture', 'release') AND job_id IN ("
            "   SELECT job_id FROM ledger_entries WHERE kind = 'reserve' AND created_at >= ? AND created_at < ?)"
        )
        async with conn.execute(sql, (start, end)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def note_refusal(self, day: str, *, cap_micros: int, committed_micros: int, at: str) -> bool:
        """Record the day's first refusal; True if this call recorded it (later refusals change nothing)."""
        async with transaction(self.db) as conn:
            cursor = await conn.execute(
                "INSERT INTO spend_cap_days (day, cap_micros, committed_micros, first_refused_at) VALUES (?,?,?,?)"
                " ON CONFLICT (day) DO NOTHING",
                (day, cap_micros, committed_micros, at),
            )
            return cursor.rowcount == 1

    async def day(self, day: str) -> CapDayRow | None:
        async with self.db.execute("SELECT * FROM spend_cap_days WHERE day = ?", (day,)) as cursor:
            row = await cursor.fetchone()
        return CapDayRow(*row) if row else None

    async def mark_told(self, day: str, at: str) -> bool:
        """Claim the day's notice: True for exactly one caller, in any process, and only after a refusal."""
        async with transaction(self.db) as conn:
            cursor = await conn.execute(
                "UPDATE spend_cap_days SET told_at = ? WHERE day = ? AND told_at IS NULL", (at, day)
            )
            return cursor.rowcount == 1
