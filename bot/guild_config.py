"""Reading and changing a server's settings, with the allowance kept in one place and every change audited.

The member allowance (amount and period) has one source of truth: the ledger's allowance policy, which is what
the ledger charges against and what `reelbot quota allowance` sets. `get` reads it into the settings, and
`save` writes a changed allowance through `Ledger.set_allowance` in the same transaction as the settings
document, the settings change log and one `settings_change` admin action per changed field.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import aiosqlite

from bot.guilds import FIELDS, GuildSettings, describe, set_field
from bot.ledger import Ledger
from bot.store.audit import ActionKind, record_action
from bot.store.db import transaction
from bot.store.guilds import GuildSettingsRepository

CACHE_S = 5.0  # how stale `cached()` may be: a settings change made by another process shows within this


@dataclass(frozen=True)
class SettingChange:
    field: str
    label: str
    old: str  # in plain words, as the summary shows it
    new: str


class GuildConfig:
    def __init__(self, db: aiosqlite.Connection, ledger: Ledger, repo: GuildSettingsRepository | None = None) -> None:
        self.db = db
        self.ledger = ledger
        self.repo = repo or GuildSettingsRepository(db)
        self._cache: dict[str, tuple[float, GuildSettings]] = {}

    async def get(self, guild_id: str | None, *, conn: aiosqlite.Connection | None = None) -> GuildSettings:
        """The server's settings, its allowance as the ledger has it (its own policy, else the bot's default)."""
        settings = await self.repo.get(guild_id, conn=conn)
        policy = await self.ledger.policy(guild_id or "", conn=conn)
        return settings.changed(member_allowance_micros=policy.amount, allowance_period=policy.period.value)

    async def cached(self, guild_id: str | None, *, max_age_s: float = CACHE_S) -> GuildSettings:
        """The settings as of at most `max_age_s` ago, for checks that must answer Discord at once (no database
        round trip under load). A change made in this process is seen at once; one made by another process
        (e.g. `reelbot quota allowance`) within `max_age_s`. Money is never decided on this copy."""
        key = guild_id or ""
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < max_age_s:
            return hit[1]
        settings = await self.get(guild_id)
        self._cache[key] = (time.monotonic(), settings)
        return settings

    def forget(self, guild_id: str | None) -> None:
        self._cache.pop(guild_id or "", None)

    async def set(
        self, guild_id: str, name: str, text: str, *, actor: str, reason: str | None = None
    ) -> tuple[GuildSettings, list[SettingChange]]:
        """Change one setting from what a moderator typed ("$2.50", "weekly", "#a #b", "off" …). Read, parse and
        save happen in one transaction, so two moderators editing at once never undo each other's change.
        Raises ValueError naming the field and the accepted form (nothing is saved)."""
        async with transaction(self.db) as conn:
            current = await self.get(guild_id, conn=conn)
            updated = set_field(current, name, text)
            changes = await self._save(conn, guild_id, current, updated, actor=actor, reason=reason)
        return updated, changes

    async def save(
        self,
        guild_id: str,
        settings: GuildSettings,
        *,
        actor: str,
        reason: str | None = None,
        conn: aiosqlite.Connection | None = None,
    ) -> list[SettingChange]:
        """Store a whole settings document; returns what changed (nothing is recorded when nothing did)."""
        if conn is not None:
            return await self._save(conn, guild_id, await self.get(guild_id, conn=conn), settings, actor=actor,
                                    reason=reason)  # fmt: skip
        async with transaction(self.db) as own:
            return await self._save(own, guild_id, await self.get(guild_id, conn=own), settings, actor=actor,
                                    reason=reason)  # fmt: skip

    async def _save(
        self,
        conn: aiosqlite.Connection,
        guild_id: str,
        before: GuildSettings,
        after: GuildSettings,
        *,
        actor: str,
        reason: str | None,
    ) -> list[SettingChange]:
        self.forget(guild_id)  # this process sees its own change at once
        changed = [name for name in FIELDS if getattr(before, name) != getattr(after, name)]
        if not changed:
            return []
        if {"member_allowance_micros", "allowance_period"} & set(changed):
            await self.ledger.set_allowance(
                guild_id, after.member_allowance_micros, after.allowance_period, actor=actor, conn=conn
            )
        await self.repo.save(guild_id, after, actor=actor, conn=conn)
        changes = []
        for name in changed:
            old, new = describe(name, getattr(before, name)), describe(name, getattr(after, name))
            label = FIELDS[name].label
            await record_action(
                self.db, guild_id=guild_id, actor=actor, kind=ActionKind.SETTINGS_CHANGE, conn=conn,
                reason=reason or f"{label}: {old} → {new}",
                detail={"field": name, "old": json.dumps(getattr(before, name)),
                        "new": json.dumps(getattr(after, name))},
            )  # fmt: skip
            changes.append(SettingChange(name, label, old, new))
        self.forget(guild_id)  # and again after the writes, so no read in between is kept
        return changes
