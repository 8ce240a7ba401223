"""The gifts repository: all SQL about member-to-member gifts (the money moves as a ledger transfer; a row
here makes the giver's daily cap a cheap, indexed sum)."""

from __future__ import annotations

import aiosqlite


class GiftRepository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def add(
        self, conn: aiosqlite.Connection, *, guild_id: str, giver_id: str, receiver_id: str, amount_micros: int, at: str
    ) -> int:
        cursor = await conn.execute(
            "INSERT INTO gifts (guild_id, giver_id, receiver_id, amount_micros, created_at) VALUES (?,?,?,?,?)",
            (guild_id, giver_id, receiver_id, amount_micros, at),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def given(self, conn: aiosqlite.Connection, guild_id: str, giver_id: str, start: str, end: str) -> int:
        """What the member gave in this server in [start, end)."""
        sql = (
            "SELECT COALESCE(SUM(amount_micros), 0) FROM gifts"
            " WHERE guild_id = ? AND giver_id = ? AND created_at >= ? AND created_at < ?"
        )
        async with conn.execute(sql, (guild_id, giver_id, start, end)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
