"""What has been delivered for each job: the record that makes delivery idempotent across restarts."""

from __future__ import annotations

import aiosqlite

from bot.store.db import now_iso, transaction


class DeliveryRepository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def get(self, job_id: str, what: str) -> str | None:
        async with self.db.execute("SELECT ref FROM deliveries WHERE job_id = ? AND what = ?", (job_id, what)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def record(self, job_id: str, what: str, ref: str, *, conn: aiosqlite.Connection | None = None) -> bool:
        """Remember a delivery; False when one was already recorded (the first record wins)."""
        sql = "INSERT OR IGNORE INTO deliveries (job_id, what, ref, at) VALUES (?, ?, ?, ?)"
        if conn is not None:
            cursor = await conn.execute(sql, (job_id, what, ref, now_iso()))
            return cursor.rowcount == 1
        async with transaction(self.db):
            cursor = await self.db.execute(sql, (job_id, what, ref, now_iso()))
            return cursor.rowcount == 1

    async def replace(self, job_id: str, what: str, ref: str) -> None:
        """For refs that legitimately change (e.g. a status message re-posted after it was deleted)."""
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO deliveries (job_id, what, ref, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (job_id, what) DO UPDATE SET ref = excluded.ref, at = excluded.at",
                (job_id, what, ref, now_iso()),
            )
