"""The quota-request repository: all SQL about members' requests for more quota.

Writes take the caller's connection inside `transaction()`: deciding a request is a compare-and-set on its
state that must commit together with the ledger grant and the admin action.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import aiosqlite

from bot.store.db import now_iso, transaction


@dataclass(frozen=True)
class QuotaRequest:
    id: int
    guild_id: str
    user_id: str
    amount_micros: int
    reason: str
    state: str  # open, approved, denied, withdrawn
    granted_micros: int | None
    decided_by: str | None
    decision_reason: str | None
    decided_at: str | None
    card_channel_id: str | None
    card_message_id: str | None
    created_at: str
    updated_at: str

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> QuotaRequest:
        return cls(**{name: row[name] for name in row.keys() if name in _FIELDS})


_FIELDS = {f.name for f in fields(QuotaRequest)}


class QuotaRequestRepository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def get(self, request_id: int, *, conn: aiosqlite.Connection | None = None) -> QuotaRequest | None:
        async with (conn or self.db).execute("SELECT * FROM quota_requests WHERE id = ?", (request_id,)) as cursor:
            row = await cursor.fetchone()
        return QuotaRequest.from_row(row) if row else None

    async def open_for(
        self, guild_id: str, user_id: str, *, conn: aiosqlite.Connection | None = None
    ) -> QuotaRequest | None:
        sql = "SELECT * FROM quota_requests WHERE guild_id = ? AND user_id = ? AND state = 'open'"
        async with (conn or self.db).execute(sql, (guild_id, user_id)) as cursor:
            row = await cursor.fetchone()
        return QuotaRequest.from_row(row) if row else None

    async def insert(
        self, conn: aiosqlite.Connection, *, guild_id: str, user_id: str, amount_micros: int, reason: str, at: str
    ) -> QuotaRequest:
        cursor = await conn.execute(
            "INSERT INTO quota_requests (guild_id, user_id, amount_micros, reason, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 'open', ?, ?)",
            (guild_id, user_id, amount_micros, reason, at, at),
        )
        assert cursor.lastrowid is not None
        request = await self.get(cursor.lastrowid, conn=conn)
        assert request is not None
        return request

    async def close(
        self,
        conn: aiosqlite.Connection,
        request_id: int,
        *,
        state: str,
        by: str,
        at: str,
        granted_micros: int | None = None,
        reason: str | None = None,
    ) -> bool:
        """Compare-and-set open -> `state`; False (nothing written) when it was no longer open."""
        cursor = await conn.execute(
            "UPDATE quota_requests SET state = ?, granted_micros = ?, decided_by = ?, decision_reason = ?,"
            " decided_at = ?, updated_at = ? WHERE id = ? AND state = 'open'",
            (state, granted_micros, by, reason, at, at, request_id),
        )
        return cursor.rowcount == 1

    async def attach_card(self, request_id: int, channel_id: str, message_id: str) -> bool:
        """Remember where the approval card was posted; False if there is no such request."""
        async with transaction(self.db) as conn:
            cursor = await conn.execute(
                "UPDATE quota_requests SET card_channel_id = ?, card_message_id = ?, updated_at = ? WHERE id = ?",
                (channel_id, message_id, now_iso(), request_id),
            )
            return cursor.rowcount == 1

    async def list(
        self, *, guild_id: str | None = None, state: str | None = "open", limit: int = 100
    ) -> list[QuotaRequest]:
        """Requests, oldest first; by default the open ones (e.g. to re-attach cards after a restart)."""
        where, args = [], []
        if guild_id is not None:
            where.append("guild_id = ?")
            args.append(guild_id)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT * FROM quota_requests{clause} ORDER BY id LIMIT ?"
        async with self.db.execute(sql, (*args, limit)) as cursor:
            return [QuotaRequest.from_row(row) for row in await cursor.fetchall()]
