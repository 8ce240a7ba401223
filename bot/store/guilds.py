"""Guild settings repository: all SQL about a server's settings."""

from __future__ import annotations

import contextlib
import json

import aiosqlite

from bot.guilds import GuildSettings
from bot.store.db import now_iso, transaction


class GuildSettingsRepository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def get(self, guild_id: str | None, *, conn: aiosqlite.Connection | None = None) -> GuildSettings:
        """The server's settings, or the defaults when it has set none (and in DMs)."""
        if not guild_id:
            return GuildSettings()
        sql = "SELECT settings FROM guild_settings WHERE guild_id = ?"
        async with (conn or self.db).execute(sql, (guild_id,)) as cur:
            row = await cur.fetchone()
        return GuildSettings.model_validate_json(row[0]) if row else GuildSettings()

    async def save(
        self, guild_id: str, settings: GuildSettings, *, actor: str, conn: aiosqlite.Connection | None = None
    ) -> list[tuple[str, str, str]]:
        """Store new settings; returns and records each (field, old, new) that changed. With `conn`, in the
        caller's transaction (bot.guild_config also writes the ledger's policy and the audit there)."""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(transaction(self.db))
            return await self._save(conn, guild_id, settings, actor=actor)

    async def _save(
        self, conn: aiosqlite.Connection, guild_id: str, settings: GuildSettings, *, actor: str
    ) -> list[tuple[str, str, str]]:
        async with conn.execute("SELECT settings FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cur:
            row = await cur.fetchone()
        old = GuildSettings.model_validate_json(row[0]) if row else GuildSettings()
        changes = [
            (name, json.dumps(value), json.dumps(getattr(settings, name)))
            for name, value in old.model_dump().items()
            if value != getattr(settings, name)
        ]
        at = now_iso()
        await conn.execute(
            "INSERT INTO guild_settings (guild_id, settings, updated_by, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings,"
            " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (guild_id, settings.model_dump_json(), actor, at),
        )
        for name, before, after in changes:
            await conn.execute(
                "INSERT INTO guild_settings_changes (guild_id, field, old_value, new_value, actor, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (guild_id, name, before, after, actor, at),
            )
        return changes
