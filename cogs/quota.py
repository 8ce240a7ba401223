"""`/quota`: what a member can spend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.money import fmt_usd

if TYPE_CHECKING:
    from bot.app import ReelBot


class Quota(commands.Cog):
    def __init__(self, bot: ReelBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota", description="Your balance, what is reserved, your allowance")
    async def quota(self, interaction: discord.Interaction) -> None:
        ledger = self.bot.app.ledger
        account = await ledger.account_for_user(str(interaction.guild_id or ""), str(interaction.user.id))
        balance = await ledger.balance(account)
        embed = discord.Embed(title="Your quota")
        if balance.unlimited:
            embed.description = "Unlimited."
        embed.add_field(name="Available", value=fmt_usd(max(balance.available, 0)))
        embed.add_field(name="Reserved", value=fmt_usd(balance.reserved))
        embed.add_field(name="Balance", value=fmt_usd(balance.balance))
        if balance.allowance and balance.period:
            embed.add_field(name="Allowance", value=f"{fmt_usd(balance.allowance)} {balance.period}")
            if balance.next_refill:
                embed.add_field(name="Next refill", value=f"<t:{int(balance.next_refill.timestamp())}:R>")
        else:
            embed.add_field(name="Allowance", value="none set on this server")
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: ReelBot) -> None:
    await bot.add_cog(Quota(bot))
