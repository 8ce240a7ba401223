"""Server administration: `/reelbot settings`, `/pool`, `/audit` (moderators)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.guilds import FIELDS, summary
from bot.money import fmt_usd, usd
from bot.pool import NotAllowed as PoolNotAllowed
from bot.store.audit import audit_page
from cogs.moderation import is_moderator, refuse_unless_moderator

if TYPE_CHECKING:
    from bot.app import ReelBot


class Admin(commands.Cog):
    reelbot = app_commands.Group(name="reelbot", description="reelbot's settings for this server",
                                 guild_only=True)  # fmt: skip
    settings = app_commands.Group(name="settings", description="Show or change this server's settings", parent=reelbot)
    pool = app_commands.Group(name="pool", description="The server's shared pool", guild_only=True)

    def __init__(self, bot: ReelBot) -> None:
        self.bot = bot

    # --- settings ------------------------------------------------------------------------------------
    @settings.command(name="show", description="This server's reelbot settings")
    async def settings_show(self, interaction: discord.Interaction) -> None:
        if await refuse_unless_moderator(interaction):
            return
        current = await self.bot.app.guild_config.get(str(interaction.guild_id))
        embed = discord.Embed(title="reelbot settings")
        for label, value in summary(current):
            embed.add_field(name=label, value=value[:1024] or "—", inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @settings.command(name="set", description="Change one setting")
    @app_commands.describe(name="Which setting", value="The new value, e.g. $2.50, weekly, pro, 10, on")
    async def settings_set(self, interaction: discord.Interaction, name: str, value: str) -> None:
        if await refuse_unless_moderator(interaction):
            return
        try:
            _, changes = await self.bot.app.guild_config.set(str(interaction.guild_id), name, value,
                                                             actor=str(interaction.user.id))  # fmt: skip
        except (ValueError, KeyError) as exc:
            await interaction.response.send_message(str(exc).strip("'\""), ephemeral=True)
            return
        said = "\n".join(f"{c.label}: {c.old} → {c.new}" for c in changes) or "Nothing changed."
        await interaction.response.send_message(said, ephemeral=True)
        await self._log(interaction, f"{interaction.user.mention} changed settings:\n{said}")

    @settings_set.autocomplete("name")
    async def _setting_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = [n for n in FIELDS if current.lower() in n.lower()][:25]
        return [app_commands.Choice(name=n, value=n) for n in names]

    async def _log(self, interaction: discord.Interaction, text: str) -> None:
        current = await self.bot.app.guild_config.get(str(interaction.guild_id))
        if current.log_channel_id:
            try:
                await self.bot.get_partial_messageable(int(current.log_channel_id)).send(
                    text, allowed_mentions=discord.AllowedMentions.none()
                )
            except discord.HTTPException:
                pass

    # --- pool ----------------------------------------------------------------------------------------
    @pool.command(name="show", description="The pool's balance, what was drawn and by whom")
    async def pool_show(self, interaction: discord.Interaction) -> None:
        since = datetime.now(UTC) - timedelta(days=30)
        report = await self.bot.app.pool.pool_report(str(interaction.guild_id), since)
        embed = discord.Embed(title="Shared pool")
        embed.add_field(name="Available", value=fmt_usd(report.available))
        embed.add_field(name="Held by jobs", value=fmt_usd(report.reserved))
        draws = (
            "\n".join(
                f"<@{d.user_id}>: {fmt_usd(d.spent_micros)} spent, {fmt_usd(d.held_micros)} held ({d.jobs} jobs)"
                for d in report.draws[:15]
            )
            or "nothing drawn in the last 30 days"
        )
        embed.add_field(name="Drawn (30 days)", value=draws[:1024], inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @pool.command(name="fund", description="Add money to the pool (the bot's owner or an administrator)")
    @app_commands.describe(amount="Dollars, e.g. 20", expires_in_days="Unused money expires after this many days")
    async def pool_fund(
        self,
        interaction: discord.Interaction,
        amount: str,
        expires_in_days: app_commands.Range[int, 1, 365] | None = None,
    ) -> None:
        try:
            micros = usd(amount)
        except ValueError as exc:
            await interaction.response.send_message(f"amount: {exc}", ephemeral=True)
            return
        admin = bool(getattr(interaction.user, "guild_permissions", None)
                     and interaction.user.guild_permissions.administrator)  # type: ignore[union-attr]  # fmt: skip
        expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            grant = await self.bot.app.pool.fund_pool(str(interaction.guild_id), micros, actor=str(interaction.user.id),
                                                      reason="funded from Discord", expires_at=expires,
                                                      actor_is_admin=admin)  # fmt: skip
        except (PoolNotAllowed, ValueError) as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        until = f", expiring <t:{int(expires.timestamp())}:R>" if expires else ""
        await interaction.response.send_message(f"Added {fmt_usd(grant.amount)} to the pool{until}.", ephemeral=True)
        await self._log(interaction, f"{interaction.user.mention} funded the pool with {fmt_usd(grant.amount)}{until}.")

    # --- audit ---------------------------------------------------------------------------------------
    @app_commands.command(name="audit", description="The ledger and admin actions (moderators)")
    @app_commands.describe(member="Only entries by or about this member", kind="Only this kind, e.g. gift, grant")
    @app_commands.guild_only()
    async def audit(
        self, interaction: discord.Interaction, member: discord.Member | None = None, kind: str | None = None,
        page: str | None = None,
    ) -> None:  # fmt: skip
        if not await is_moderator(interaction):
            await interaction.response.send_message("Only moderators can read the audit log.", ephemeral=True)
            return
        result = await audit_page(self.bot.app.db, str(interaction.guild_id), member=str(member.id) if member else None,
                                  kind=kind, before_id=page, limit=15)  # fmt: skip
        lines = []
        for row in result.rows:
            amount = f" {fmt_usd(row.amount_micros)}" if row.amount_micros else ""
            who = f"<@{row.actor}>" if row.actor.isdigit() else row.actor
            lines.append(f"`{row.at[:16]}` {row.kind}{amount} by {who}: {row.reason[:80]}")
        text = "\n".join(lines) or "Nothing recorded."
        if result.next_cursor:
            text += f"\nOlder entries: run `/audit` with `page: {result.next_cursor}`."
        await interaction.response.send_message(text[:2000], ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())  # fmt: skip


async def setup(bot: ReelBot) -> None:
    await bot.add_cog(Admin(bot))
