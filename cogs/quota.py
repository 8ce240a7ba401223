"""`/quota show`, `/quota request`, `/quota give`: what a member can spend, asking for more, giving some."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.gifts import GiftRefused
from bot.money import fmt_usd, usd
from bot.requests import RequestError
from cogs.moderation import request_card

if TYPE_CHECKING:
    from bot.app import ReelBot


def role_ids(member: discord.abc.User) -> list[str]:
    return [str(role.id) for role in getattr(member, "roles", []) if not role.is_default()]


class Quota(commands.Cog):
    quota = app_commands.Group(name="quota", description="Your quota: see it, ask for more, give some")

    def __init__(self, bot: ReelBot) -> None:
        self.bot = bot

    @quota.command(name="show", description="Your balance, what is reserved, your allowance")
    async def show(self, interaction: discord.Interaction) -> None:
        balance = await self.bot.app.funding.member_balance(str(interaction.guild_id or ""), str(interaction.user.id),
                                                            role_ids(interaction.user))  # fmt: skip
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

    @quota.command(name="request", description="Ask the moderators for more quota")
    @app_commands.describe(amount="Dollars, e.g. 5", reason="What it is for")
    @app_commands.guild_only()
    async def request(
        self, interaction: discord.Interaction, amount: str, reason: app_commands.Range[str, 1, 500]
    ) -> None:
        settings = await self.bot.app.guild_config.get(str(interaction.guild_id))
        if not settings.log_channel_id:
            await interaction.response.send_message("This server has no moderators' channel for requests yet; ask a "
                                                    "moderator to set `log_channel`.", ephemeral=True)  # fmt: skip
            return
        try:
            opened = await self.bot.app.requests.open_request(str(interaction.guild_id), str(interaction.user.id),
                                                              usd(amount), reason)  # fmt: skip
        except (RequestError, ValueError) as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        embed, view = request_card(opened)
        card = await self.bot.get_partial_messageable(int(settings.log_channel_id)).send(embed=embed, view=view)
        await self.bot.app.requests.attach_card(opened.id, str(card.channel.id), str(card.id))
        await interaction.followup.send(f"Request #{opened.id} for {fmt_usd(opened.amount_micros)} sent to the "
                                        "moderators; you'll hear back here or by DM.", ephemeral=True)  # fmt: skip

    @quota.command(name="give", description="Give some of your extra quota to another member")
    @app_commands.describe(member="Who receives it", amount="Dollars, e.g. 1.50")
    @app_commands.guild_only()
    async def give(self, interaction: discord.Interaction, member: discord.Member, amount: str) -> None:
        giver = interaction.user
        joined = getattr(giver, "joined_at", None)
        try:
            gift = await self.bot.app.gifts.give(
                str(interaction.guild_id), str(giver.id), str(member.id), usd(amount),
                giver_account_created_at=giver.created_at, giver_joined_at=joined or discord.utils.utcnow(),
                now=discord.utils.utcnow(), receiver_is_bot=member.bot,
            )  # fmt: skip
        except (GiftRefused, ValueError) as exc:
            await interaction.response.send_message(f"That gift can't be made: {exc}", ephemeral=True)
            return
        await interaction.response.send_message(f"You gave {member.mention} {fmt_usd(gift.amount)}.",
                                                allowed_mentions=discord.AllowedMentions(users=[member]))  # fmt: skip


async def setup(bot: ReelBot) -> None:
    await bot.add_cog(Quota(bot))
